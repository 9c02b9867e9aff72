"""Evaluation recipe: a checkpoint's metrics on pair files beside cheap baselines, and its best-of-N
pick on runs, as a report folder.

    pipeline evaluate ckpt/ splits/test.jsonl --cache embeddings/ --out report/
    pipeline evaluate ckpt/ --runs runs.jsonl --cache embeddings/ --out report/      # runs only

Pairs: scores every pair with the checkpoint's reward (its heads on its encoder's cached vectors,
blended with its linear and TF-IDF parts when it has them; embedding the texts the cache lacks
first, and saying so), computes heads/metrics per module and overall, the length-debiased accuracy
and, when the pairs carry a source, the accuracy per source; scores the same pairs with each part
of a blended reward alone and with the baselines; writes report.json, report.md and PNG plots
atomically. The report says what the reward is made of (`describe_reward`) first. When both
sides of each pair carry their run's source (pairs mined from runs), the source prior is one more
baseline and the source-debiased accuracy takes it out, as the length-debiased accuracy takes out
length.

For an ensemble checkpoint (`train-heads --ensemble K`) the report adds the pairwise accuracy by
quartile of pair uncertainty (the members' std of r_pos - r_neg; heads/ensemble.py), overall and
per module, and whether high uncertainty marks wrong pairs.

Runs (data/runs.py): scores every run of every task with at least 2 runs and reports the success
rate of the run the heads rank first beside a random pick, the shortest and longest run, and the
oracle.

Run on the checkpoint's own validation data (or with `--store-normalization`), it also stores each
module's reward mean and std in the checkpoint's normalization.json, which serving uses to normalise
(heads/checkpoint.py). The training artifacts (config.json, the weights) are never rewritten.
"""

from collections import defaultdict
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from data import UserError, load_pairs
from data.files import atomic_dir, check_output_folder, json_text
from data.guards import check_writable_folder, output_lock
from data.runs import Run, check_module_fields, load_runs
from data.splits import carve_validation
from data.trajectory import render_context, render_module
from features.pairs import pair_table_hash, pair_text_keys, with_text_keys
from heads.baselines import LogisticBaseline, SourcePrior, TfidfBaseline, cosine_scores, length_scores
from heads.blend import PARTS, TFIDF_BLOCKS, blend_weights, describe_reward
from heads.checkpoint import write_normalization
from heads.ensemble import accuracy_by_uncertainty
from heads.metrics import accuracy_difference_ci, bootstrap_ci, length_debiased_accuracy, pair_metrics, pairwise_accuracy, task_mean
from heads.model import CheckpointError
from heads.report import markdown, terminal_table, write_plots
from pipeline.config import Config, EvaluationConfig
from pipeline.evaluate_scoring import cached_pair_vectors, pair_scores
from pipeline.rewards import RewardScorer, checkpoint_normalization, load, normalized

PICKS = ("heads", "random", "shortest", "longest", "oracle")


class EvaluationError(UserError):
    """Nothing to evaluate, or runs that cannot show a best-of-N pick."""


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
    runs_files: Sequence[Path] = (),
    success_threshold: float | None = None,
    overwrite: bool = False,
) -> Evaluation:
    if not files and not runs_files:
        raise EvaluationError("nothing to evaluate: give pair files, runs (--runs RUNS.jsonl), or both")
    if store_normalization and not files:
        raise EvaluationError("storing the reward normalisation needs pair files (the checkpoint's validation pairs); runs alone give none")
    # a report folder this run cannot write is refused before anything is scored; the report and,
    # unless --no-store-normalization, the checkpoint (whose normalization.json may be written)
    # are locked against other runs writing them until this one ends (data/guards.py)
    check_writable_folder(out, "--out", inputs=[checkpoint, *files, *runs_files, cache_dir])
    with ExitStack() as locks:
        locks.enter_context(output_lock(out, "evaluate"))
        if store_normalization is not False:
            locks.enter_context(output_lock(checkpoint, "evaluate", flag="checkpoint", required=False))
        return _evaluate(checkpoint, files, cache_dir, out, config, encoder, store_normalization, progress, runs_files, success_threshold, overwrite)


def _evaluate(checkpoint, files, cache_dir, out, config, encoder, store_normalization, progress, runs_files, success_threshold, overwrite) -> Evaluation:
    check_output_folder(out, REPORT_FILES, "report folder", overwrite)
    scorer = load(checkpoint, cache_dir, encoder=encoder, device=config.training.device, write_cache=True)
    settings = config.evaluation
    report = {
        "checkpoint": str(checkpoint),
        "files": [str(f) for f in files],
        "runs_files": [str(f) for f in runs_files],
        "encoder": scorer.fingerprint.get("encoder"),
        "cache_namespace": scorer.namespace.id,
        "reward": describe_reward(scorer.record),  # what the scores below are made of, in words
        "blend": blend_weights(scorer.record),  # its weights by part; None: the heads alone
        "settings": {
            "bootstrap_samples": settings.bootstrap_samples, "confidence": settings.confidence,
            "calibration_bins": settings.calibration_bins, "group_by": config.data.group_by, "seed": config.training.seed,
        },  # fmt: skip
        "notes": [],
    }
    scores_by_module = {}
    if files:
        pair_report, scores_by_module = _pair_report(scorer, files, config, progress)
        report.update(pair_report)
    if runs_files:
        report["best_of_n"] = best_of_n(scorer, load_runs(runs_files, success_threshold), config)

    with atomic_dir(out) as folder:
        report["plots"] = write_plots(folder, scores_by_module, settings.calibration_bins) if files else []
        (folder / "report.json").write_text(json_text(report, indent=2))
        (folder / "report.md").write_text(markdown(report))
        config.save(folder / "config.yaml")

    is_validation = bool(files) and report["data_sha256"] == scorer.record.val_data_sha256
    store = is_validation if store_normalization is None else store_normalization
    if store:
        write_normalization(checkpoint, {**report["normalization"], "data_sha256": report["data_sha256"]})
    return Evaluation(report, terminal_table(report), store)


# --- pairs -----------------------------------------------------------------------------------


def _pair_report(scorer: RewardScorer, files: Sequence[Path], config: Config, progress: bool) -> tuple[dict, dict]:
    """The report's pair parts (overall, modules, sources, normalization, ...) and each module's
    (r_pos, r_neg) for the plots."""
    modules = scorer.modules
    pairs = with_text_keys(load_pairs(files, modules))
    vectors, embedded = cached_pair_vectors(scorer, pairs, progress=progress)
    scored_positive, scored_negative = pair_scores(scorer, vectors, pairs)
    positive, negative = scored_positive.reward, scored_negative.reward
    notes = [f"{embedded} texts had no cached vector and were embedded with the checkpoint's encoder."] if embedded else []
    blend = scorer.blend
    # each part of a blended reward alone: the heads (the members' mean) and the linear and TF-IDF
    # parts the checkpoint holds (those of weight above 0); none when the reward is the heads alone
    parts = {name: (scored_positive.parts[name], scored_negative.parts[name]) for name in scored_positive.parts} if blend is not None else {}
    notes += _blend_note(blend)
    lengths = {
        "module_text": length_scores(pairs),
        "context": (pairs["positive_context"].str.len_chars().to_numpy(), pairs["negative_context"].str.len_chars().to_numpy()),
    }
    baselines = _baselines(scorer, pairs, vectors, parts, lengths, config, progress, notes)
    group_by = config.data.group_by
    groups = pairs[group_by].to_numpy() if group_by in pairs.columns else pairs["task"].to_numpy()
    module_of = vectors.target_module
    part_weights = dict(zip(PARTS, blend.blend.weights)) if blend is not None else {}
    metrics = _PairMetrics(positive, negative, groups, lengths, parts, part_weights, baselines, config.evaluation)
    seed = config.training.seed
    report = {
        "data_sha256": pair_table_hash(pairs, vectors.text_keys),
        "n_pairs": pairs.height,
        "embedded_texts": embedded,
        "overall": metrics.summary(np.ones(pairs.height, bool), seed),
        "modules": {m: metrics.summary(module_of == m, seed + 1 + i) for i, m in enumerate(modules)},
        "sources": _sources(pairs, positive, negative, groups, config, seed),
        "normalization": _normalization(positive, negative, module_of, modules),
        "notes": notes,
    }
    if scorer.members > 1:
        report["uncertainty"] = _uncertainty(scored_positive.members - scored_negative.members, positive, negative, groups, module_of, modules, config)
    return report, {m: (positive[module_of == m], negative[module_of == m]) for m in modules}


def _refitted_tfidf(blend) -> bool:
    """A TF-IDF part that reads more than evaluate's plain TF-IDF is not that baseline: it is refitted."""
    return blend is not None and blend.tfidf is not None and blend.tfidf.blocks != TFIDF_BLOCKS


def _blend_note(blend) -> list[str]:
    """For a blended reward, the report's note of its weights and of which baselines are its parts."""
    if blend is None:
        return []
    weights = ", ".join(f"{name} {w:g}" for name, w in zip(PARTS, blend.blend.weights))
    return [
        f"The reward blends the heads with their linear and TF-IDF parts at weights {weights} (chosen on held-out pairs by train-heads); "
        + (
            "the logistic-regression and TF-IDF baselines below are those parts alone (when their weight is above 0)."
            if not _refitted_tfidf(blend)
            else "the logistic-regression baseline below is the linear part alone (when its weight is above 0); the TF-IDF part also reads "
            "the context's last round, so the TF-IDF baseline is a plain one of the context and module text, fitted on the training pairs."
        )
    ]


def _baselines(scorer: RewardScorer, pairs: pl.DataFrame, vectors, parts: dict, lengths: dict, config: Config, progress: bool, notes: list[str]) -> dict:
    """(r_pos, r_neg) of every pair by each baseline: length, cosine, and those fitted on the
    checkpoint's training pairs (TF-IDF, logistic regression, source prior), unless the blend
    carries them as its parts. What could not be fitted, and why, goes to `notes`."""
    blend = scorer.blend
    baselines = {"length": lengths["module_text"], "cosine": cosine_scores(vectors)}
    # the baselines fitted on the checkpoint's training pairs, unless the blend carries them
    own_tfidf = blend is not None and blend.tfidf is not None and not _refitted_tfidf(blend)
    own_linear = blend is not None and blend.linear is not None
    fitted = [name for name, wanted in (("TF-IDF", not own_tfidf), ("logistic-regression", config.evaluation.logistic_baseline and not own_linear)) if wanted]
    fitted += ["source-prior"] if SourcePrior.applies(pairs) else []
    train, note = _training_pairs(scorer, fitted) if fitted else (None, "")
    notes += [note] if note else []
    if own_tfidf:  # the checkpoint's own part: no refit, exactly what the reward blends
        baselines["tfidf"] = parts["tfidf"]
    elif train is not None:
        baselines["tfidf"] = TfidfBaseline.fit(train, seed=config.training.seed).scores(pairs)
    if own_linear:
        baselines["logistic_regression"] = parts["linear"]
    elif not config.evaluation.logistic_baseline:
        notes.append("no logistic-regression baseline: evaluation.logistic_baseline is off in the config")
    elif train is not None:
        train_vectors, _ = cached_pair_vectors(scorer, train, progress=progress)
        baselines["logistic_regression"] = LogisticBaseline.fit(train_vectors, scorer.modules, seed=config.training.seed).scores(vectors)
    if SourcePrior.applies(pairs) and train is not None:
        if SourcePrior.applies(train):
            baselines["source"] = SourcePrior.fit(train).scores(pairs)
        else:
            notes.append("no source-prior baseline: the checkpoint's training pairs carry no positive_source and negative_source")
    return baselines


@dataclass
class _PairMetrics:
    """The reward's metrics on a subset of the pairs (all, a module's), beside each part of a blended
    reward alone and each baseline, with the reward's lead over them."""

    positive: np.ndarray
    negative: np.ndarray
    groups: np.ndarray
    lengths: dict[str, tuple[np.ndarray, np.ndarray]]  # module_text, context: (positive's, negative's)
    parts: dict[str, tuple[np.ndarray, np.ndarray]]
    part_weights: dict[str, float]
    baselines: dict[str, tuple[np.ndarray, np.ndarray]]
    settings: EvaluationConfig

    def debiased(self, p: np.ndarray, n: np.ndarray, rows: np.ndarray, seed: int) -> dict:
        settings, groups = self.settings, self.groups
        return {
            kind: length_debiased_accuracy(
                p[rows], n[rows], long_p[rows], long_n[rows], groups[rows], bootstrap_samples=settings.bootstrap_samples,
                confidence=settings.confidence, seed=seed,
            )  # fmt: skip
            for kind, (long_p, long_n) in self.lengths.items()
        }

    def source_debiased(self, rows: np.ndarray, seed: int) -> dict:
        """The length-debiased accuracy's mean of two halves, with the source prior for length:
        the pairs whose positive side has the source that won more often in training, and the
        pairs whose negative side has it (equal priors left out)."""
        settings, positive, negative = self.settings, self.positive, self.negative
        prior_p, prior_n = self.baselines["source"]
        result = length_debiased_accuracy(
            positive[rows], negative[rows], prior_p[rows], prior_n[rows], self.groups[rows], bootstrap_samples=settings.bootstrap_samples,
            confidence=settings.confidence, seed=seed, sides=("the favoured source's", "the other source's"),
        )  # fmt: skip
        return {
            "accuracy": result["accuracy"], "ci": result["ci"], "favoured_won": result["longer_won"],
            "favoured_lost": result["shorter_won"], "equal_prior_pairs": result["equal_length_pairs"], "why_none": result["why_none"],
        }  # fmt: skip

    def alone(self, p: np.ndarray, n: np.ndarray, rows: np.ndarray, seed: int) -> tuple[dict | None, np.ndarray]:
        """Other scores of the same pairs (a baseline, a part of the reward): their accuracy and AUC
        with intervals on the `rows` they score (NaN: no score), and those rows; None when they
        score none of them."""
        settings, groups = self.settings, self.groups
        usable = rows & ~np.isnan(p)
        if not usable.any():
            return None, usable
        base = pair_metrics(
            p[usable], n[usable], groups[usable], bootstrap_samples=settings.bootstrap_samples, confidence=settings.confidence, seed=seed
        )  # fmt: skip
        return {k: base[k] for k in ("pairwise_accuracy", "auc", "n_pairs", "ci")}, usable

    def summary(self, rows: np.ndarray, seed: int) -> dict:
        settings, positive, negative = self.settings, self.positive, self.negative
        metrics = pair_metrics(
            positive[rows], negative[rows], self.groups[rows], bootstrap_samples=settings.bootstrap_samples,
            confidence=settings.confidence, calibration_bins=settings.calibration_bins, seed=seed,
        )  # fmt: skip
        metrics["length_debiased"] = self.debiased(positive, negative, rows, seed)
        if "source" in self.baselines:
            metrics["source_debiased"] = self.source_debiased(rows, seed)
        metrics["parts"] = {}  # each part of a blended reward alone, with its weight in the reward
        for name, (p, n) in self.parts.items():
            part, _ = self.alone(p, n, rows, seed)
            metrics["parts"][name] = None if part is None else {"weight": self.part_weights[name], **part}
        metrics["baselines"], metrics["above_baselines"] = {}, {}
        for name, (p, n) in self.baselines.items():
            base, usable = self.alone(p, n, rows, seed)
            if base is None:
                metrics["baselines"][name] = metrics["above_baselines"][name] = None
                continue
            metrics["baselines"][name] = {**base, "length_debiased": self.debiased(p, n, usable, seed)}
            metrics["above_baselines"][name] = None if metrics["n_pairs"] == 0 else self.lead(metrics, base, p, n, usable, seed)
        return metrics

    def lead(self, metrics: dict, base: dict, p: np.ndarray, n: np.ndarray, usable: np.ndarray, seed: int) -> dict:
        """The reward's accuracy and AUC minus a baseline's; on the baseline's pairs, the lead's
        interval, the reward and the baseline resampled together."""
        settings, positive, negative = self.settings, self.positive, self.negative
        return {
            **{k: metrics[k] - base[k] for k in ("pairwise_accuracy", "auc")},
            "pairwise_accuracy_ci": accuracy_difference_ci(
                positive[usable], negative[usable], p[usable], n[usable], self.groups[usable], settings.bootstrap_samples, settings.confidence, seed
            ),
        }


def _uncertainty(differences: np.ndarray, positive: np.ndarray, negative: np.ndarray, groups: np.ndarray, module_of: np.ndarray, modules: Sequence[str], config: Config) -> dict:
    """Accuracy by quartile of pair uncertainty (the members' std of r_pos - r_neg), overall and
    per module: does high uncertainty mark the pairs the ensemble gets wrong?"""
    settings, seed = config.evaluation, config.training.seed
    uncertainty = differences.std(axis=0)

    def by_quartile(rows: np.ndarray, seed: int) -> dict:
        return accuracy_by_uncertainty(
            positive[rows], negative[rows], uncertainty[rows], groups[rows],
            bootstrap_samples=settings.bootstrap_samples, confidence=settings.confidence, seed=seed,
        )  # fmt: skip

    everything = np.ones(len(positive), bool)
    return {
        "members": int(differences.shape[0]),
        "overall": by_quartile(everything, seed),
        "modules": {m: by_quartile(module_of == m, seed + 1 + i) for i, m in enumerate(modules) if (module_of == m).any()},
    }


def pair_sources(pairs: pl.DataFrame) -> tuple[str, np.ndarray] | None:
    """Which column(s) say where each pair came from, and each pair's source; None without any.

    A top-level `source` column names the pair's source. Pairs mined from runs (`pipeline pairs`)
    carry each side's run source instead, `positive_source` and `negative_source`: a pair whose
    sides agree has that source, one whose sides differ is `<positive> vs <negative>`, and a side
    without one is `(none)`. Synthetic pairs carry no source (their `task_family` is a kind of
    task, not where the data came from)."""
    if "source" in pairs.columns:
        return "source", pairs["source"].fill_null("(none)").cast(pl.String).to_numpy()
    sides = [c for c in ("positive_source", "negative_source") if c in pairs.columns]
    if not sides:
        return None
    positive = pairs["positive_source"] if "positive_source" in pairs.columns else pl.Series([None] * pairs.height, dtype=pl.String)
    negative = pairs["negative_source"] if "negative_source" in pairs.columns else pl.Series([None] * pairs.height, dtype=pl.String)
    positive, negative = positive.cast(pl.String).fill_null("(none)"), negative.cast(pl.String).fill_null("(none)")
    source = [p if p == n else f"{p} vs {n}" for p, n in zip(positive, negative)]
    return " and ".join(sides), np.array(source, dtype=object)


def _sources(pairs: pl.DataFrame, positive: np.ndarray, negative: np.ndarray, groups: np.ndarray, config: Config, seed: int) -> dict | None:
    """Pairwise accuracy with its interval per source value (`pair_sources`)."""
    found = pair_sources(pairs)
    if found is None:
        return None
    column, source = found
    settings = config.evaluation
    values = {}
    for value in sorted(set(source)):
        rows = source == value
        ci = bootstrap_ci(positive[rows], negative[rows], groups[rows], settings.bootstrap_samples, settings.confidence, seed)
        values[value] = {
            "n_pairs": int(rows.sum()),
            "pairwise_accuracy": pairwise_accuracy(positive[rows], negative[rows]),
            "ci": ci["pairwise_accuracy"],
        }
    return {"column": column, "values": values}


def _normalization(positive: np.ndarray, negative: np.ndarray, module_of: np.ndarray, modules: Sequence[str]) -> dict:
    """Mean and std of every response's reward (both sides), per module."""
    result = {}
    for m in modules:
        rewards = np.concatenate([positive[module_of == m], negative[module_of == m]])
        if len(rewards) >= 2:
            result[m] = {"mean": float(rewards.mean()), "std": float(rewards.std(ddof=1)), "n_responses": int(len(rewards))}
    return result


def _training_pairs(scorer: RewardScorer, baselines: list[str]) -> tuple[pl.DataFrame | None, str]:
    """The checkpoint's own training pairs, which its record names (the part left for training when
    validation was carved out of them), for the `baselines` fitted on them; or None and why not."""
    checkpoint = scorer.record
    files = [Path(f) for f in checkpoint.train_files]
    absent = [str(f) for f in files if not f.is_file()]
    if not files or absent:
        return None, f"no {' or '.join(baselines)} baseline: the checkpoint's training files are not readable here ({', '.join(absent) or 'none recorded'})"
    train = with_text_keys(load_pairs(files, scorer.modules))  # for the hash below and both baselines
    if checkpoint.val_file is None:
        data = checkpoint.training_config.get("data", {})
        train, _ = carve_validation(train, data.get("val_fraction", 0.1), data.get("split_seed", 0), data.get("group_by", "task"))
    note = ""
    if checkpoint.train_data_sha256 and pair_table_hash(train, pair_text_keys(train)) != checkpoint.train_data_sha256:
        note = f"the {' and '.join(baselines)} baseline{'s were' if len(baselines) > 1 else ' was'} fitted on training files that changed since the checkpoint was trained"
    return train, note


# --- runs ------------------------------------------------------------------------------------


def best_of_n(scorer: RewardScorer, runs: Sequence[Run], config: Config) -> dict:
    """Success rate of the run each pick chooses per task, over tasks with at least 2 runs.

    A run's reward is the mean of its modules' rewards over the modules it wrote text for, each
    normalised with the checkpoint's per-module mean and std when it stores them: runs write text
    for different modules, and a sum would favour runs that touch more of them; normalising keeps
    a head with a wider raw scale from outvoting the others. Picks, each the expected success rate
    of its choice (ties among the chosen runs averaged, as a random tie-break would):

    - heads: the run of highest reward; random: any run (the task's success rate, the base rate);
    - shortest / longest: the run with the fewest / most characters rendered (`render_context`);
    - oracle: a successful run whenever the task has one.
    """
    modules, module_fields = scorer.modules, config.data.module_fields
    check_module_fields(modules, module_fields)
    by_task: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for run in runs:
        by_task[run.task_key].append(run)
    tasks = [sorted(task_runs, key=lambda run: run.run_id) for _, task_runs in sorted(by_task.items()) if len(task_runs) >= 2]
    if not tasks:
        raise EvaluationError(
            f"no task has at least 2 runs ({len(runs)} runs over {len(by_task)} tasks): best-of-N picks one run among "
            "several of the same task; give several runs per task (runs are grouped by task_id and task)"
        )
    used = [run for task_runs in tasks for run in task_runs]
    contexts = [render_context(run.task, run.rounds) for run in used]
    # only modules whose heads were trained: an untrained head's score would only add noise to the run's
    rows = [(i, m, render_module(run.rounds, module_fields[m])) for i, run in enumerate(used) for m in scorer.trained_modules]
    rows = [row for row in rows if row[2]]
    encoded_before = scorer.encoded
    rewards = scorer.rewards([contexts[i] for i, _, _ in rows], [text for _, _, text in rows], [m for _, m, _ in rows]).raw
    try:
        normalization = checkpoint_normalization(scorer.record, scorer.modules, scorer.folder)
    except CheckpointError:  # none stored
        normalization = {}
    if all(m in normalization for _, m, _ in rows):
        rewards = normalized(rewards, [m for _, m, _ in rows], normalization)
        aggregate = "mean over the trained modules a run wrote text for of the module's normalised reward (r - mean) / std"
    else:
        aggregate = "mean over the trained modules a run wrote text for of the module's raw reward (the checkpoint stores no normalisation for every one of them)"
    run_of_row = np.array([i for i, _, _ in rows], dtype=np.int64)
    counts = np.bincount(run_of_row, minlength=len(used))
    with np.errstate(invalid="ignore", divide="ignore"):
        run_reward = np.bincount(run_of_row, weights=rewards.astype(np.float64), minlength=len(used)) / counts  # NaN: no text

    succeeded = np.array([run.succeeded for run in used], np.float64)
    length = np.array([len(context) for context in contexts], np.float64)
    picks = {pick: [] for pick in PICKS}
    start = 0
    for task_runs in tasks:
        rows_of_task = slice(start, start + len(task_runs))
        start += len(task_runs)
        success, reward, chars = succeeded[rows_of_task], np.nan_to_num(run_reward[rows_of_task], nan=-np.inf), length[rows_of_task]
        picks["heads"].append(success[reward == reward.max()].mean())
        picks["random"].append(success.mean())
        picks["shortest"].append(success[chars == chars.min()].mean())
        picks["longest"].append(success[chars == chars.max()].mean())
        picks["oracle"].append(success.max())
    settings = config.evaluation
    return {
        "tasks": len(tasks),
        "runs": len(used),
        "left_out": {"tasks": len(by_task) - len(tasks), "runs": len(runs) - len(used), "why": "tasks with a single run: nothing to pick from"},
        "runs_without_module_text": int((counts == 0).sum()),
        "embedded_texts": scorer.encoded - encoded_before,
        "reward": aggregate,
        "success_rate": {
            pick: task_mean(np.array(values), bootstrap_samples=settings.bootstrap_samples, confidence=settings.confidence, seed=config.training.seed)
            for pick, values in picks.items()
        },
    }
