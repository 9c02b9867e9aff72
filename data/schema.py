"""The pair format, as written by users, and the flat table every stage reads.

A pair file holds records like this (a JSON array, JSON Lines, or Parquet with the same nesting):

    {"pair_id": "p-1", "target_module": "planner", "task": "...",
     "positive": {"trajectory_full_context": "...", "module_k_all_rounds": "...", "outcome": 1},
     "negative": {"trajectory_full_context": "...", "module_k_all_rounds": "...", "outcome": 0}}

Loading flattens each record into one table row with the columns of `PAIR_COLUMNS`; fields the
format does not name are kept, the ones inside `positive`/`negative` as `positive_<field>` and
`negative_<field>`.
"""

import pyarrow as pa

DEFAULT_MODULES = ("reflection", "planner", "executor", "memory")
SIDES = ("positive", "negative")
EXPECTED_OUTCOME = {"positive": 1, "negative": 0}

# Field names inside `positive` / `negative` in the user's format, and their flat column suffix.
CONTEXT_FIELD = "trajectory_full_context"
MODULE_TEXT_FIELD = "module_k_all_rounds"
OUTCOME_FIELD = "outcome"
SIDE_FIELDS = {CONTEXT_FIELD: "context", MODULE_TEXT_FIELD: "module_text", OUTCOME_FIELD: "outcome"}
TOP_FIELDS = ("pair_id", "target_module", "task")

SIDE_TYPE = pa.struct([(CONTEXT_FIELD, pa.string()), (MODULE_TEXT_FIELD, pa.string()), (OUTCOME_FIELD, pa.int64())])
RECORD_TYPE = pa.struct(
    [("pair_id", pa.string()), ("target_module", pa.string()), ("task", pa.string())]
    + [(side, SIDE_TYPE) for side in SIDES]
)

# The flat table: one row per pair.
PAIR_COLUMNS = ("pair_id", "target_module", "task") + tuple(
    f"{side}_{suffix}" for side in SIDES for suffix in SIDE_FIELDS.values()
)
TEXT_COLUMNS = tuple(f"{side}_{suffix}" for side in SIDES for suffix in ("context", "module_text"))
# The cache key of each text column (`features.pairs.with_text_keys` adds them once per run); a
# loaded table never has them, and pairs are written without them.
TEXT_KEY_COLUMNS = tuple(f"{column}_key" for column in TEXT_COLUMNS)


def flat_column(side: str, field: str) -> str:
    """`positive`, `module_k_all_rounds` -> `positive_module_text` (extra fields keep their name)."""
    return f"{side}_{SIDE_FIELDS.get(field, field)}"


def field_path(column: str) -> str:
    """The user's name for a flat column: `positive_module_text` -> `positive.module_k_all_rounds`."""
    for side in SIDES:
        if column.startswith(side + "_"):
            suffix = column[len(side) + 1 :]
            original = {v: k for k, v in SIDE_FIELDS.items()}.get(suffix, suffix)
            return f"{side}.{original}"
    return column
