"""What `pipeline validate` prints about a valid pair table."""

from collections.abc import Sequence

import polars as pl

from data.schema import SIDES

PERCENTILES = (50, 90, 99)


def summarize_pairs(pairs: pl.DataFrame, modules: Sequence[str]) -> dict:
    """Pairs per module, distinct tasks, text-length percentiles (characters) and text reuse."""
    per_module = dict(pairs.group_by("target_module").len().iter_rows())
    lengths = {}
    for kind in ("context", "module_text"):
        chars = pl.concat([pairs[f"{side}_{kind}"] for side in SIDES]).str.len_chars()
        lengths[kind] = {f"p{q}": int(chars.quantile(q / 100, "nearest")) for q in PERCENTILES} | {"max": int(chars.max())}
    texts = pl.concat([pairs[f"{side}_{kind}"] for side in SIDES for kind in ("context", "module_text")])
    uses = texts.value_counts()
    return {
        "pairs": pairs.height,
        "pairs_per_module": {m: per_module.get(m, 0) for m in modules},
        "tasks": pairs["task"].n_unique(),
        "text_chars": lengths,
        "texts_referenced": texts.len(),
        "unique_texts": uses.height,
        "texts_used_more_than_once": int((uses["count"] > 1).sum()),
    }


def format_summary(summary: dict) -> str:
    lines = [f"{summary['pairs']} pairs over {summary['tasks']} distinct tasks"]
    lines.append("pairs per module: " + ", ".join(f"{m} {n}" for m, n in summary["pairs_per_module"].items()))
    for kind, stats in summary["text_chars"].items():
        lines.append(f"{kind} length (chars): " + ", ".join(f"{k} {v}" for k, v in stats.items()))
    lines.append(
        f"texts: {summary['texts_referenced']} referenced, {summary['unique_texts']} unique, "
        f"{summary['texts_used_more_than_once']} used by more than one pair or side"
    )
    return "\n".join(lines)
