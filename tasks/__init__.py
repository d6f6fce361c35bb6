"""The work of each stage as plain typed functions; flows/ wraps them as Prefect tasks."""

__version__ = "0.1.0"
