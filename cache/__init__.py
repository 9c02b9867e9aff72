"""The Parquet embedding cache, queried through DuckDB (lands with issue #4)."""
