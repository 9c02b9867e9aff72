"""bench/real_quality.py's InterCode training pairs: mined again at more pairs per task, only of the
training split's tasks, so that validation and test stay the pairs of the split."""

import json
from pathlib import Path

import polars as pl

from bench_script import load_bench
from data import load_pairs


def write_runs(path: Path, tasks: int = 12) -> None:
    """Per task 3 succeeded and 3 failed runs with distinct commands: 9 executor pairs to mine."""
    runs = [
        {"run_id": f"t{t}-r{r}", "task": f"task {t}: count the files in dir{t}", "task_id": f"t{t}", "outcome": r % 2,
         "rounds": [{"action": f"ls -{'al'[r % 2]} dir{t} | wc -l # try {r}", "observation": f"{r + t} files"}]}
        for t in range(tasks) for r in range(6)
    ]  # fmt: skip
    path.write_text("".join(json.dumps(run) + "\n" for run in runs), encoding="utf-8")


def test_more_training_pairs_come_from_the_training_tasks_only(tmp_path):
    bench = load_bench("real_quality")
    write_runs(tmp_path / "runs.jsonl")
    config = bench.write_config(tmp_path / "config.yaml", {})
    bench.pipeline("pairs", tmp_path / "runs.jsonl", "--out", tmp_path / "pairs.json", "--max-pairs-per-task", bench.SPLIT_PAIRS_PER_TASK, "--config", config)
    splits = tmp_path / "splits"
    bench.pipeline("split", tmp_path / "pairs.json", "--out", splits, "--val-fraction", 0.2, "--test-fraction", 0.2, "--seed", 0, "--config", config)
    train = splits / "train.jsonl"
    assert bench.more_training_pairs(tmp_path, train, bench.SPLIT_PAIRS_PER_TASK, config) == train

    more = bench.more_training_pairs(tmp_path, train, 8, config)
    before, after = load_pairs(train), load_pairs(more)
    held_out = pl.concat([load_pairs(splits / "val.jsonl"), load_pairs(splits / "test.jsonl")])
    assert set(after["task"]) == set(before["task"])  # the same training tasks ...
    assert not set(after["task"]) & set(held_out["task"])  # ... none of validation's or test's
    assert set(before["pair_id"]) <= set(after["pair_id"])
    assert after.height == 8 * before["task"].n_unique() > before.height
    assert bench.more_training_pairs(tmp_path, train, 8, config) == more  # a rerun reuses the file
