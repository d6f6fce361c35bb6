"""DICOMweb source throughput against a real Orthanc on loopback: `python -m bench.bench_dicomweb [--repeat N]`.

Uploads the hospital-archive fixture (`--repeat` copies, `--size` px films, some JPEG 2000) to a fresh
Orthanc, then times in one process:
  cold  - run_ingest from DICOMweb with an empty output dir: QIDO search, WADO-RS retrieve of every
          instance, PHI strip + cache write, report scrub, decode/preprocess/encode, manifest;
  warm  - the same again with the cache in place (metadata-only requests, decode skipped by the engine's
          content-addressed outputs);
  local - the reference: run_ingest of the same films as a local CANDID-PTX-style folder (no network,
          no PHI work), at the same size.
Prints kept images/s (both decode the same films) and the ratio to the local reference. Needs the `orthanc` and `orthanc-dicomweb` packages.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import tempfile
import time
from pathlib import Path

import pydicom


def _local_copy(files: list[Path], dest: Path, reports: Path) -> None:
    """The films the DICOMweb run keeps, as a CANDID-PTX layout (flat UID-named folder + report CSV): the
    local reference decodes exactly the same films, without network or PHI work."""
    from fixtures.hospital_archive import DATE_RANGE

    with open(reports, newline="") as fh:
        reported = {r["AccessionNumber"] for r in csv.DictReader(fh)}
    dest.mkdir(parents=True)
    rows = []
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        keep = (
            ds.Modality in ("DX", "CR") and ds.BodyPartExamined == "CHEST" and ds.get("ViewPosition") in ("PA", "AP")
            and DATE_RANGE[0] <= ds.StudyDate <= DATE_RANGE[1] and ds.AccessionNumber in reported
        )  # fmt: skip
        if not keep:
            continue
        shutil.copy(f, dest / f"{ds.SOPInstanceUID}.dcm")
        rows.append(
            {"SOPInstanceUID": ds.SOPInstanceUID, "EncodedPixels": "-1", "Report": "Lungs are clear."}
        )
    with open(dest / "Pneumothorax_reports.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["SOPInstanceUID", "EncodedPixels", "Report"])
        w.writeheader()
        w.writerows(rows)


def _timed(cfg) -> tuple[float, dict]:
    from tasks.ingest import run_ingest

    t0 = time.perf_counter()
    summary = run_ingest(cfg)
    return time.perf_counter() - t0, summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=8, help="copies of the 6-study archive (7 films each)")
    ap.add_argument("--size", type=int, default=512)
    args = ap.parse_args()
    from fixtures.hospital_archive import write_descriptor, write_hospital_archive
    from fixtures.orthanc_server import OrthancServer
    from schemas.config import ImageConfig, IngestConfig

    image = ImageConfig(size=min(args.size, 518))
    with tempfile.TemporaryDirectory(prefix="bench-dicomweb-") as tmp:
        tmp = Path(tmp)
        info = write_hospital_archive(tmp / "hospital", seed=0, repeat=args.repeat, size=args.size)
        files = info["expect"]["files"]
        _local_copy(files, tmp / "local", tmp / "hospital" / "reports.csv")
        with OrthancServer(tmp / "orthanc") as server:
            t0 = time.perf_counter()
            server.upload(files)
            upload_s = time.perf_counter() - t0
            write_descriptor(tmp / "hospital", server.dicomweb_url)
            os.environ.setdefault("CXRFLOW_PHI_SALT", "bench-salt-0123456789")  # never an option (a parameter)
            opts: dict = {}
            web = IngestConfig(source="dicomweb", root=tmp / "hospital", out=tmp / "out-web", workers=1,
                               image=image, options=opts)  # fmt: skip
            local = IngestConfig(source="candid-ptx", root=tmp / "local", out=tmp / "out-local", workers=1,
                                 image=image, frontal_only=False)  # fmt: skip
            _timed(local)  # warm-up: imports and first-call setup are not part of any row
            shutil.rmtree(local.out)
            ref_s, ref = _timed(local)
            cold_s, cold = _timed(web)
            warm_s, warm = _timed(web)
    rows = [("local DICOM folder (reference)", ref_s, ref), ("DICOMweb cold", cold_s, cold),
            ("DICOMweb warm (cache)", warm_s, warm)]  # fmt: skip
    ref_rate = ref["kept"] / ref_s
    print(
        f"\n{len(files)} films uploaded in {upload_s:.2f}s; {args.size} px wide, output {image.size} px, 1 worker\n"
    )
    print("| run | found | kept | s | kept images/s | x local |")
    print("|---|---|---|---|---|---|")
    for label, s, summ in rows:
        rate = summ["kept"] / s
        print(
            f"| {label} | {summ['found']} | {summ['kept']} | {s:.2f} | {rate:.1f} | {rate / ref_rate:.2f} |"
        )


if __name__ == "__main__":
    main()
