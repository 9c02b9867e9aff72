"""Does the reward lose to its own parts? Each blend rule against the best single part, over many
task-grouped resplits of each development set (issue 28).

    python bench/blend_regret.py [--intercode DIR] [--autogpt REPORT.md...] [--synthetic] \
        [--resplits 20] [--work br/] [--sets intercode-2,intercode-8,autogpt,synthetic-800,synthetic-3200] [--jobs 2]

Each set is imported, paired and embedded once with `pipeline` verbs (MiniLM at 256 tokens, into
WORK/<source>-cache, which InterCode's two sets and the synthetic two share), then read into
memory once. Each resplit (seeded) puts whole tasks into test (15%; 10% for synthetic-3200),
validation (10%) and training (the rest; the synthetic sets take tasks until 800 or 3,200
training pairs); AutoGPT's resplits are leave-one-task-out folds, each other task validating in
turn (its 5 tasks give 20).
On each: the heads trained as `train-heads` trains them (defaults), the parts fitted and scored on
the held-out pairs exactly as `train-heads` does (validation, plus training pairs out of fold:
heads/blend.py `held_out_scores`), and then every rule of heads/blend.py `RULES` weighs them (and
`shrink_any_size`, `shrink` whose prior keeps the heads below HEADS_PAY_OFF training pairs too). The
test pairs, which no choice sees, give each rule's reward accuracy and each single part's: heads,
linear, TF-IDF, TF-IDF with the episode's end.

Regret = the reward's test accuracy minus the best single part's on that split (the best chosen
with hindsight). `--from-log` makes the tables and plot again from the splits a run has logged. Per set and rule: the mean regret, its 10th percentile, and how often the reward
loses by more than 0.01. Tables to stdout and WORK/blend_regret.md, every split's numbers to
WORK/blend_regret.jsonl, the regrets as WORK/blend_regret.png.
"""

import argparse
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: 2-vCPU machines spin otherwise
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cache import EmbeddingCache  # noqa: E402
from data import load_pairs  # noqa: E402
from data.schema import TEXT_COLUMNS  # noqa: E402
from features.views import View, piece_features  # noqa: E402
from heads.blend import MAX_PAIRS, RULES, Parts, blend_sample, choose_blend, held_out_scores, mean_pooled  # noqa: E402
from heads.fitting import fit_heads  # noqa: E402
from heads.metrics import pairwise_accuracy  # noqa: E402
from heads.training import PairTensors  # noqa: E402
from pipeline.cli import main  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.train_heads import head_setting, training_recipe  # noqa: E402

SINGLES = ("heads", "linear", "tfidf", "tfidf_ended")
LOSS = 0.01  # a reward below the best part by more than this "loses"
ANY_SIZE = "shrink_any_size"  # `shrink` as it was before the learning curve: its prior weighs the heads at any size


def pipeline(*args) -> None:
    print("$ pipeline", " ".join(str(a) for a in args), flush=True)
    main([str(a) for a in args], standalone_mode=False)


# --- the sets: pairs, embedded once ---------------------------------------------------------


def source_of(name: str) -> str:
    return name.split("-")[0]  # intercode-2 and intercode-8 share runs, texts and a cache


def prepare(name: str, args, work: Path, config: Path) -> Path:
    """The set's pair table (a file), its texts embedded into WORK/<source>-cache."""
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    pairs = folder / "pairs.json"
    if name.startswith("intercode"):
        runs = work / "intercode-runs.jsonl"
        if not runs.exists():
            files = sorted([*Path(args.intercode).glob("*.json"), *Path(args.intercode).glob("*.json.gz")])
            pipeline("import", "intercode", *files, "--out", runs)
        if not pairs.exists():
            pipeline("pairs", runs, "--out", pairs, "--max-pairs-per-task", name.split("-")[1], "--config", config)
    elif name == "autogpt":
        runs = folder / "runs.jsonl"
        if not runs.exists():
            pipeline("import", "autogpt", *args.autogpt, "--out", runs)
        if not pairs.exists():
            pipeline("pairs", runs, "--out", pairs, "--max-pairs-per-task", 32, "--config", config)
    else:  # synthetic-N: one table of 4000 pairs, shared
        pairs = work / "synthetic-pairs.json"
        if not pairs.exists():
            pipeline("synth", "--pairs", 4000, "--seed", 0, "--out", pairs, "--config", config)
    pipeline("embed", pairs, "--cache", work / f"{source_of(name)}-cache", "--config", config)
    return pairs


def load_set(pairs_file: Path, cache: Path, config) -> tuple[pl.DataFrame, PairTensors, int]:
    pairs = load_pairs(pairs_file, config.data.modules)
    view = View.from_config(config.features, config.model)
    namespace = EmbeddingCache(cache).select(None)
    columns = ["target_module", *TEXT_COLUMNS]
    features = piece_features(namespace, pairs.select(columns), view)  # in memory: the sets are small
    return pairs, PairTensors.from_pieces(features, list(config.data.modules)), namespace.dimension


def resplits(name: str, pairs: pl.DataFrame, count: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(train, val, test) row indices of each resplit, whole tasks in each."""
    tasks = pairs["task"].to_numpy()
    distinct = np.unique(tasks)
    if name == "autogpt":  # leave one task out, each other task validating in turn: 5 tasks give 20 splits
        pairs_of = [(test, val) for test in distinct for val in distinct if val != test]
        return [(np.flatnonzero((tasks != test) & (tasks != val)), np.flatnonzero(tasks == val), np.flatnonzero(tasks == test)) for test, val in pairs_of]
    cap = int(name.split("-")[1]) if name.startswith("synthetic") else None
    test_fraction = 0.10 if name == "synthetic-3200" else 0.15  # 4,000 pairs leave 3,200 for training only at 10% / 10%
    splits = []
    for seed in range(count):
        order = np.random.default_rng(seed).permutation(distinct)
        n_test, n_val = round(test_fraction * len(order)), round(0.10 * len(order))
        test, val, rest = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
        if cap is not None:  # tasks in order until the training pairs reach the cap
            sizes = np.array([np.sum(tasks == t) for t in rest])
            rest = rest[: int(np.searchsorted(np.cumsum(sizes), cap)) + 1]
        splits.append(tuple(np.flatnonzero(np.isin(tasks, part)) for part in (rest, val, test)))
    return splits


# --- one resplit ----------------------------------------------------------------------------


def train_and_test(pairs: pl.DataFrame, data: PairTensors, dimension: int, rows, config, seed: int):
    """The heads trained on rows[0] as `train-heads` trains them, the blend's parts scored on the
    held-out pairs as `train-heads` scores them (rows[1] and rows[0] out of fold), and each TF-IDF
    choice's parts scored on the test pairs rows[2]; also the three pair tables."""
    modules = list(config.data.modules)
    train_rows, val_rows, test_rows = (torch.from_numpy(r.astype(np.int64)) for r in rows)
    train, val, test = data.rows(train_rows), data.rows(val_rows), data.rows(test_rows)
    setting, recipe = head_setting(config), training_recipe(config)
    heads = fit_heads(train, val, dimension, modules, setting, recipe, seed=seed).model
    tables = tuple(pairs[r.numpy()] for r in (train_rows, val_rows, test_rows))
    fit_fold = lambda fold_rows: fit_heads(train.rows(fold_rows), val, dimension, modules, setting, recipe, seed=seed).model  # noqa: E731
    held = held_out_scores(heads, blend_sample(tables[0]), blend_sample(tables[1]), train, val, modules, fit_fold, seed=seed)
    texts = tables[2].select(["positive_context", "positive_module_text", "negative_context", "negative_module_text"])
    tested = Parts.score_each(held.finals, test, mean_pooled(test, modules) if tables[0].height <= MAX_PAIRS else None, texts)
    return held, tested, tables


def one_split(pairs: pl.DataFrame, data: PairTensors, dimension: int, rows, config, seed: int) -> dict:
    held, tested, (train_pairs, val_pairs, test_pairs) = train_and_test(pairs, data, dimension, rows, config, seed)
    plain, ended = tested
    singles = {"heads": pairwise_accuracy(*plain.heads), "tfidf": pairwise_accuracy(*plain.tfidf), "tfidf_ended": pairwise_accuracy(*ended.tfidf)}
    if held.finals[0].stds[1] > 0:  # a linear part was fitted
        singles["linear"] = pairwise_accuracy(*plain.linear)
    # every rule, and `shrink` as it was before the learning curve (toward equal weights on every
    # part at any size: no training size for its prior to go by)
    candidates = {**{rule: (rule, held) for rule in RULES}, ANY_SIZE: ("shrink", replace(held, training_pairs=None))}
    rules = {}
    for name, (rule, weighed) in candidates.items():
        best, choices, _ = choose_blend(weighed, rule)
        weights = choices[best].weights
        rules[name] = {"accuracy": pairwise_accuracy(*tested[best].blended(weights)), "weights": weights, "ended": bool(best)}
    return {
        "train_pairs": train_pairs.height, "val_pairs": val_pairs.height, "test_pairs": test_pairs.height,
        "held_out_pairs": len(held.groups), "held_out_tasks": int(len(np.unique(held.groups))),
        "singles": singles, "best_single": max(singles.values()), "rules": rules,
    }  # fmt: skip


# --- tables ---------------------------------------------------------------------------------


_SET: tuple = ()  # a worker's set: pairs, tensors, dimension, config


def _load_worker(pairs_file: Path, cache: Path, config_file: Path, threads: int) -> None:
    global _SET
    torch.set_num_threads(threads)
    config = load_config(config_file)
    _SET = (*load_set(pairs_file, cache, config), config)


def _split(job: tuple[int, tuple]) -> dict:
    seed, rows = job
    started = time.time()
    pairs, data, dimension, config = _SET
    return {**one_split(pairs, data, dimension, rows, config, seed), "seconds": round(time.time() - started, 1)}


def run_splits(loaded: tuple[Path, Path, Path], splits: list, jobs: int):
    """Each resplit's result, in order. With jobs > 1, that many spawned processes of one thread
    each, every one reading the set once: a small MLP on 2 cores trains as fast on one thread as on
    two (72 s against 76 s for an InterCode-8 resplit), so two at a time halve the wall time."""
    if jobs <= 1:
        _load_worker(*loaded, os.cpu_count() or 1)
        yield from map(_split, enumerate(splits))
        return
    context = multiprocessing.get_context("spawn")  # not fork: torch's thread pool is not fork-safe
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_load_worker, initargs=(*loaded, 1)) as pool:
        yield from pool.map(_split, enumerate(splits))


def rules_in(*split_lists: list[dict]) -> list[str]:
    """The rules every split logged (a log of an earlier bench may lack ANY_SIZE)."""
    return [rule for rule in (*RULES, ANY_SIZE) if all(rule in s["rules"] for splits in split_lists for s in splits)]


def summarise(results: dict[str, list[dict]]) -> str:
    lines = ["| set | splits | train pairs | rule | mean test acc. | mean regret | p10 regret | loses by > 0.01 |", "|---|---:|---:|---|---:|---:|---:|---:|"]
    for name, splits in results.items():
        train = int(np.median([s["train_pairs"] for s in splits]))
        for rule in rules_in(splits):
            regret = np.array([s["rules"][rule]["accuracy"] - s["best_single"] for s in splits])
            accuracy = np.mean([s["rules"][rule]["accuracy"] for s in splits])
            lines.append(
                f"| {name} | {len(splits)} | {train} | {rule} | {accuracy:.3f} | {regret.mean():+.4f} | {np.percentile(regret, 10):+.4f} | {np.mean(regret < -LOSS):.0%} |"
            )
        for single in SINGLES:
            values = [s["singles"][single] for s in splits if single in s["singles"]]
            if values:
                lines.append(f"| {name} | {len(values)} | {train} | *{single} alone* | {np.mean(values):.3f} | | | |")
        lines.append(f"| {name} | {len(splits)} | {train} | *best single part (hindsight)* | {np.mean([s['best_single'] for s in splits]):.3f} | | | |")
    # the choice of a default: the best mean regret over the sets, then the 10th percentile nearest 0
    lines += ["", "| rule | mean regret, averaged over sets | worst set's mean regret | worst set's p10 regret |", "|---|---:|---:|---:|"]
    for rule in rules_in(*results.values()):
        regrets = [np.array([s["rules"][rule]["accuracy"] - s["best_single"] for s in splits]) for splits in results.values()]
        means, p10s = [r.mean() for r in regrets], [np.percentile(r, 10) for r in regrets]
        lines.append(f"| {rule} | {np.mean(means):+.4f} | {min(means):+.4f} | {min(p10s):+.4f} |")
    return "\n".join(lines)


def plot(results: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(3.2 * len(results), 3.6), sharey=True, squeeze=False)
    for ax, (name, splits) in zip(axes[0], results.items()):
        shown = rules_in(splits)
        regrets = [[s["rules"][rule]["accuracy"] - s["best_single"] for s in splits] for rule in shown]
        ax.boxplot(regrets, whis=(10, 90), showmeans=True)
        ax.set_xticks(range(1, len(shown) + 1), shown, rotation=45)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_title(name, fontsize=9)
    axes[0][0].set_ylabel("test accuracy - best single part")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main_() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--intercode", type=Path)
    parser.add_argument("--autogpt", type=Path, nargs="*", default=[])
    parser.add_argument("--synthetic", action="store_true")
    parser.add_argument("--resplits", type=int, default=20)
    parser.add_argument("--work", type=Path, default=Path("blend-regret"))
    parser.add_argument("--sets", default="intercode-2,intercode-8,autogpt,synthetic-800,synthetic-3200")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="resplits run at once, one process and one thread each (default: one per CPU)")
    parser.add_argument("--from-log", action="store_true", help="only the tables and plot again, from WORK/blend_regret.jsonl (a run cut short too)")
    args = parser.parse_args()
    if args.from_log:
        results: dict[str, list[dict]] = {}
        for line in (args.work / "blend_regret.jsonl").read_text().splitlines():
            result = json.loads(line)
            results.setdefault(result["set"], []).append(result)
        return report(results, args.work)
    wanted = [s for s in args.sets.split(",") if (s.startswith("intercode") and args.intercode) or (s == "autogpt" and args.autogpt) or (s.startswith("synthetic") and args.synthetic)]
    if not wanted:
        raise SystemExit("give at least one of --intercode, --autogpt, --synthetic")
    args.work.mkdir(parents=True, exist_ok=True)
    config_file = args.work / "config.yaml"
    config_file.write_text("model: {encoder: minilm, max_context_tokens: 256, max_module_tokens: 256}\ntraining: {device: cpu}\n")
    config = load_config(config_file)
    results, log = {}, (args.work / "blend_regret.jsonl").open("w")
    for name in wanted:
        started = time.time()
        pairs_file = prepare(name, args, args.work, config_file)
        loaded = (pairs_file, args.work / f"{source_of(name)}-cache", config_file)
        pairs = load_pairs(pairs_file, config.data.modules)
        splits = resplits(name, pairs, args.resplits)
        print(f"{name}: {pairs.height} pairs over {pairs['task'].n_unique()} tasks, {len(splits)} resplits, {args.jobs} at a time", flush=True)
        results[name] = []
        for seed, result in enumerate(run_splits(loaded, splits, args.jobs)):
            result = {"set": name, "split": seed, **result}
            results[name].append(result)
            log.write(json.dumps(result) + "\n")
            log.flush()
            best = max(result["rules"], key=lambda r: result["rules"][r]["accuracy"])
            print(f"  split {seed}: {result['train_pairs']} train / {result['test_pairs']} test pairs; best part {result['best_single']:.3f}, "
                  f"argmax {result['rules']['argmax']['accuracy']:.3f}, best rule here {best}; {result['seconds']} s", flush=True)  # fmt: skip
        print(f"{name}: {time.time() - started:.0f} s", flush=True)
    report(results, args.work)


def report(results: dict[str, list[dict]], work: Path) -> None:
    table = summarise(results)
    print("\n" + table)
    (work / "blend_regret.md").write_text(table + "\n")
    plot(results, work / "blend_regret.png")


if __name__ == "__main__":
    main_()
