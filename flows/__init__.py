"""Prefect flows: parameters, subflows and artifacts only; the work lives in tasks/ and training/."""
