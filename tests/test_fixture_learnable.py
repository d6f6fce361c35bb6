"""The learnable fixture: reports state exactly the findings drawn into the pixels, and the pixels carry them."""

from __future__ import annotations

import csv
import gzip
import random

import numpy as np
import pytest
from PIL import Image

from fixtures import learnable
from tasks.evaluate.labeler import label_report
from tasks.reports.sections import parse_report


def test_labeler_reads_back_exactly_the_drawn_findings():
    rng = random.Random(3)
    for _ in range(300):
        study = learnable.draw_study(rng)
        text, findings = learnable.report_text(study, rng)
        parsed = parse_report(text)
        assert parsed.sections["findings"] == findings
        got = label_report(findings)
        assert {n: got[n] for n in learnable.LEARNABLE_LABELS} == study.labels, findings
        assert got["No Finding"] == study.chexpert()["No Finding"]


def _downsampled(study: learnable.LearnableStudy, seed: int) -> np.ndarray:
    pic = learnable.picture(study, 256, 208, np.random.default_rng(seed))
    side = 208
    top = (256 - side) // 2
    im = Image.fromarray(np.rint(pic[top : top + side] * 255).astype(np.uint8)).resize(
        (32, 32), Image.BICUBIC
    )
    return np.asarray(im, dtype=np.float64).ravel() / 255


def test_each_finding_is_visible_at_32_pixels():
    """A linear read-out of 32x32 pixels predicts every label of held-out pictures; the same read-out fit on
    shuffled pairs does not (so the structure, not the prevalence, carries the labels)."""
    rng = random.Random(0)
    studies = [learnable.draw_study(rng) for _ in range(240)]
    x = np.stack([_downsampled(s, i) for i, s in enumerate(studies)])
    x = np.hstack([x, np.ones((len(x), 1))])
    train, test = slice(0, 180), slice(180, None)
    for name in learnable.LEARNABLE_LABELS:
        y = np.array([s.labels[name] for s in studies], dtype=np.float64)
        aligned = 0.0  # the aligned fit's accuracy (the loop's first pass)
        for shuffled in (False, True):
            target = np.random.default_rng(1).permutation(y[train]) if shuffled else y[train]
            w = np.linalg.solve(x[train].T @ x[train] + 1.0 * np.eye(x.shape[1]), x[train].T @ target)
            acc = float(((x[test] @ w > 0.5) == (y[test] > 0.5)).mean())
            majority = max(y[test].mean(), 1 - y[test].mean())  # what naming the common class scores
            if shuffled:  # near the majority rate (60 test pictures: a few lucky guesses), below the real fit
                assert acc <= majority + 0.1 and acc <= aligned - 0.05, (name, acc, majority, aligned)
            else:
                aligned = acc
                assert acc >= 0.9 and acc >= majority + 0.1, (name, acc, majority)


def _read_gz_csv(path) -> list[dict]:
    with gzip.open(path, "rt") as f:
        return list(csv.DictReader(f))


def test_mimic_learnable_layout_labels_match_reports(tmp_path):
    from fixtures.mimic_cxr import write_mimic_cxr

    truth = write_mimic_cxr(tmp_path, studies=12, seed=1, jpg=True, defects=False, learnable=True)
    rows = {r["study_id"]: r for r in _read_gz_csv(tmp_path / "mimic-cxr-2.0.0-chexpert.csv.gz")}
    assert rows
    for study_id, report in truth.reports.items():
        txt = next(tmp_path.glob(f"files/p*/p*/s{study_id}.txt")).read_text()
        findings = parse_report(txt).sections["findings"]
        labels = label_report(findings)
        for name in learnable.LEARNABLE_LABELS:
            assert labels[name] == report.study.labels[name]
            if study_id in rows:
                assert rows[study_id][name] == f"{float(report.study.labels[name]):.1f}"
        for jpg in next(tmp_path.glob(f"files/p*/p*/s{study_id}")).glob("*.jpg"):
            with Image.open(jpg) as im:
                assert im.size == (208, 256)


def test_learnable_labels_are_independent_of_patient_and_split(tmp_path):
    """Labels come from their own random stream, study after study, whatever patient or split the study
    belongs to: a text-only model reading the indication or the patient cannot know them."""
    from fixtures.mimic_cxr import write_mimic_cxr

    truth = write_mimic_cxr(tmp_path, studies=24, seed=2, jpg=True, defects=False, learnable=True)
    stream = random.Random(2 + 7919)
    expected = []
    for _ in range(24):
        study = learnable.draw_study(stream)
        learnable.report_text(study, stream)
        expected.append(study.labels)
    assert [r.study.labels for r in truth.reports.values()] == expected
    splits = {r["study_id"]: r["split"] for r in _read_gz_csv(tmp_path / "mimic-cxr-2.0.0-split.csv.gz")}
    for split in ("train", "test"):  # positives and negatives in every split
        rate = np.mean(
            [
                truth.reports[k].study.labels[n]
                for k in truth.reports
                if splits[k] == split
                for n in learnable.LEARNABLE_LABELS
            ]
        )
        assert 0.1 < rate < 0.8, (split, rate)


@pytest.mark.parametrize("small", [False])
def test_chexpert_learnable(tmp_path, small):
    from fixtures.chexpert import LABEL_HEADER, write_chexpert

    write_chexpert(tmp_path, patients=6, seed=0, size=64, small=small, quirks=False, learnable=True)
    base = tmp_path / "CheXpert-v1.0"
    with open(base / "train.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows
    for r in rows:
        assert {r[n] for n in learnable.LEARNABLE_LABELS} <= {"1.0", "0.0"}
        assert all(
            r[n] == "" for n in LABEL_HEADER[5:] if n not in learnable.LEARNABLE_LABELS + ("No Finding",)
        )
    with open(tmp_path / "df_chexpert_plus_240401.csv") as f:
        plus = {r["path_to_image"]: r for r in csv.DictReader(f)}
    for r in rows:
        rel = r["Path"].removeprefix("CheXpert-v1.0/")
        text = plus[rel]["section_findings"] or plus[rel]["section_narrative"]
        text = text.split(" IMPRESSION:")[0]
        labels = label_report(text)
        for name in learnable.LEARNABLE_LABELS:
            assert labels[name] == int(float(r[name])), (text, r[name])


def test_cli_writes_the_learnable_fixture(tmp_path):
    from typer.testing import CliRunner

    from cxrflow_cli.main import app

    res = CliRunner().invoke(
        app,
        [
            "fixtures",
            "mimic-cxr",
            "--out",
            str(tmp_path),
            "--learnable",
            "--jpg",
            "--studies",
            "4",
            "--no-defects",
        ],
    )
    assert res.exit_code == 0, res.output
    report = next(tmp_path.glob("files/p*/p*/s*.txt")).read_text()
    findings = parse_report(report).sections["findings"]
    assert {label_report(findings)[n] for n in learnable.LEARNABLE_LABELS} <= {0, 1}
