"""Pair data: the schema, loading and validation, synthetic pairs, and task-grouped splits.

    from data import load_pairs
    pairs = load_pairs(["pairs.json"])          # polars DataFrame, one row per pair; raises DataError
"""

from data.errors import ConfigError, UserError
from data.load import DataError, Problem, load_pairs, pairs_from_records, write_pairs
from data.schema import DEFAULT_MODULES

__all__ = ["DEFAULT_MODULES", "ConfigError", "DataError", "Problem", "UserError", "load_pairs", "pairs_from_records", "write_pairs"]
