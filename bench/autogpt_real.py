"""Real agent runs end to end: AutoGPT benchmark reports -> runs -> pairs -> embed -> heads ->
evaluate, leave-one-task-out, with the baselines beside the heads.

    python bench/autogpt_real.py REPORT.md... [--work DIR] [--encoder minilm] [--max-tokens 256] [--cap 32]

Only a few challenges have both a passed and a failed attempt, so a single task-grouped split
would test on one task. Instead every task is the test set once: fold k tests on task k,
validates on task k+1 and trains heads on the rest. Every step is the `pipeline` verb a user
would run. Prints per-fold and pooled pairwise accuracy of the heads and of each baseline.
"""

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data import load_pairs, write_pairs  # noqa: E402
from pipeline.cli import main  # noqa: E402


def pipeline(*args) -> None:
    print("$ pipeline", " ".join(str(a) for a in args), flush=True)
    main([str(a) for a in args], standalone_mode=False)


def run(reports: list[Path], work: Path, encoder: str, max_tokens: int, cap: int) -> None:
    work.mkdir(parents=True, exist_ok=True)
    config = work / "config.yaml"
    config.write_text(f"model: {{encoder: {encoder}, max_context_tokens: {max_tokens}, max_module_tokens: {max_tokens}}}\n")
    folds = leave_one_task_out(reports, work, config, cap)
    print_folds(folds)


def leave_one_task_out(reports: list[Path], work: Path, config: Path, cap: int, train_args: Sequence[str] = ()) -> list[tuple[str, dict]]:
    """Each fold's (test task, report.json); every verb reads `config`, train-heads also gets `train_args`."""
    pipeline("import", "autogpt", *reports, "--out", work / "runs.jsonl")
    pipeline("pairs", work / "runs.jsonl", "--out", work / "pairs.json", "--max-pairs-per-task", cap, "--config", config)
    pipeline("embed", work / "pairs.json", "--cache", work / "cache", "--config", config)

    pairs = load_pairs(work / "pairs.json")
    tasks = sorted(pairs["task"].unique().to_list())
    folds = []
    for k, test_task in enumerate(tasks):
        val_task = tasks[(k + 1) % len(tasks)]
        fold = work / f"fold{k}"
        parts = {
            "train": pairs.filter(~pl.col("task").is_in([test_task, val_task])),
            "val": pairs.filter(pl.col("task") == val_task),
            "test": pairs.filter(pl.col("task") == test_task),
        }
        for name, part in parts.items():
            write_pairs(part, fold / f"{name}.jsonl")
        pipeline("train-heads", fold / "train.jsonl", "--val", fold / "val.jsonl", "--cache", work / "cache", "--out", fold / "checkpoint", "--config", config, *train_args)
        pipeline("evaluate", fold / "checkpoint", fold / "test.jsonl", "--cache", work / "cache", "--out", fold / "report", "--config", config)
        folds.append((test_task, json.loads((fold / "report" / "report.json").read_text())))
    return folds


def print_folds(folds: list[tuple[str, dict]]) -> None:
    systems = ["heads", "length", "cosine", "tfidf", "logistic_regression"]
    modules = [m for m in folds[0][1]["modules"] if any(r["modules"][m]["n_pairs"] for _, r in folds)]
    print("\nPairwise accuracy on the held-out task, leave-one-task-out (pooled over folds: weighted by pairs)\n")
    print(f"| test task | module | pairs | {' | '.join(systems)} |")
    print("|---|---|---:|" + "---:|" * len(systems))
    pooled = {m: {s: [0.0, 0] for s in systems} for m in [*modules, "overall"]}
    for task, report in folds:
        for m in [*modules, "overall"]:
            part = report["overall"] if m == "overall" else report["modules"][m]
            if not part["n_pairs"]:
                continue
            accuracy = {"heads": part["pairwise_accuracy"], **{s: (part["baselines"].get(s) or {}).get("pairwise_accuracy") for s in systems[1:]}}
            for s, value in accuracy.items():
                if value is not None:
                    pooled[m][s][0] += value * part["n_pairs"]
                    pooled[m][s][1] += part["n_pairs"]
            name = task.split("\n")[0][:40]
            print(f"| {name} | {m} | {part['n_pairs']} | " + " | ".join(_f(accuracy[s]) for s in systems) + " |")
    for m in [*modules, "overall"]:
        n = pooled[m]["heads"][1]
        print(f"| **all folds** | {m} | {n} | " + " | ".join(_f(total / count if count else None) for total, count in pooled[m].values()) + " |")


def _f(value) -> str:
    return "–" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="+", type=Path)
    parser.add_argument("--work", type=Path, default=Path("autogpt-run"))
    parser.add_argument("--encoder", default="minilm")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--cap", type=int, default=32, help="--max-pairs-per-task for `pipeline pairs`")
    args = parser.parse_args()
    run(args.reports, args.work, args.encoder, args.max_tokens, args.cap)
