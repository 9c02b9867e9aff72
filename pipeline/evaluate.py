"""Evaluation recipe: a checkpoint's metrics on pair files, beside three baselines, as a report folder.

    pipeline evaluate ckpt/ splits/test.jsonl --cache embeddings/ --out report/

Scores every pair with the checkpoint's heads on its encoder's cached vectors (embedding the texts
the cache lacks first, and saying so), computes heads/metrics per module and overall, scores the
same pairs with the baselines, and writes report.json, report.md and PNG plots atomically.

Run on the checkpoint's own validation data (or with `--store-normalization`), it also stores each
module's reward mean and std in the checkpoint's config.json, which serving uses to normalise.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data import load_pairs
from data.files import atomic_dir, check_output_folder, write_text_atomic
from data.splits import carve_validation
from features.pairs import pair_table_hash
from heads.baselines import LogisticBaseline, cosine_scores, length_scores
from heads.metrics import pair_metrics
from heads.report import markdown, terminal_table, write_plots
from pipeline.config import Config
from pipeline.rewards import RewardScorer, load


REPORT_FILES = ("report.json", "report.md")


@dataclass
class Evaluation:
    report: dict
    table: str  # the compact terminal table
    normalization_stored: bool


def evaluate(
    checkpoint: Path,
    files: Sequence[Path],
    cache_dir: Path,
    out: Path,
    config: Config,
    encoder: str | None = None,
    store_normalization: bool | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> Evaluation:
    check_output_folder(out, REPORT_FILES, "report folder", overwrite)
    scorer = load(checkpoint, cache_dir, encoder=encoder, device=config.training.device, write_cache=True)
    modules = scorer.modules
    pairs = load_pairs(files, modules)
    vectors, embedded = scorer.pair_vectors(pairs, progress=progress)
    positive, negative = scorer.score_pair_vectors(vectors)
    notes = [f"{embedded} texts had no cached vector and were embedded with the checkpoint's encoder."] if embedded else []

    baselines = {"length": length_scores(pairs), "cosine": cosine_scores(vectors)}
    if config.evaluation.logistic_baseline:
        logistic, note = _logistic_baseline(scorer, config, progress)
        if logistic is not None:
            baselines["logistic_regression"] = logistic.scores(vectors)
        if note:
            notes.append(note)
    else:
        notes.append("no logistic-regression baseline: evaluation.logistic_baseline is off in the config")

    settings = config.evaluation
    group_by = config.data.group_by
    groups = pairs[group_by].to_numpy() if group_by in pairs.columns else pairs["task"].to_numpy()
    module_of = vectors.target_module

    def summary(rows: np.ndarray, seed: int) -> dict:
        metrics = pair_metrics(
            positive[rows], negative[rows], groups[rows], bootstrap_samples=settings.bootstrap_samples,
            confidence=settings.confidence, calibration_bins=settings.calibration_bins, seed=seed,
        )  # fmt: skip
        metrics["baselines"], metrics["above_baselines"] = {}, {}
        for name, (p, n) in baselines.items():
            usable = rows & ~np.isnan(p)
            if not usable.any():
                metrics["baselines"][name] = metrics["above_baselines"][name] = None
                continue
            base = pair_metrics(p[usable], n[usable], bootstrap_samples=0)
            metrics["baselines"][name] = {k: base[k] for k in ("pairwise_accuracy", "auc", "n_pairs")}
            metrics["above_baselines"][name] = (
                None if metrics["n_pairs"] == 0 else {k: metrics[k] - base[k] for k in ("pairwise_accuracy", "auc")}
            )
        return metrics

    everything = np.ones(pairs.height, bool)
    report = {
        "checkpoint": str(checkpoint),
        "files": [str(f) for f in files],
        "data_sha256": pair_table_hash(pairs, vectors.text_keys),
        "encoder": scorer.fingerprint.get("encoder"),
        "cache_namespace": scorer.namespace.id,
        "n_pairs": pairs.height,
        "embedded_texts": embedded,
        "settings": {
            "bootstrap_samples": settings.bootstrap_samples, "confidence": settings.confidence,
            "calibration_bins": settings.calibration_bins, "group_by": group_by, "seed": config.training.seed,
        },  # fmt: skip
        "overall": summary(everything, config.training.seed),
        "modules": {m: summary(module_of == m, config.training.seed + 1 + i) for i, m in enumerate(modules)},
        "normalization": _normalization(positive, negative, module_of, modules),
        "notes": notes,
    }

    with atomic_dir(out) as folder:
        report["plots"] = write_plots(folder, {m: (positive[module_of == m], negative[module_of == m]) for m in modules}, settings.calibration_bins)
        (folder / "report.json").write_text(json.dumps(report, indent=2))
        (folder / "report.md").write_text(markdown(report))
        config.save(folder / "config.yaml")

    is_validation = report["data_sha256"] == scorer.config.get("val_data_sha256")
    store = is_validation if store_normalization is None else store_normalization
    if store:
        stored = dict(scorer.config, normalization={**report["normalization"], "data_sha256": report["data_sha256"]})
        write_text_atomic(Path(checkpoint) / "config.json", json.dumps(stored, indent=2, default=str))
    return Evaluation(report, terminal_table(report), store)


def _normalization(positive: np.ndarray, negative: np.ndarray, module_of: np.ndarray, modules: Sequence[str]) -> dict:
    """Mean and std of every response's reward (both sides), per module."""
    result = {}
    for m in modules:
        rewards = np.concatenate([positive[module_of == m], negative[module_of == m]])
        if len(rewards) >= 2:
            result[m] = {"mean": float(rewards.mean()), "std": float(rewards.std(ddof=1)), "n_responses": int(len(rewards))}
    return result


def _logistic_baseline(scorer: RewardScorer, config: Config, progress: bool) -> tuple[LogisticBaseline | None, str]:
    """Logistic regression fitted on the checkpoint's own training pairs, which its config.json names
    (the part left for training when validation was carved out of them)."""
    checkpoint = scorer.config
    files = [Path(f) for f in checkpoint.get("train_files") or []]
    absent = [str(f) for f in files if not f.is_file()]
    if not files or absent:
        return None, f"no logistic-regression baseline: the checkpoint's training files are not readable here ({', '.join(absent) or 'none recorded'})"
    train = load_pairs(files, scorer.modules)
    if checkpoint.get("val_file") is None:
        data = checkpoint.get("training_config", {}).get("data", {})
        train, _ = carve_validation(train, data.get("val_fraction", 0.1), data.get("split_seed", 0), data.get("group_by", "task"))
    vectors, _ = scorer.pair_vectors(train, progress=progress)
    note = ""
    if checkpoint.get("train_data_sha256") and pair_table_hash(train, vectors.text_keys) != checkpoint["train_data_sha256"]:
        note = "the logistic-regression baseline was fitted on training files that changed since the checkpoint was trained"
    baseline = LogisticBaseline.fit(vectors, scorer.modules, seed=config.training.seed)
    return baseline, note

