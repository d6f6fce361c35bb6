"""Helpers for the validate/shard tests: tiny manifests from fixtures/shard_manifest.py."""

from fixtures.shard_manifest import FINDINGS, default_rows, jpeg_bytes, manifest_row, write_dataset

__all__ = ["FINDINGS", "default_rows", "jpeg_bytes", "manifest_row", "write_dataset"]
