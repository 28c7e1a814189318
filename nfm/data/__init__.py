"""Data layer: sources -> :class:`Session` -> trial records -> Arrow ``DatasetDict`` -> batches."""
from .schema import DataError, Session

__all__ = ["DataError", "Session"]
