"""Outcome tables, their loaders, the price catalog and splits."""

from llmtriage.data.errors import DataError
from llmtriage.data.loaders import load_table
from llmtriage.data.prices import PriceCatalog
from llmtriage.data.table import OutcomeTable

__all__ = ["DataError", "OutcomeTable", "PriceCatalog", "load_table"]
