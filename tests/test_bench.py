"""bench/scale.py at a tiny size: its synthetic pairs share texts as it says, its namespace holds
exactly their vectors, and a run prints the table with every target."""

import re

import pytest

from bench_script import load_bench
from cache import EmbeddingCache
from data import load_pairs
from features.pairs import unique_texts


def test_synthetic_pairs_share_contexts_and_their_keys_are_the_namespace(tmp_path):
    scale = load_bench("scale")
    pairs = load_pairs(scale.write_jsonl(tmp_path / "pairs.jsonl", 40, 0))
    texts = unique_texts(pairs)
    assert texts.height == 100  # 2 contexts per task of 4 pairs, 2 module texts per pair: 2.5 per pair
    assert (texts["role"] == "context").sum() == 20
    keys = scale.distinct_keys(40)
    assert sorted(keys) == sorted(texts["key"].to_list())
    namespace = scale.write_namespace(tmp_path / "cache", keys, 8)
    assert EmbeddingCache(tmp_path / "cache").select("synthetic-8").id == namespace.id
    assert namespace.fetch(keys[:3]).shape == (3, 8)
    realistic = load_pairs(scale.write_jsonl(tmp_path / "long.jsonl", 4, 1000))
    assert realistic["positive_context"].str.len_chars().min() >= 1000


@pytest.mark.slow
def test_a_tiny_run_prints_every_target(tmp_path, capsys):
    scale = load_bench("scale")
    scale.print_table(scale.run(tmp_path, [200, 400], [16], 200))
    table = capsys.readouterr().out
    for measure in (
        "train-heads peak RSS", "cache -> matrix time vs pq.read_table", "cache reads per run",
        "epoch seconds per pair", "serve request from --cache", "load + validate + key vs pl.read_ndjson",
    ):  # fmt: skip
        assert measure in table
    rows = [line for line in table.splitlines() if re.search(r"\d\.\d\dx +<= |\d\.\d\dx +>= ", line)]
    assert len(rows) == 2 * 3 + 1 + 1 + 2  # per size: RSS, read, reads; then epoch, serve; load per size
    assert all(line.endswith(("met", "MISSED")) for line in rows)
    assert re.search(r"cache reads per run.* 1 +1 +1\.00x", table)  # train and validation in one read


def test_learning_curve_samples_nest_and_intervals_resample_tasks():
    import numpy as np

    curve = load_bench("learning_curve")
    tasks = np.repeat([f"t{i}" for i in range(40)], np.arange(40) % 5 + 1)  # 1 to 5 pairs per task
    pool, val, test = curve.fixed_split(tasks)
    assert (len(test), len(val), len(pool)) == (6, 4, 30) and not ({*pool} & {*val}) | ({*pool} & {*test}) | ({*val} & {*test})
    small, large = curve.sample_tasks(pool, tasks, 10, 0), curve.sample_tasks(pool, tasks, 30, 0)
    assert set(small) <= set(large) and np.isin(tasks, small).sum() >= 10 > np.isin(tasks, small[:-1]).sum()
    assert sorted(curve.sample_tasks(pool, tasks, None, 1)) == sorted(pool)
    correct = (np.arange(len(tasks)) % 2).astype(float)
    low, high = curve.interval(correct, tasks)
    assert low <= correct.mean() <= high and curve.interval(correct, np.zeros(len(tasks))) is None


@pytest.mark.slow
def test_learning_curve_runs_end_to_end_on_the_intercode_fixture(tmp_path, monkeypatch, capsys):
    import json
    import sys
    from pathlib import Path

    curve = load_bench("learning_curve")
    fixture = Path(__file__).parent / "fixtures" / "intercode"
    monkeypatch.setattr(sys, "argv", ["learning_curve.py", "--intercode", str(fixture), "--work", str(tmp_path), "--sizes", "4,all", "--seeds", "2"])
    curve.main_()
    out = capsys.readouterr().out
    assert "| all |" in out and (tmp_path / "learning_curve.png").stat().st_size > 0
    runs = [json.loads(line) for line in (tmp_path / "learning_curve.jsonl").read_text().splitlines()]
    assert [(r["size"], r["seed"]) for r in runs] == [(4, 0), (4, 1), ("all", 0), ("all", 1)]
    assert all({"heads", "tfidf", "no_heads", "reward"} <= r["accuracy"].keys() for r in runs)
    assert all(r["weights_without_heads"][0] == 0.0 for r in runs) and "| heads add |" in out


def test_blend_regret_resplits_keep_tasks_whole_and_cap_synthetic_training_pairs():
    import numpy as np
    import polars as pl

    regret = load_bench("blend_regret")
    pairs = pl.DataFrame({"task": [f"t{i // 4}" for i in range(400)]})  # 100 tasks of 4 pairs
    splits = regret.resplits("intercode-2", pairs, 20)
    assert len(splits) == 20 and len({tuple(test) for _, _, test in splits}) == 20  # seeded, each its own
    for train, val, test in splits:
        tasks = [set(pairs["task"][rows].to_list()) for rows in (train, val, test)]
        assert not (tasks[0] & tasks[1] or tasks[0] & tasks[2] or tasks[1] & tasks[2]) and sum(map(len, tasks)) == 100
        assert (len(tasks[2]), len(tasks[1])) == (15, 10)
    capped = regret.resplits("synthetic-80", pairs, 3)
    assert all(80 <= len(train) < 84 for train, _, _ in capped)  # whole tasks until the cap
    few = pl.DataFrame({"task": [f"t{i // 4}" for i in range(20)]})  # AutoGPT's 5 tasks
    folds = regret.resplits("autogpt", few, 20)
    assert len(folds) == 20 and all(len(set(few["task"][part].to_list())) == 1 for _, val, test in folds for part in (val, test))
    assert len({(tuple(val), tuple(test)) for _, val, test in folds}) == 20
    assert all(np.intersect1d(train, test).size == 0 for train, _, test in folds)


@pytest.mark.slow
def test_blend_regret_runs_end_to_end_on_the_intercode_fixture(tmp_path, monkeypatch, capsys):
    import json
    import subprocess
    import sys
    from pathlib import Path

    regret = load_bench("blend_regret")
    fixture = Path(__file__).parent / "fixtures" / "intercode"
    runs = {}
    for jobs in (1, 2):  # in this process, then two spawned workers (run as a user runs it: they import the script)
        work = tmp_path / f"jobs-{jobs}"
        arguments = ["--intercode", str(fixture), "--work", str(work), "--sets", "intercode-2", "--resplits", "3", "--jobs", str(jobs)]
        if jobs == 1:
            monkeypatch.setattr(sys, "argv", ["blend_regret.py", *arguments])
            regret.main_()
            out = capsys.readouterr().out
        else:
            out = subprocess.run([sys.executable, str(Path(regret.__file__)), *arguments], capture_output=True, text=True, check=True).stdout
        runs[jobs] = [json.loads(line) for line in (work / "blend_regret.jsonl").read_text().splitlines()]
        assert "| shrink_any_size |" in out and "| intercode-2 | 3 |" in out and (work / "blend_regret.png").stat().st_size > 0
    splits = runs[1]
    assert [s["split"] for s in splits] == [0, 1, 2] and all(set(s["rules"]) == {*regret.RULES, regret.ANY_SIZE} for s in splits)
    assert all(s["best_single"] == max(s["singles"].values()) for s in splits)
    drop = lambda s: {k: v for k, v in s.items() if k != "seconds"}  # noqa: E731
    assert [drop(s) for s in runs[2]] == [drop(s) for s in splits]  # the same numbers, in order, however many at once
