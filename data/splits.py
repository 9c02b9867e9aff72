"""Deterministic train/val/test splits grouped by task and balanced by module.

All pairs that share a group value (the task, by default) land in the same split, so the test split
measures how a reward model does on tasks it never saw. Groups are dealt greedily, largest first
after a seeded shuffle, each to the split whose per-module quota is furthest from met, weighted by
the modules the group holds; that keeps every module near its target fraction in every split.
"""

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from data.errors import ConfigError, UserError
from data.load import load_pairs
from data.text_table import aligned_table

SPLITS = ("train", "val", "test")


def split_pairs(
    pairs: pl.DataFrame,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    group_by: str = "task",
) -> dict[str, pl.DataFrame]:
    """Split `pairs` into {"train", "val", "test"}; same input and seed, same split (whatever the
    row order). A split with fraction 0 comes back empty."""
    if group_by not in pairs.columns:
        raise ConfigError(f"cannot group splits by {group_by!r}: the pairs have no such column (columns: {', '.join(pairs.columns)})")
    fractions = np.array([1.0 - val_fraction - test_fraction, val_fraction, test_fraction])
    counts = (
        pairs.group_by(group_by)
        .agg(pl.col("target_module"))
        .sort(group_by)
        .with_columns(size=pl.col("target_module").list.len())
    )
    modules = sorted(pairs["target_module"].unique().to_list())
    per_group = np.array(
        [[row.count(m) for m in modules] for row in counts["target_module"].to_list()], dtype=np.float64
    ).reshape(len(counts), len(modules))

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(counts))
    order = order[np.argsort(-per_group.sum(axis=1)[order], kind="stable")]

    target = fractions[:, None] * per_group.sum(axis=0)[None, :]
    taken = np.zeros_like(target)
    assignment = np.empty(len(counts), dtype=np.int64)
    open_splits = fractions > 0
    for g in order:
        relative_need = (target - taken) / np.maximum(target, 1e-9)
        score = (relative_need * per_group[g]).sum(axis=1)
        score[~open_splits] = -np.inf
        s = int(np.argmax(score))
        assignment[g] = s
        taken[s] += per_group[g]

    groups = counts.select(group_by, split=pl.Series(assignment))
    labelled = pairs.join(groups, on=group_by, how="left", maintain_order="left")
    return {name: labelled.filter(pl.col("split") == i).drop("split") for i, name in enumerate(SPLITS)}


def carve_validation(
    pairs: pl.DataFrame, val_fraction: float = 0.1, seed: int = 0, group_by: str = "task"
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(train, val) for stage verbs given no `--val`: the same grouped split, without a test part."""
    parts = split_pairs(pairs, val_fraction=val_fraction, test_fraction=0.0, seed=seed, group_by=group_by)
    return parts["train"], parts["val"]


def load_training_and_validation(
    files: Sequence[Path], val_file: Path | None, modules: Sequence[str], val_fraction: float = 0.1, seed: int = 0, group_by: str = "task"
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The pairs of `files` and of `val_file`, or, without one, `files` split by task into training
    and validation pairs (`carve_validation`); a `UserError` unless both have pairs."""
    train = load_pairs(files, modules)
    if val_file is not None:
        val = load_pairs(val_file, modules)
    else:
        train, val = carve_validation(train, val_fraction, seed, group_by)
    if val.height == 0 or train.height == 0:
        raise UserError(
            f"{train.height} training and {val.height} validation pairs: both are needed "
            "(give --val, or pairs from more tasks so that a validation set can be carved by task)"
        )
    return train, val


def module_pairs(train: pl.DataFrame, val: pl.DataFrame, modules: Sequence[str]) -> dict[str, dict[str, int]]:
    """{module: {"train": n, "val": n}}: how many training and validation pairs each module has (0
    for a module with none). Checkpoints record it, so that a head that saw no pairs is never
    served as if it were trained."""
    count = lambda table: Counter(table["target_module"].to_list())  # noqa: E731
    trained, validated = count(train), count(val)
    return {m: {"train": trained.get(m, 0), "val": validated.get(m, 0)} for m in modules}


def split_summary(parts: dict[str, pl.DataFrame], modules: Sequence[str], group_by: str = "task") -> dict:
    """Per split: pairs, groups (tasks) and pairs per module; their totals; and how many groups
    more than one split holds (0 unless the split went wrong)."""
    splits = {
        name: {
            "pairs": frame.height,
            "groups": frame[group_by].n_unique(),
            "pairs_per_module": {m: int((frame["target_module"] == m).sum()) for m in modules},
        }
        for name, frame in parts.items()
    }
    seen_in = Counter(group for frame in parts.values() for group in frame[group_by].unique().to_list())
    return {
        "group_by": group_by,
        "splits": splits,
        "total": {
            "pairs": sum(s["pairs"] for s in splits.values()),
            "groups": len(seen_in),
            "pairs_per_module": {m: sum(s["pairs_per_module"][m] for s in splits.values()) for m in modules},
        },
        "groups_in_several_splits": sum(count > 1 for count in seen_in.values()),
    }


def format_split_summary(summary: dict) -> str:
    """What `pipeline split` prints: one aligned row per split and a total, then the grouping check."""
    group_by = summary["group_by"]
    group, groups = ("task", "tasks") if group_by == "task" else (f"{group_by} value", f"{group_by} values")
    modules = list(summary["total"]["pairs_per_module"])
    rows = [
        [name, part["pairs"], part["groups"], *part["pairs_per_module"].values()]
        for name, part in [*summary["splits"].items(), ("total", summary["total"])]
    ]
    lines = [aligned_table(["split", "pairs", groups, *modules], rows)]
    shared = summary["groups_in_several_splits"]
    if shared:
        lines.append(f"{groups} in more than one split: {shared}; the splits do not keep {groups} apart")
    else:
        lines.append(f"no {group} is in two splits: val and test hold only {groups} that train does not")
    return "\n".join(lines)
