"""How well rewards rank the responses of preference pairs.

    summary = pair_metrics(r_pos, r_neg, groups=task_of_each_pair, bootstrap_samples=1000)
    summary["pairwise_accuracy"], summary["auc"], summary["separation"]["cohens_d"], summary["ci"]["auc"]

- pairwise accuracy: the share of pairs with r_pos > r_neg; a tie counts wrong.
- AUC: ROC AUC over single responses, each pair's positive side labelled 1 and its negative side 0.
- separation: mean and std of r_pos - r_neg, and Cohen's d between the positive and negative
  score distributions (difference of means over the pooled standard deviation).
- calibration of sigma(r_pos - r_neg) as the probability that a response beats the other. A pair
  is scored in both orders, (sigma(d), label 1) and (sigma(-d), label 0): with one order only every
  label would be 1 and calibration undefined. ECE is the bin-weighted |frequency - confidence|.
- confidence intervals: percentile bootstrap that resamples groups (tasks), not pairs: pairs of
  one task share a context and are not independent draws.
- length-debiased accuracy: the mean of the pairwise accuracy on pairs whose positive side is the
  longer one and on pairs whose positive side is the shorter one; pairs of equal length are left
  out, as no length rule can orient them. "Longer wins" (or "shorter wins") scores exactly 0.5,
  so what lies above 0.5 is ranking that length does not explain.
- best of N: the success rate of the run each task's scorer ranks first, a mean over tasks
  (`task_mean`, with the same bootstrap over tasks).
"""

from collections.abc import Iterator

import numpy as np
from scipy.special import expit
from sklearn.metrics import roc_auc_score, roc_curve


def pairwise_accuracy(positive: np.ndarray, negative: np.ndarray, weights: np.ndarray | None = None) -> float:
    return float(np.average(positive > negative, weights=weights))


def response_auc(positive: np.ndarray, negative: np.ndarray, weights: np.ndarray | None = None) -> float:
    scores = np.concatenate([positive, negative])
    labels = np.concatenate([np.ones(len(positive)), np.zeros(len(negative))])
    both = None if weights is None else np.concatenate([weights, weights])
    return float(roc_auc_score(labels, scores, sample_weight=both))


def response_roc(positive: np.ndarray, negative: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates of the single-response ROC curve."""
    scores = np.concatenate([positive, negative])
    labels = np.concatenate([np.ones(len(positive)), np.zeros(len(negative))])
    fpr, tpr, _ = roc_curve(labels, scores)
    return fpr, tpr


def separation(positive: np.ndarray, negative: np.ndarray) -> dict:
    difference = positive - negative
    pooled = np.sqrt((np.var(positive, ddof=1) + np.var(negative, ddof=1)) / 2) if len(positive) > 1 else 0.0
    return {
        "mean_difference": float(difference.mean()),
        "std_difference": float(difference.std(ddof=1)) if len(difference) > 1 else 0.0,
        "cohens_d": float((positive.mean() - negative.mean()) / pooled) if pooled > 0 else None,
    }


def calibration(positive: np.ndarray, negative: np.ndarray, bins: int = 10) -> dict:
    """ECE and reliability bins of sigma(r_pos - r_neg), each pair scored in both orders."""
    difference = positive - negative
    confidence = np.concatenate([expit(difference), expit(-difference)])  # expit: no overflow for rewards far apart
    outcome = np.concatenate([np.ones(len(difference)), np.zeros(len(difference))])
    which = np.clip((confidence * bins).astype(int), 0, bins - 1)
    reliability, ece = [], 0.0
    for b in range(bins):
        rows = which == b
        n = int(rows.sum())
        if n == 0:
            reliability.append({"low": b / bins, "high": (b + 1) / bins, "n": 0, "confidence": None, "frequency": None})
            continue
        mean_confidence, frequency = float(confidence[rows].mean()), float(outcome[rows].mean())
        ece += n / len(confidence) * abs(frequency - mean_confidence)
        reliability.append({"low": b / bins, "high": (b + 1) / bins, "n": n, "confidence": mean_confidence, "frequency": frequency})
    return {"ece": float(ece), "bins": reliability}


def bootstrap_ci(
    positive: np.ndarray, negative: np.ndarray, groups: np.ndarray, samples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> dict:
    """Percentile intervals of accuracy and AUC over `samples` resamplings of the groups: each
    draws as many groups as there are, with replacement, and weighs every pair by how often its
    group was drawn."""
    _, group_of_pair = np.unique(groups, return_inverse=True)
    n_groups = group_of_pair.max() + 1 if len(group_of_pair) else 0
    if samples <= 0 or n_groups < 2:
        return {"pairwise_accuracy": None, "auc": None, "samples": 0, "groups": int(n_groups), "confidence": confidence}
    correct = (positive > negative).astype(np.float64)
    scores = np.concatenate([positive, negative])
    labels = np.concatenate([np.ones(len(positive)), np.zeros(len(negative))])
    accuracy, auc = [], []
    for drawn in group_draws(n_groups, samples, seed):
        weights = drawn[:, group_of_pair]  # (resamples, pairs)
        accuracy.append(weights @ correct / weights.sum(axis=1))
        auc.append(weighted_auc(scores, labels, np.concatenate([weights, weights], axis=1)))
    return {
        "pairwise_accuracy": percentile_interval(np.concatenate(accuracy), confidence),
        "auc": percentile_interval(np.concatenate(auc), confidence),
        "samples": samples,
        "groups": int(n_groups),
        "confidence": confidence,
    }


def accuracy_difference_ci(
    positive_a: np.ndarray, negative_a: np.ndarray, positive_b: np.ndarray, negative_b: np.ndarray, groups: np.ndarray,
    samples: int = 1000, confidence: float = 0.95, seed: int = 0,
) -> list[float] | None:
    """Percentile interval of accuracy(a) - accuracy(b) on the same pairs, both scored on each
    resample of the groups: a paired bootstrap, so "a beats b by at least x" is read off one
    interval instead of two overlapping ones. None with fewer than 2 groups or no resamples."""
    _, group_of_pair = np.unique(groups, return_inverse=True)
    n_groups = group_of_pair.max() + 1 if len(group_of_pair) else 0
    if samples <= 0 or n_groups < 2:
        return None
    difference = (positive_a > negative_a).astype(np.float64) - (positive_b > negative_b).astype(np.float64)
    per_group = np.bincount(group_of_pair, weights=difference, minlength=n_groups)
    pairs_per_group = np.bincount(group_of_pair, minlength=n_groups).astype(np.float64)
    estimates = [(drawn @ per_group) / (drawn @ pairs_per_group) for drawn in group_draws(n_groups, samples, seed)]
    return percentile_interval(np.concatenate(estimates), confidence)


def group_draws(n_groups: int, samples: int, seed: int = 0) -> Iterator[np.ndarray]:
    """Bootstrap resamples of `n_groups` groups, as float arrays (resamples, groups) of how often
    each group was drawn: each resample draws as many groups as there are, with replacement.
    Yielded 100 resamples at a time, which bounds the pair-weight matrices built from them."""
    rng = np.random.default_rng(seed)
    for start in range(0, samples, 100):
        yield np.stack([np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups) for _ in range(min(100, samples - start))]).astype(np.float64)


def percentile_interval(values: np.ndarray, confidence: float) -> list[float] | None:
    """The central `confidence` interval of bootstrap values, leaving out NaN (resamples where the
    statistic is undefined); None when every resample was."""
    values = values[~np.isnan(values)]
    if not len(values):
        return None
    tail = (1 - confidence) / 2 * 100
    return [float(v) for v in np.percentile(values, [tail, 100 - tail])]


def length_debiased_accuracy(
    positive: np.ndarray,
    negative: np.ndarray,
    positive_length: np.ndarray,
    negative_length: np.ndarray,
    groups: np.ndarray | None = None,
    *,
    bootstrap_samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    sides: tuple[str, str] = ("the longer", "the shorter"),
) -> dict:
    """Mean of the pairwise accuracy where the longer side is the positive one and where it is the
    negative one; equal lengths left out. None, with the reason, when either half has no pair.
    The interval resamples groups; resamples that draw no pair of one half are left out. Any
    per-side quantity can stand for length; `sides` names its two sides in that reason."""
    positive, negative = np.asarray(positive, np.float64), np.asarray(negative, np.float64)
    groups = np.arange(len(positive)) if groups is None else np.asarray(groups)
    longer_won = np.asarray(positive_length) > np.asarray(negative_length)
    shorter_won = np.asarray(positive_length) < np.asarray(negative_length)
    correct = positive > negative
    result = {
        "accuracy": None,
        "ci": None,
        "longer_won": {"n_pairs": int(longer_won.sum()), "pairwise_accuracy": _share(correct[longer_won])},
        "shorter_won": {"n_pairs": int(shorter_won.sum()), "pairwise_accuracy": _share(correct[shorter_won])},
        "equal_length_pairs": int(len(positive) - longer_won.sum() - shorter_won.sum()),
        "why_none": None,
    }
    empty = [name for name, rows in zip(sides, (longer_won, shorter_won)) if not rows.any()]
    if empty:
        result["why_none"] = f"no pair where {' or '.join(empty)} side is the positive one: one half of the mean is undefined"
        return result
    result["accuracy"] = (result["longer_won"]["pairwise_accuracy"] + result["shorter_won"]["pairwise_accuracy"]) / 2
    _, group_of_pair = np.unique(groups, return_inverse=True)
    n_groups = group_of_pair.max() + 1
    if bootstrap_samples > 0 and n_groups >= 2:
        # per group: pairs and right answers in each half, so a resample is a (resamples, groups) product
        def per_group(values: np.ndarray) -> np.ndarray:
            return np.bincount(group_of_pair, weights=values.astype(np.float64), minlength=n_groups)

        halves = [(per_group(rows & correct), per_group(rows)) for rows in (longer_won, shorter_won)]
        estimates = []
        for drawn in group_draws(n_groups, bootstrap_samples, seed):
            with np.errstate(invalid="ignore", divide="ignore"):
                estimates.append(sum((drawn @ right) / (drawn @ total) for right, total in halves) / 2)
        result["ci"] = percentile_interval(np.concatenate(estimates), confidence)
    return result


def task_mean(values: np.ndarray, *, bootstrap_samples: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict:
    """The mean of one value per task (a success rate of a pick), with a bootstrap interval over tasks."""
    values = np.asarray(values, np.float64)
    ci = None
    if bootstrap_samples > 0 and len(values) >= 2:
        ci = percentile_interval(np.concatenate([drawn @ values / len(values) for drawn in group_draws(len(values), bootstrap_samples, seed)]), confidence)
    return {"mean": float(values.mean()) if len(values) else None, "ci": ci}


def _share(correct: np.ndarray) -> float | None:
    return float(correct.mean()) if len(correct) else None


def weighted_auc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC (ties count half) of one set of scores under each row of `weights` (k, n) at once:
    sklearn's `roc_auc_score(labels, scores, sample_weight=w)` for every row w, in one sort."""
    order = np.argsort(scores, kind="stable")
    ranked, positive = scores[order], labels[order].astype(bool)
    w = weights[:, order]
    starts = np.concatenate([[0], np.flatnonzero(np.diff(ranked)) + 1])  # groups of tied scores
    pos = np.add.reduceat(np.where(positive, w, 0.0), starts, axis=1)
    neg = np.add.reduceat(np.where(positive, 0.0, w), starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg  # negative weight strictly below each group
    return (pos * (below + 0.5 * neg)).sum(axis=1) / (pos.sum(axis=1) * neg.sum(axis=1))


def pair_metrics(
    positive: np.ndarray,
    negative: np.ndarray,
    groups: np.ndarray | None = None,
    *,
    bootstrap_samples: int = 1000,
    confidence: float = 0.95,
    calibration_bins: int = 10,
    seed: int = 0,
) -> dict:
    """Every metric above for one set of pairs (one module, or all of them)."""
    positive, negative = np.asarray(positive, np.float64), np.asarray(negative, np.float64)
    if len(positive) == 0:
        return {"n_pairs": 0, "pairwise_accuracy": None, "auc": None, "separation": None, "calibration": None, "ci": None}
    groups = np.arange(len(positive)) if groups is None else np.asarray(groups)
    return {
        "n_pairs": int(len(positive)),
        "n_groups": int(len(np.unique(groups))),
        "pairwise_accuracy": pairwise_accuracy(positive, negative),
        "auc": response_auc(positive, negative),
        "separation": separation(positive, negative),
        "calibration": calibration(positive, negative, calibration_bins),
        "ci": bootstrap_ci(positive, negative, groups, bootstrap_samples, confidence, seed),
    }
