"""From how many training pairs do the heads pay off? Test accuracy of each part and of the reward
against the number of training pairs, on one fixed set of unseen tasks (issue 28, point 4).

    python bench/learning_curve.py --intercode DIR [--work lc/] \
        [--sizes 500,1000,2000,4000,8000,16000,all] [--seeds 3] [--rule argmax]
    python bench/learning_curve.py --pairs PAIRS.json ...   # an already mined pair table instead

InterCode's runs are imported and paired with pairs per task uncapped (`pipeline pairs
--max-pairs-per-task 100000`) by bench/blend_regret.py's `prepare`, embedded once (MiniLM at 256
tokens, into WORK/intercode-cache, which a blend_regret run in the same WORK shares; --pairs: that
table, into WORK/cache) and read into memory once, as bench/blend_regret.py does. One split by
task (seed 0): 15% of tasks test, 10% validation, the rest the training pool. For each size and
seed, a task-grouped sample of the pool: its tasks in a seeded order (one order per seed, so a
seed's samples are nested), taken until the pairs reach the size; `all` is the whole pool. On it
the heads are trained as `train-heads` trains them, the parts fitted and scored on the held-out
pairs (validation, plus training pairs out of fold: heads/blend.py `held_out_scores`), weighed by
--rule (default: the config's model.blend_rule), and scored on the fixed test pairs: the heads
alone, the linear part (only when fitted: at most heads/blend.py MAX_PAIRS training pairs), the
plain TF-IDF, the reward (the blend of the TF-IDF choice the rule picks) and the reward without
heads (the same rule on the same held-out pairs and TF-IDF choice, the heads left out): their
difference, paired on the same test pairs, is what the heads add.

Per size: the mean accuracy over seeds, with a 95% bootstrap interval over test tasks (1000
resamples, seeded) of that mean: each test pair's correctness averaged over the seeds, the test
tasks resampled with replacement. Table to stdout and WORK/learning_curve.md, every run (with its
own interval) to WORK/learning_curve.jsonl, the curves as WORK/learning_curve.png.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parent))  # blend_regret; last, so bench/ shadows nothing in a test process

import blend_regret  # noqa: E402  (sets OMP_WAIT_POLICY, HF_HUB_OFFLINE)
from blend_regret import load_set, pipeline, train_and_test  # noqa: E402

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import torch  # noqa: E402

from heads.blend import MAX_PAIRS, RULES, choose_blend, rule_weights  # noqa: E402
from heads.metrics import group_draws, pairwise_accuracy, percentile_interval  # noqa: E402
from heads.training import PairTensors  # noqa: E402
from pipeline.config import load_config  # noqa: E402

PARTS = ("heads", "linear", "tfidf", "no_heads", "reward")
NAMES = {"heads": "heads", "linear": "linear", "tfidf": "TF-IDF", "no_heads": "reward without heads", "reward": "reward"}
UNCAPPED = 100_000  # --max-pairs-per-task: uncapped in effect
SAMPLES = 1000  # bootstrap resamples of the test tasks


def fixed_split(tasks: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pool, val, test) task names: 15% of tasks test, 10% validation, the rest the pool."""
    order = np.random.default_rng(seed).permutation(np.unique(tasks))
    n_test, n_val = round(0.15 * len(order)), round(0.10 * len(order))
    return order[n_test + n_val :], order[n_test : n_test + n_val], order[:n_test]


def sample_tasks(pool: np.ndarray, tasks: np.ndarray, size: int | None, seed: int) -> np.ndarray:
    """Pool tasks in a seeded order, taken until their pairs reach `size` (None: all of them)."""
    order = np.random.default_rng([seed, 1]).permutation(pool)
    if size is None:
        return order
    counts = dict(zip(*np.unique(tasks, return_counts=True)))
    cumulative = np.cumsum([counts[t] for t in order])
    return order[: int(np.searchsorted(cumulative, size)) + 1]


def interval(correct: np.ndarray, groups: np.ndarray, seed: int = 0) -> list[float] | None:
    """95% percentile interval of the mean of `correct` (per pair) over resamples of the groups."""
    _, group_of_pair = np.unique(groups, return_inverse=True)
    n = int(group_of_pair.max()) + 1 if len(group_of_pair) else 0
    if n < 2:
        return None
    right, pairs = np.bincount(group_of_pair, weights=correct, minlength=n), np.bincount(group_of_pair, minlength=n).astype(np.float64)
    return percentile_interval(np.concatenate([d @ right / (d @ pairs) for d in group_draws(n, SAMPLES, seed)]), 0.95)


def one_run(pairs: pl.DataFrame, data: PairTensors, dimension: int, rows, config, rule: str, seed: int) -> tuple[dict, dict]:
    """Train on rows[0], choose the blend on rows[1] and out of fold, score rows[2]. Returns the
    run's numbers and each part's per-test-pair correctness."""
    held, tested, (train_pairs, val_pairs, test_pairs) = train_and_test(pairs, data, dimension, rows, config, seed)
    best, choices, _ = choose_blend(held, rule)
    weights, pooled = choices[best].weights, choices[best].pooled  # pooled: the held-out pairs the weights were chosen on
    has_linear = held.finals[0].stds[1] > 0  # a linear part was fitted
    # what the heads add: the same rule on the same held-out pairs and TF-IDF choice, heads left out
    without, _ = rule_weights(rule, pooled, held.groups, (False, has_linear, True))
    scores = {"heads": tested[0].heads, "tfidf": tested[0].tfidf, "no_heads": tested[best].blended(without), "reward": tested[best].blended(weights)}
    if has_linear:
        scores["linear"] = tested[0].linear
    correct = {part: (positive > negative).astype(np.float64) for part, (positive, negative) in scores.items()}
    groups = test_pairs["task"].to_numpy()
    result = {
        "train_pairs": train_pairs.height, "train_tasks": train_pairs["task"].n_unique(), "val_pairs": val_pairs.height,
        "test_pairs": test_pairs.height, "held_out_pairs": len(held.groups),
        "accuracy": {part: pairwise_accuracy(*s) for part, s in scores.items()},
        "interval": {part: interval(c, groups) for part, c in correct.items()},
        "held_out": {part: pairwise_accuracy(*getattr(pooled, part)) for part in ("heads", "linear", "tfidf")},
        "weights": weights, "weights_without_heads": without, "ended_tfidf": bool(best),
    }  # fmt: skip
    return result, correct


def curve(pairs: pl.DataFrame, data: PairTensors, dimension: int, config, sizes: list[int | None], seeds: int, rule: str, log) -> list[dict]:
    """Every (size, seed) run on the fixed split; per size the seed means and pooled intervals."""
    tasks = pairs["task"].to_numpy()
    pool, val, test = fixed_split(tasks)
    val_rows, test_rows = np.flatnonzero(np.isin(tasks, val)), np.flatnonzero(np.isin(tasks, test))
    pool_pairs = int(np.isin(tasks, pool).sum())
    print(f"{pairs.height} pairs over {len(np.unique(tasks))} tasks: pool {pool_pairs} pairs / {len(pool)} tasks, "
          f"validation {len(val_rows)} / {len(val)}, test {len(test_rows)} / {len(test)}", flush=True)  # fmt: skip
    rows = []
    for size in sizes:
        if size is not None and size >= pool_pairs:
            print(f"size {size}: the whole pool ({pool_pairs} pairs), left to `all`", flush=True)
            continue
        runs, correct = [], {part: [] for part in PARTS}
        for seed in range(seeds):
            started = time.time()
            train_rows = np.flatnonzero(np.isin(tasks, sample_tasks(pool, tasks, size, seed)))
            result, right = one_run(pairs, data, dimension, (train_rows, val_rows, test_rows), config, rule, seed)
            result = {"size": size or "all", "seed": seed, **result, "seconds": time.time() - started}
            runs.append(result)
            for part, c in right.items():
                correct[part].append(c)
            log.write(json.dumps(result) + "\n")
            log.flush()
            shown = ", ".join(f"{part} {result['accuracy'][part]:.3f}" for part in PARTS if part in result["accuracy"])
            print(f"  size {size or 'all'} seed {seed}: {result['train_pairs']} pairs / {result['train_tasks']} tasks; {shown}; "
                  f"weights {'/'.join(f'{w:.2f}' for w in result['weights'])}; {result['seconds']:.0f} s", flush=True)  # fmt: skip
        groups = pairs["task"].to_numpy()[test_rows]
        rows.append({
            "size": size or "all", "train_pairs": float(np.mean([r["train_pairs"] for r in runs])),
            "train_tasks": float(np.mean([r["train_tasks"] for r in runs])), "seconds": float(np.mean([r["seconds"] for r in runs])),
            "seeds": len(runs), "weights": np.mean([r["weights"] for r in runs], axis=0).tolist(),
            "accuracy": {part: float(np.mean([r["accuracy"][part] for r in runs if part in r["accuracy"]])) for part in PARTS if correct[part]},
            "interval": {part: interval(np.mean(c, axis=0), groups) for part, c in correct.items() if c},
            "linear_seeds": len(correct["linear"]),
            # what the heads add to the reward: paired on the same test pairs, seeds averaged
            "heads_add": float(np.mean(correct["reward"]) - np.mean(correct["no_heads"])),
            "heads_add_interval": interval(np.mean(correct["reward"], axis=0) - np.mean(correct["no_heads"], axis=0), groups),
        })  # fmt: skip
    return rows


def table(rows: list[dict], rule: str) -> str:
    def cell(row, part):
        if part not in row["accuracy"]:
            return "–"
        low, high = row["interval"][part] or (np.nan, np.nan)
        return f"{row['accuracy'][part]:.3f} [{low:.3f}, {high:.3f}]"

    def gain(row):
        low, high = row["heads_add_interval"] or (np.nan, np.nan)
        return f"{row['heads_add']:+.3f} [{low:+.3f}, {high:+.3f}]"

    lines = [
        (f"Test pairwise accuracy, mean over seeds [95% bootstrap interval over test tasks of that mean: each test pair's "
         f"correctness averaged over the seeds]; reward rule: {rule}; weights: the reward's mean heads/linear/TF-IDF weights; "
         f"linear: – where not fitted (above {MAX_PAIRS} training pairs); reward without heads: the same rule on the same "
         f"held-out pairs with the heads left out; heads add: reward minus reward without heads, paired on the test pairs."),
        "",
        f"| size | training pairs | tasks | seeds | {' | '.join(NAMES[part] for part in PARTS)} | heads add | weights h/l/t | s per run |",
        "|---|---:|---:|---:|" + "---:|" * (len(PARTS) + 1) + "---|---:|",
    ]
    for row in rows:
        weights = "/".join(f"{w:.2f}" for w in row["weights"])
        lines.append(f"| {row['size']} | {row['train_pairs']:.0f} | {row['train_tasks']:.0f} | {row['seeds']} | "
                     + " | ".join(cell(row, part) for part in PARTS) + f" | {gain(row)} | {weights} | {row['seconds']:.0f} |")  # fmt: skip
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, rule: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for part in PARTS:
        shown = [r for r in rows if part in r["accuracy"]]
        if not shown:
            continue
        x = [r["train_pairs"] for r in shown]
        line = ax.plot(x, [r["accuracy"][part] for r in shown], marker="o", label=NAMES[part] if part != "reward" else f"reward ({rule})")[0]
        low, high = zip(*[r["interval"][part] or (np.nan, np.nan) for r in shown])
        ax.fill_between(x, low, high, color=line.get_color(), alpha=0.15)
    ax.set_xscale("log")
    ax.set_xlabel("training pairs")
    ax.set_ylabel("test pairwise accuracy")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def prepare(args, work: Path, config: Path) -> tuple[Path, Path]:
    """The pair table (InterCode's runs imported and paired uncapped, as blend_regret.py prepares
    its InterCode sets, into the same WORK/intercode-cache; or --pairs) and its cache."""
    if args.intercode is not None:
        return blend_regret.prepare(f"intercode-{UNCAPPED}", args, work, config), work / "intercode-cache"
    pipeline("embed", args.pairs, "--cache", work / "cache", "--config", config)
    return args.pairs, work / "cache"


def main_() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--intercode", type=Path, help="folder of InterCode trajectory files (*.json, *.json.gz)")
    parser.add_argument("--pairs", type=Path, help="an already mined pair table, instead of --intercode")
    parser.add_argument("--work", type=Path, default=Path("learning-curve"))
    parser.add_argument("--sizes", default="500,1000,2000,4000,8000,16000,all")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rule", choices=RULES, help="the blend rule (default: the config's model.blend_rule)")
    args = parser.parse_args()
    if (args.intercode is None) == (args.pairs is None):
        raise SystemExit("give one of --intercode, --pairs")
    sizes = [None if s == "all" else int(s) for s in args.sizes.split(",")]
    args.work.mkdir(parents=True, exist_ok=True)
    config_file = args.work / "config.yaml"
    config_file.write_text("model: {encoder: minilm, max_context_tokens: 256, max_module_tokens: 256}\ntraining: {device: cpu}\n")
    config = load_config(config_file)
    rule = args.rule or config.model.blend_rule
    torch.set_num_threads(os.cpu_count() or 1)
    pairs_file, cache = prepare(args, args.work, config_file)
    pairs, data, dimension = load_set(pairs_file, cache, config)
    with (args.work / "learning_curve.jsonl").open("w") as log:
        rows = curve(pairs, data, dimension, config, sizes, args.seeds, rule, log)
    text = table(rows, rule)
    print("\n" + text)
    (args.work / "learning_curve.md").write_text(text + "\n")
    plot(rows, args.work / "learning_curve.png", rule)


if __name__ == "__main__":
    main_()
