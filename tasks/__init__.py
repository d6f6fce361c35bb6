"""The work of each stage as plain typed functions; flows/ wraps them as Prefect tasks."""

from tasks import env as _env  # noqa: F401  (the environment bootstrap, before any library reads it)

__version__ = "0.1.0"
