"""Prefect flows: parameters, subflows and artifacts only; the work lives in tasks/ and training/."""

from tasks import env as _env  # noqa: F401  (first: the environment Prefect reads when it is imported)
