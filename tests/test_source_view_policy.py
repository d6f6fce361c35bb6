"""frontal_only means one thing for every source: the engine applies it, adapters only report `view`.

Under frontal_only only a stated frontal view (AP, PA, FRONTAL) is kept; an unknown view is filtered like a
lateral, with the same reason text (the paper's AP/PA selection: docs/datasets.md). notes["view_unknown"]
counts the films found without a view; found = kept + filtered + quarantined either way."""

from __future__ import annotations

import pytest
from sources_support import config

from fixtures.brax import write_brax
from fixtures.candid_ptx import write_candid_ptx
from fixtures.chestxray14 import write_chestxray14
from fixtures.chexpert import write_chexpert
from fixtures.mimic_cxr import write_mimic_cxr
from fixtures.openi import write_openi
from fixtures.padchest import write_padchest
from fixtures.vindr_cxr import write_vindr_cxr
from tasks import ingest
from tasks.sources import adapters
from tasks.sources.base import Candidate, Discovery, Drop

WRITERS = {
    "brax": write_brax,
    "candid-ptx": write_candid_ptx,
    "chestxray14": write_chestxray14,
    "chexpert": write_chexpert,
    "mimic-cxr": write_mimic_cxr,
    "openi": write_openi,
    "padchest": write_padchest,
    "vindr-cxr": write_vindr_cxr,
}


def test_every_file_source_has_a_fixture_here():
    assert set(adapters()) - set(WRITERS) <= {"dicomweb", "chexpert-plus"}  # a server / an alias of chexpert


class _Planted:
    """A source whose release gives one film with no view, one lateral, one PA and one frontal without AP/PA
    (and one defect)."""

    def __init__(self, name: str, root):
        self.name, self.root = name, root

    def check(self, root, options=None) -> None:
        pass

    def discover(self, cfg) -> Discovery:
        def cand(i: str, view: str | None) -> Candidate:
            return Candidate(self.name, self.root / f"{i}.png", f"{i}.png", i, "s1", "st1", "train", "png", view=view)

        broken = Drop(self.name, "bad.png", "discover", "image file is empty (0 bytes)", None)
        films = [cand("u", None), cand("l", "LATERAL"), cand("p", "PA"), cand("f", "FRONTAL")]
        return Discovery(films, quarantined=[broken])


@pytest.mark.parametrize("name", sorted(adapters()))
@pytest.mark.parametrize("frontal_only", [True, False])
def test_unknown_view_treated_identically_by_every_source(name, frontal_only, tmp_path, monkeypatch):
    monkeypatch.setattr(ingest, "get_adapter", lambda _: _Planted(name, tmp_path))
    d = ingest.discover(config(name, tmp_path, tmp_path / "out", frontal_only=frontal_only))
    assert d.found == 5 and len(d.quarantined) == 1
    assert d.notes["view_unknown"] == 1  # counted whether filtered or kept
    assert sorted(c.image_id for c in d.candidates) == (["f", "p"] if frontal_only else ["f", "l", "p", "u"])
    expected = ["not frontal: view unknown (frontal_only)", "not frontal: view LATERAL (frontal_only)"]
    assert [f.reason for f in d.filtered] == (expected if frontal_only else [])


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_adapters_leave_the_view_policy_to_the_engine(name, tmp_path):
    """The real adapters on their fixtures: frontal_only does not change what an adapter emits."""
    WRITERS[name](tmp_path / "root")
    raw = {}
    for frontal_only in (True, False):
        d = adapters()[name].discover(config(name, tmp_path / "root", tmp_path / "out", frontal_only=frontal_only))
        raw[frontal_only] = ([c.image_key for c in d.candidates], len(d.filtered), len(d.quarantined))
    assert raw[True] == raw[False]
    engine = ingest.discover(config(name, tmp_path / "root", tmp_path / "out"))
    assert engine.found == sum(len(x) if isinstance(x, list) else x for x in raw[True])
    assert all(c.view in ("AP", "PA", "FRONTAL") for c in engine.candidates)  # no unknown view kept
    unknown = [f for f in engine.filtered if f.reason == "not frontal: view unknown (frontal_only)"]
    assert engine.notes["view_unknown"] == len(unknown)
    not_frontal = [f.reason for f in engine.filtered if f.reason.startswith("not frontal")]
    assert all(r.startswith("not frontal: view ") and r.endswith(" (frontal_only)") for r in not_frontal)


def test_a_source_filtered_whole_for_unknown_views_says_what_to_pass(tmp_path):
    """Open-I's XML form states no view: frontal_only keeps nothing, and the summary says why and what to pass."""
    write_openi(tmp_path / "root")
    d = ingest.discover(config("openi", tmp_path / "root", tmp_path / "out"))
    assert not d.candidates and "--all-views" in d.notes["hint"] and "frontal_only: false" in d.notes["hint"]
    assert "hint" not in ingest.discover(config("openi", tmp_path / "root", tmp_path / "o2", frontal_only=False)).notes


def test_no_hint_while_a_stated_frontal_view_is_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest, "get_adapter", lambda _: _Planted("openi", tmp_path))
    assert "hint" not in ingest.discover(config("openi", tmp_path, tmp_path / "out")).notes


def test_ingest_command_prints_the_hint(tmp_path):
    from typer.testing import CliRunner

    from cxrflow_cli.main import app

    write_openi(tmp_path / "root")
    res = CliRunner().invoke(app, ["ingest", "--source", "openi", "--root", str(tmp_path / "root"), "--out",
                                   str(tmp_path / "out"), "--size", "32", "--workers", "1", "--no-prefect"])
    assert res.exit_code == 0, res.output
    assert "note: openi:" in res.stderr and "--all-views" in res.stderr
