"""CheXpert-Plus: CheXpert images and labels joined with the report CSV (see tasks/sources/chexpert.py)."""

from tasks.sources.chexpert import PLUS_ADAPTER as ADAPTER

__all__ = ["ADAPTER"]
