"""Task-grouped, module-balanced, deterministic splits."""

import polars as pl
import pytest

from data import ConfigError, pairs_from_records
from data.splits import carve_validation, format_split_summary, split_pairs, split_summary
from data.synth import generate_pairs


@pytest.fixture(scope="module")
def pairs() -> pl.DataFrame:
    return pairs_from_records(generate_pairs(2000, seed=3))


def test_no_task_lands_in_two_splits(pairs):
    parts = split_pairs(pairs, 0.1, 0.1, seed=0)
    tasks = [set(parts[name]["task"]) for name in ("train", "val", "test")]
    assert not (tasks[0] & tasks[1]) and not (tasks[0] & tasks[2]) and not (tasks[1] & tasks[2])
    assert sum(part.height for part in parts.values()) == pairs.height
    assert set(pl.concat(parts.values())["pair_id"]) == set(pairs["pair_id"])


def test_every_module_keeps_its_fraction_in_every_split(pairs):
    parts = split_pairs(pairs, 0.15, 0.1, seed=0)
    totals = dict(pairs.group_by("target_module").len().iter_rows())
    for name, fraction in (("train", 0.75), ("val", 0.15), ("test", 0.1)):
        counts = dict(parts[name].group_by("target_module").len().iter_rows())
        for module, total in totals.items():
            assert counts[module] / total == pytest.approx(fraction, abs=0.02), (name, module)


def test_split_is_deterministic_whatever_the_row_order(pairs):
    first = split_pairs(pairs, seed=7)
    shuffled = split_pairs(pairs.sample(fraction=1.0, shuffle=True, seed=1), seed=7)
    other_seed = split_pairs(pairs, seed=8)
    for name in ("train", "val", "test"):
        assert set(first[name]["pair_id"]) == set(shuffled[name]["pair_id"])
    assert set(first["test"]["pair_id"]) != set(other_seed["test"]["pair_id"])


def test_split_can_group_by_another_column(pairs):
    parts = split_pairs(pairs, seed=0, group_by="task_family")
    assert not set(parts["train"]["task_family"]) & set(parts["test"]["task_family"])
    with pytest.raises(ConfigError, match="no such column"):
        split_pairs(pairs, group_by="customer")


def test_small_data_still_gets_a_val_and_test_task(pairs):
    few = pairs.filter(pl.col("task").is_in(pairs["task"].unique(maintain_order=True)[:3].to_list()))
    parts = split_pairs(few, seed=0)
    assert all(parts[name]["task"].n_unique() == 1 for name in ("train", "val", "test"))


def test_carve_validation_is_the_same_grouped_split_without_test(pairs):
    train, val = carve_validation(pairs, val_fraction=0.2, seed=0)
    assert train.height + val.height == pairs.height
    assert not set(train["task"]) & set(val["task"])
    assert val.height / pairs.height == pytest.approx(0.2, abs=0.02)


def test_split_summary_counts_groups_that_more_than_one_split_holds(pairs):
    modules = ["reflection", "planner", "executor", "memory"]
    parts = split_pairs(pairs, 0.1, 0.1, seed=0)
    summary = split_summary(parts, modules)
    assert summary["groups_in_several_splits"] == 0 and summary["total"]["groups"] == pairs["task"].n_unique()
    assert summary["total"]["pairs_per_module"] == {m: 500 for m in modules}
    leaked = dict(parts, test=pl.concat([parts["test"], parts["train"].head(1)]))  # one training task also in test
    text = format_split_summary(split_summary(leaked, modules))
    assert text.splitlines()[-1] == "tasks in more than one split: 1; the splits do not keep tasks apart"
