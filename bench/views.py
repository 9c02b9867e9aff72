"""Which view of a long text (features/views.py) ranks pairs best: each view embedded, heads trained
with default settings (and with head "256"), scored on the validation split only.

    nice -n 10 python bench/views.py PAIRS_TRAIN PAIRS_VAL --encoder minilm --max-tokens 256 --work DIR
    ... --views truncate rounds --seeds 3 --seed-cache OLD_CACHE     # a subset; start from vectors already embedded

For each view: how many of the distinct pieces the encoder cuts (over its token budget), distinct
pieces, the embedding seconds (0 for vectors already in DIR/cache), and the validation pairwise
accuracy of the heads (mean over `--seeds` training seeds) and of the linear probe (logistic
regression on the mean-pooled vectors, per module), each with a 95% bootstrap interval over tasks,
and the heads' difference to the truncate view with its paired interval (the same task draws).
Results go to DIR/views.json too. Never give it a test split.
"""

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data import load_pairs  # noqa: E402
from features.views import VIEWS, View, cut_texts  # noqa: E402
from features.pairs import unique_texts  # noqa: E402
from heads.baselines import LogisticBaseline  # noqa: E402
from heads.metrics import group_draws, percentile_interval  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.embed import embed_pairs, load_encoder  # noqa: E402
from pipeline.evaluate_scoring import cached_pair_vectors, pair_scores  # noqa: E402
from pipeline.rewards import load  # noqa: E402
from pipeline.train_heads import train_heads  # noqa: E402

HEADS = {"heads": "2d,d", "heads 256": "256"}


def run(train_file: Path, val_file: Path, work: Path, encoder: str, max_tokens: int, views: list[str], seeds: int, samples: int) -> None:
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "cache"
    train, val = load_pairs(train_file), load_pairs(val_file)
    groups = val["task"].to_numpy()
    results, correct = {}, {}
    for name in views:
        config = load_config(None, {
            "model.encoder": encoder, "model.max_context_tokens": max_tokens, "model.max_module_tokens": max_tokens,
            "features.view": name, "training.device": "cpu",
        })  # fmt: skip
        view = View.from_config(config.features, config.model)
        text_encoder = load_encoder(config)
        pieces = cut_texts(unique_texts(pl.concat([train, val], how="diagonal_relaxed")), view).table
        cut = sum(text_encoder.prepare(pieces.filter(pl.col("role") == role)["text"].to_list(), role)[1] for role in ("context", "module"))
        started = time.perf_counter()
        report = embed_pairs([train_file, val_file], cache, config, encoder=text_encoder, progress=False)
        seconds = time.perf_counter() - started
        print(f"{name}: {report.line()} in {seconds:.0f} s", flush=True)
        row = {"view": name, "cut": cut, "pieces": report.unique, "new": report.new, "embed_seconds": seconds}
        for label, head in HEADS.items():
            outcomes = []
            for seed in range(seeds):
                out = work / f"ckpt-{name}-{head}-{seed}"
                seeded = config.override({"model.head": head, "training.seed": seed, "model.blend": "off"})  # the views, heads alone
                train_heads(files=[train_file], cache_dir=cache, out=out, config=seeded, val_file=val_file, namespace_id=report.namespace, progress=False, say=lambda *_: None, overwrite=True)
                scorer = load(out, cache, device="cpu")
                vectors, _ = cached_pair_vectors(scorer, val, embed_missing=False)
                positive, negative = pair_scores(scorer, vectors)
                outcomes.append(positive.reward > negative.reward)
            correct[(name, label)] = np.mean(outcomes, axis=0)
            row[label] = summary(correct[(name, label)], groups, samples)
            row[label]["per_seed"] = [float(o.mean()) for o in outcomes]
        train_vectors, _ = cached_pair_vectors(scorer, train, embed_missing=False)
        probe = LogisticBaseline.fit(train_vectors, scorer.modules)
        positive, negative = probe.scores(vectors)
        correct[(name, "probe")] = (positive > negative).astype(float)
        row["probe"] = summary(correct[(name, "probe")], groups, samples)
        if ("truncate", "heads") in correct and name != "truncate":
            row["heads - truncate"] = summary(correct[(name, "heads")] - correct[("truncate", "heads")], groups, samples)
        results[name] = row
        (work / "views.json").write_text(json.dumps(results, indent=2))
    print_table(results, seeds)


def summary(values: np.ndarray, groups: np.ndarray, samples: int, seed: int = 0) -> dict:
    """The mean of per-pair values (accuracy, or a difference of accuracies) with a percentile
    bootstrap interval over tasks; the same seed draws the same tasks for every view (paired)."""
    _, group_of_pair = np.unique(groups, return_inverse=True)
    means = [draws[:, group_of_pair] @ values / draws[:, group_of_pair].sum(axis=1) for draws in group_draws(group_of_pair.max() + 1, samples, seed)]
    return {"mean": float(values.mean()), "ci": percentile_interval(np.concatenate(means), 0.95)}


def print_table(results: dict, seeds: int) -> None:
    print(f"\n| view | pieces cut by the encoder | distinct pieces | embed s | heads (mean of {seeds} seeds) | heads 256 | linear probe | heads - truncate |")
    print("|---|---:|---:|---:|---|---|---|---|")
    for name, row in results.items():
        cells = [_cell(row.get(k)) for k in ("heads", "heads 256", "probe", "heads - truncate")]
        print(f"| {name} | {row['cut']} | {row['pieces']} | {row['embed_seconds']:.0f} | " + " | ".join(cells) + " |")


def _cell(value: dict | None) -> str:
    if value is None:
        return "–"
    low, high = value["ci"] or (float("nan"), float("nan"))
    return f"{value['mean']:.3f} [{low:.3f}, {high:.3f}]"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("train", type=Path)
    parser.add_argument("val", type=Path)
    parser.add_argument("--work", type=Path, default=Path("views-run"))
    parser.add_argument("--encoder", default="minilm")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--views", nargs="+", choices=VIEWS, default=list(VIEWS))
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per view and head; accuracy is their mean")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--seed-cache", type=Path, help="an embedding cache to copy into DIR/cache first (vectors already embedded)")
    args = parser.parse_args()
    if args.seed_cache and not (args.work / "cache").exists():
        shutil.copytree(args.seed_cache, args.work / "cache")
    run(args.train, args.val, args.work, args.encoder, args.max_tokens, args.views, args.seeds, args.bootstrap)
