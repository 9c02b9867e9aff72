"""Ensembles of reward heads: K members, each trained on a bootstrap resample of the training
tasks; the reward is the members' mean and its uncertainty their standard deviation.

    fits = train_ensemble(train, val, groups=train_tasks, dimension=384, modules=MODULES, setting=setting, recipe=recipe, members=5)
    ensemble = RewardEnsemble([fit.model for fit in fits])
    ensemble(e_ctx, e_mod, module_index)                 # (N,) the mean of the members' rewards
    ensemble.member_scores(e_ctx, e_mod, module_index)   # (K, N)
    model, record = load_heads("ckpt/")                  # a single-model or an ensemble checkpoint

- **Bootstrap over tasks.** Member k draws as many tasks as the training data has, with replacement,
  from a generator seeded by (seed, k), and trains on all the pairs of every drawn task (twice if
  drawn twice). Pairs of one task share a context, so resampling pairs would understate how much
  the heads depend on which tasks they saw. Each member validates on the untouched validation split
  and stops early on its own.
- **Uncertainty** is the population standard deviation (ddof = 0) of the members' rewards: for one
  member it is 0, so a single-model checkpoint is an ensemble of one with uncertainty 0.
- **Checkpoint.** One folder as for a single model: `heads.safetensors` with every member's weights
  under `members.<k>.` (`members.0.heads.planner.mlp.0.weight`, ...) and `config.json` with
  `"ensemble": K` (1 for a single model; heads/checkpoint.py writes it).
- **By uncertainty quartile** (`accuracy_by_uncertainty`): a pair's uncertainty is the standard
  deviation across members of r_pos − r_neg; pairs are cut into quartiles of it and each quartile's
  pairwise accuracy (of the mean reward) is reported with its interval, to see whether the pairs the
  members disagree on are the ones the ensemble gets wrong.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from heads.fitting import Fit, HeadSetting, TrainingRecipe, fit_heads
from heads.checkpoint import CheckpointRecord, read_record
from heads.model import MultiModuleRewardModel, load_weights
from heads.training import PairTensors


class RewardEnsemble(nn.Module):
    """K `MultiModuleRewardModel`s of the same modules and dimension; scores are their mean."""

    def __init__(self, members: Sequence[MultiModuleRewardModel]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        first = members[0]
        if any(m.modules_order != first.modules_order or m.dimension != first.dimension for m in members):
            raise ValueError("ensemble members must have the same modules and dimension")
        self.members = nn.ModuleList(members)
        self.dimension, self.modules_order = first.dimension, list(first.modules_order)
        self.head, self.dropout, self.pooling = first.head, first.dropout, first.pooling

    @property
    def size(self) -> int:
        return len(self.members)

    def forward(self, context: torch.Tensor, module_text: torch.Tensor, module_index: torch.Tensor) -> torch.Tensor:
        return self.member_scores(context, module_text, module_index).mean(dim=0)

    def member_scores(self, context: torch.Tensor, module_text: torch.Tensor, module_index: torch.Tensor) -> torch.Tensor:
        """(K, N): every member's reward for every row."""
        return torch.stack([member(context, module_text, module_index) for member in self.members])

    def score_pieces(self, context, module_text, module_index) -> tuple[torch.Tensor, torch.Tensor]:
        """`MultiModuleRewardModel.score_pieces` of the ensemble: the members' mean score, and each
        module-text piece's mean weight (its share of the mean reward under the rounds view)."""
        scores, weights = self.member_pieces(context, module_text, module_index)
        return scores.mean(dim=0), weights.mean(dim=0)

    def member_pieces(self, context, module_text, module_index) -> tuple[torch.Tensor, torch.Tensor]:
        """(K, N) rewards and (K, N, L) piece weights of every member, from pieces."""
        scored = [member.score_pieces(context, module_text, module_index) for member in self.members]
        return torch.stack([s for s, _ in scored]), torch.stack([w for _, w in scored])

    def module_index(self, names: Sequence[str]) -> torch.Tensor:
        return self.members[0].module_index(names)


def load_heads(folder: str | Path, device: str = "cpu", record: CheckpointRecord | None = None) -> tuple[MultiModuleRewardModel | RewardEnsemble, CheckpointRecord]:
    """The heads saved in `folder` (a single model or an ensemble, as its record says) and that
    record (heads/checkpoint.py), both checked as `read_record` and `load_weights` check them
    (`record`: the folder's, when the caller has read it already). No pickle: safetensors only."""
    folder = Path(folder)
    record = read_record(folder) if record is None else record
    size = record.ensemble
    model = MultiModuleRewardModel.from_record(record) if size == 1 else RewardEnsemble([MultiModuleRewardModel.from_record(record) for _ in range(size)])
    load_weights(model, folder, device)
    return model.to(device), record


def bootstrap_task_rows(groups: np.ndarray, member: int, seed: int = 0) -> np.ndarray:
    """Row indices of member `member`'s training data: as many tasks as `groups` holds, drawn with
    replacement (generator seeded by (seed, member)), each with all its rows, in drawing order."""
    tasks, inverse = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    rows_of = [np.flatnonzero(inverse == t) for t in range(len(tasks))]
    drawn = np.random.default_rng([seed, member]).integers(0, len(tasks), size=len(tasks))
    return np.concatenate([rows_of[t] for t in drawn])


def train_ensemble(
    train: PairTensors,
    val: PairTensors,
    groups: np.ndarray,
    dimension: int,
    modules: Sequence[str],
    setting: HeadSetting,
    recipe: TrainingRecipe,
    members: int,
    *,
    device: str = "cpu",
    say=None,
) -> list[Fit]:
    """K fits of `setting`, member k on `bootstrap_task_rows(groups, k, recipe.seed)` of `train`,
    seeded with recipe.seed + k, each validated (and stopped early) on `val`."""
    fits = []
    for k in range(members):
        rows = torch.from_numpy(bootstrap_task_rows(groups, k, recipe.seed)).to(train.module_index.device)
        fit = fit_heads(train.rows(rows), val, dimension, modules, setting, recipe, seed=recipe.seed + k, device=device)
        fits.append(fit)
        if say is not None:
            v = fit.validation
            say(f"member {k + 1} of {members}: {len(rows)} pairs of resampled tasks, best epoch {fit.best_epoch}, "
                f"val loss {v['loss']:.4f}, val pairwise accuracy {v['pairwise_accuracy']:.3f} ({fit.seconds:.1f} s)")  # fmt: skip
    return fits


def accuracy_by_uncertainty(
    positive: np.ndarray,
    negative: np.ndarray,
    uncertainty: np.ndarray,
    groups: np.ndarray,
    *,
    bootstrap_samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """Pairwise accuracy of (positive, negative) per quartile of `uncertainty` (lowest first), each
    with its pair count, uncertainty range and bootstrap interval over groups; the AUC of
    uncertainty as a detector of wrong pairs (0.5: it tells nothing; above: high uncertainty marks
    wrong pairs); and a verdict. Quartiles are cut at the quartiles of the values (ties stay in one
    quartile, so counts may differ). Pairs whose two sides every member scores alike (the same
    vectors, e.g. texts equal after truncation) are left out and counted."""
    from sklearn.metrics import roc_auc_score  # here, not at the top: train-heads never needs scikit-learn

    from heads.metrics import bootstrap_ci, pairwise_accuracy

    uncertainty = np.asarray(uncertainty, np.float64)
    # both sides scored alike by every member (their texts are the same after truncation): a tie
    # counts wrong and has no spread, so it would sit in the lowest quartile and say nothing
    tied = (positive == negative) & (uncertainty == 0)
    positive, negative, uncertainty, groups = positive[~tied], negative[~tied], uncertainty[~tied], np.asarray(groups)[~tied]
    wrong = ~(positive > negative)
    edges = np.quantile(uncertainty, [0.25, 0.5, 0.75]) if len(uncertainty) else np.zeros(3)
    which = np.searchsorted(edges, uncertainty, side="left")  # 0..3
    quartiles = []
    for q in range(4):
        rows = which == q
        n = int(rows.sum())
        entry = {"quartile": q + 1, "n_pairs": n, "uncertainty_low": None, "uncertainty_high": None, "pairwise_accuracy": None, "ci": None}
        if n:
            ci = bootstrap_ci(positive[rows], negative[rows], groups[rows], bootstrap_samples, confidence, seed + q)
            entry.update(
                uncertainty_low=float(uncertainty[rows].min()), uncertainty_high=float(uncertainty[rows].max()),
                pairwise_accuracy=pairwise_accuracy(positive[rows], negative[rows]), ci=(ci or {}).get("pairwise_accuracy"),
            )  # fmt: skip
        quartiles.append(entry)
    detects = float(roc_auc_score(wrong, uncertainty)) if 0 < wrong.sum() < len(wrong) else None
    return {
        "pair_uncertainty": "std across members (ddof 0) of r_pos - r_neg",
        "mean_uncertainty": float(uncertainty.mean()) if len(uncertainty) else None,
        "tied_pairs_left_out": int(tied.sum()),
        "quartiles": quartiles,
        "wrong_pairs": int(wrong.sum()),
        "auc_uncertainty_for_wrong": detects,
        "verdict": _verdict(quartiles[0], quartiles[-1], detects),
    }


def _verdict(low: dict, high: dict, detects: float | None) -> str:
    if low["pairwise_accuracy"] is None or high["pairwise_accuracy"] is None:
        return "too few pairs to tell"
    gap = low["pairwise_accuracy"] - high["pairwise_accuracy"]
    apart = low["ci"] is not None and high["ci"] is not None and high["ci"][1] < low["ci"][0]
    if gap > 0 and apart:
        return f"yes: the most uncertain quarter of pairs is {gap:.3f} less accurate than the least uncertain, intervals apart"
    if gap > 0:
        return f"weakly: the most uncertain quarter is {gap:.3f} less accurate than the least uncertain, but the intervals overlap"
    return f"no: the most uncertain quarter is not less accurate than the least uncertain ({-gap:+.3f})"
