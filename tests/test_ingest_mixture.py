"""A mixture of every file-based source on its fixtures: one manifest, per-source reconciliation, early errors."""

from __future__ import annotations

import polars as pl
import pyarrow.parquet as pq
import pytest

from fixtures.brax import write_brax
from fixtures.candid_ptx import write_candid_ptx
from fixtures.chestxray14 import write_chestxray14
from fixtures.chexpert import write_chexpert
from fixtures.mimic_cxr import write_mimic_cxr
from fixtures.openi import write_openi
from fixtures.padchest import write_padchest
from fixtures.vindr_cxr import write_vindr_cxr
from schemas.config import ImageConfig, MixtureConfig, SourceSpec
from schemas.manifest import MANIFEST_SCHEMA
from tasks.mixture import check_sources, run_mixture
from tasks.sources import SourceLayoutError

WRITERS = {
    "mimic-cxr": lambda root: write_mimic_cxr(root, studies=4, seed=1),
    "chexpert": lambda root: write_chexpert(root, patients=3, seed=1, plus=False),
    "chexpert-plus": lambda root: write_chexpert(root, patients=3, seed=2, plus=True),
    "padchest": lambda root: write_padchest(root, images=8, seed=1),
    "chestxray14": lambda root: write_chestxray14(root, images=8, seed=1),
    "openi": lambda root: write_openi(root, reports=4, seed=1),
    "brax": lambda root: write_brax(root, patients=3, seed=1, defects=True),
    "vindr-cxr": lambda root: write_vindr_cxr(root, train=3, test=2, seed=1, defects=True),
    "candid-ptx": lambda root: write_candid_ptx(root, images=4, seed=1, defects=True),
}
NO_VIEW = {"openi"}  # Open-I's XML form states no view: under frontal_only it would keep nothing (docs/datasets.md)


@pytest.mark.slow
def test_every_file_source_into_one_manifest_reconciles_per_source(tmp_path):
    specs = []
    for name, write in WRITERS.items():
        write(tmp_path / name)
        policy = "synthesize" if name == "chexpert-plus" else "auto"
        specs.append(SourceSpec(name=name, root=tmp_path / name, report_policy=policy,
                                frontal_only=False if name in NO_VIEW else None))
    cfg = MixtureConfig(sources=specs, out=tmp_path / "out", image=ImageConfig(size=32), workers=1)
    summary = run_mixture(cfg)
    assert set(summary["per_source"]) == set(WRITERS)
    for name, s in summary["per_source"].items():
        assert s["found"] == s["kept"] + s["filtered"] + s["quarantined"], name
        assert s["kept"] > 0, name
    assert summary["found"] == sum(s["found"] for s in summary["per_source"].values())
    assert summary["quarantined"] > 0  # the fixtures plant defects
    table = pq.read_table(tmp_path / "out" / "manifest.parquet")
    assert table.schema.equals(MANIFEST_SCHEMA)
    df = pl.from_arrow(table)
    assert set(df["source"]) == set(WRITERS)
    assert all((tmp_path / "out" / p).exists() for p in df["image_path"])
    plus = df.filter(pl.col("source") == "chexpert-plus")
    assert (plus["report_origin"] == "labels").all()  # report policy applied, text kept for audit


def test_caps_bound_each_source_and_count_the_rest_as_filtered(tmp_path):
    write_mimic_cxr(tmp_path / "m", studies=6, seed=2, defects=False)
    cfg = MixtureConfig(sources=[SourceSpec(name="mimic-cxr", root=tmp_path / "m", cap=2)], out=tmp_path / "o",
                        image=ImageConfig(size=32), workers=1)
    s = run_mixture(cfg)["per_source"]["mimic-cxr"]
    assert s["kept"] == 2 and s["filtered_by_reason"]["over the source cap"] > 0
    assert s["found"] == s["kept"] + s["filtered"] + s["quarantined"]


def test_a_malformed_source_stops_the_mixture_before_any_work(tmp_path):
    write_mimic_cxr(tmp_path / "m", studies=2, seed=2, defects=False)
    write_padchest(tmp_path / "p", images=4, seed=1)
    (tmp_path / "p" / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv").unlink()
    cfg = MixtureConfig(sources=[SourceSpec(name="mimic-cxr", root=tmp_path / "m"),
                                 SourceSpec(name="padchest", root=tmp_path / "p")], out=tmp_path / "o")
    with pytest.raises(SourceLayoutError, match=r"padchest: .*PADCHEST_chest_x_ray_images_labels"):
        run_mixture(cfg)
    assert not (tmp_path / "o").exists()
    with pytest.raises(SourceLayoutError, match="unknown source"):
        check_sources(MixtureConfig(sources=[SourceSpec(name="nope", root=tmp_path)], out=tmp_path / "o"))


def test_cli_mixture_yaml_without_prefect(tmp_path):
    import yaml
    from typer.testing import CliRunner

    from cxrflow_cli.main import app

    write_mimic_cxr(tmp_path / "m", studies=2, seed=3)
    write_openi(tmp_path / "oi", reports=3, seed=3)
    spec = tmp_path / "mix.yaml"
    spec.write_text(yaml.safe_dump({"image": {"size": 32}, "workers": 1,
                                    "sources": [{"name": "mimic-cxr", "root": str(tmp_path / "m")},
                                                {"name": "openi", "root": str(tmp_path / "oi"),
                                                 "frontal_only": False}]}))  # its XML states no view
    res = CliRunner().invoke(app, ["ingest", "--mixture", str(spec), "--out", str(tmp_path / "o"), "--no-prefect"])
    assert res.exit_code == 0, res.output
    assert '"per_source"' in res.output
    assert set(pl.read_parquet(tmp_path / "o" / "manifest.parquet")["source"]) == {"mimic-cxr", "openi"}


@pytest.mark.slow
def test_mixture_flow(tmp_path, prefect_server):
    from flows.ingest import ingest_mixture_flow

    write_mimic_cxr(tmp_path / "m", studies=2, seed=4)
    write_chestxray14(tmp_path / "x", images=6, seed=4)
    summary = ingest_mixture_flow(MixtureConfig(
        sources=[SourceSpec(name="mimic-cxr", root=tmp_path / "m"), SourceSpec(name="chestxray14", root=tmp_path / "x")],
        out=tmp_path / "o", image=ImageConfig(size=32), workers=1))
    assert summary["found"] == summary["kept"] + summary["filtered"] + summary["quarantined"]
    assert set(summary["per_source"]) == {"mimic-cxr", "chestxray14"}


def test_padchest_rows_carry_language_and_source_labels_and_are_synthesized_offline(tmp_path):
    from schemas.config import IngestConfig
    from schemas.llm import LLMConfig, StructureConfig
    from tasks.ingest import run_ingest
    from tasks.reports.structure import run_structure

    write_padchest(tmp_path / "p", images=8, seed=5)
    run_ingest(IngestConfig(source="padchest", root=tmp_path / "p", out=tmp_path / "o", image=ImageConfig(size=32),
                            workers=1))
    manifest = pl.read_parquet(tmp_path / "o" / "manifest.parquet")
    assert (manifest["report_language"] == "es").all()
    assert manifest["source_labels"].list.len().min() >= 1
    assert manifest["findings"].is_null().all()  # the Spanish text is never parsed as English findings
    run_structure(StructureConfig(manifest=tmp_path / "o" / "manifest.parquet", out=tmp_path / "s",
                                  llm=LLMConfig(backend="rules", cache_dir=tmp_path / "cache")))
    reports = pl.read_parquet(tmp_path / "s" / "reports.parquet")
    assert set(reports["operation"]) == {"synthesize"}
    assert (reports["method"] == "synthesized-rules").all()


@pytest.mark.slow
def test_cxrflow_data_with_every_file_source_reconciles_per_source_and_end_to_end(tmp_path, prefect_server):
    import json

    import yaml
    from typer.testing import CliRunner

    from cxrflow_cli.main import app

    for name, write in WRITERS.items():
        write(tmp_path / name)
    spec = tmp_path / "mix.yaml"
    sources = [{"name": n, "root": str(tmp_path / n), **({"frontal_only": False} if n in NO_VIEW else {})}
               for n in WRITERS]
    spec.write_text(yaml.safe_dump({"sources": sources}))
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["data", "--mixture", str(spec), "--out", str(out), "--size", "32",
                                   "--workers", "1", "--max-samples", "8"])
    assert res.exit_code == 0, res.output
    ingest = json.loads((out / "data" / "summary.json").read_text())
    assert set(ingest["per_source"]) == set(WRITERS)
    for name, s in ingest["per_source"].items():
        assert s["found"] == s["kept"] + s["filtered"] + s["quarantined"], name
    rec = json.loads((out / "shards" / "summary.json").read_text())["reconciliation"]
    assert rec["balanced"] and rec["found"] == ingest["found"]
    assert rec["sharded"] > 0


def test_a_source_emptied_for_want_of_a_view_carries_its_hint(tmp_path):
    write_openi(tmp_path / "oi", reports=2, seed=3)
    cfg = MixtureConfig(sources=[SourceSpec(name="openi", root=tmp_path / "oi")], out=tmp_path / "o",
                        image=ImageConfig(size=32), workers=1)
    s = run_mixture(cfg)["per_source"]["openi"]
    assert s["kept"] == 0 and "frontal_only: false" in s["hint"]


def test_the_mixture_precheck_reads_each_sources_options(tmp_path):
    """check(root, options): a DICOMweb source configured by its options is checked before any work."""
    (tmp_path / "dw").mkdir()
    spec = SourceSpec(name="dicomweb", root=tmp_path / "dw", options={"reports": "reports.csv"})
    with pytest.raises(SourceLayoutError, match="dicomweb: DICOMweb: no server url"):
        check_sources(MixtureConfig(sources=[spec], out=tmp_path / "o"))
    from tasks import preflight

    with pytest.raises(SourceLayoutError, match="no server url"):  # the data command's and pipeline's pre-flight
        preflight.check_root("dicomweb", tmp_path / "dw", {"reports": "reports.csv"})


def test_mixture_on_a_two_process_dask_cluster_gives_the_local_pool_outputs(tmp_path):
    """Chunks of two sources on 2 `distributed` worker processes (tasks/dask_runner.py): the same manifest,
    quarantine, filtered list and image bytes as the local process pool, and both workers ran chunks."""
    from distributed import Client, LocalCluster, get_task_stream

    write_mimic_cxr(tmp_path / "m", studies=4, seed=5)  # DICOM, with defects to quarantine
    write_chexpert(tmp_path / "c", patients=3, seed=5, plus=False)
    specs = [SourceSpec(name="mimic-cxr", root=tmp_path / "m"), SourceSpec(name="chexpert", root=tmp_path / "c")]

    def cfg(out: str) -> MixtureConfig:  # batch_size 2: several chunks per source, so both workers get some
        return MixtureConfig(sources=specs, out=tmp_path / out, image=ImageConfig(size=32), workers=2,
                             batch_size=2)

    def outputs(out: str) -> dict[str, bytes]:  # every file but the caches and the summaries (elapsed times)
        files = [p for p in sorted((tmp_path / out).rglob("*")) if p.is_file()]
        return {str(p.relative_to(tmp_path / out)): p.read_bytes() for p in files
                if ".cache" not in p.parts and p.name != "summary.json"}

    local = run_mixture(cfg("pool"))
    with (
        LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
        get_task_stream(client) as stream,
    ):
        on_dask = run_mixture(cfg("dask"), dask_address=cluster.scheduler_address)
    chunk_workers = {t["worker"] for t in stream.data if "process_chunk" in str(t["key"])}
    assert len(chunk_workers) == 2
    for k in ("found", "kept", "filtered", "quarantined", "decoded", "per_source"):
        assert on_dask[k] == local[k], k
    assert local["decoded"] > 4 and local["quarantined"] > 0
    a, b = outputs("pool"), outputs("dask")
    assert a == b and any(k.endswith(".jpg") for k in a)
