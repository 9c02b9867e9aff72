"""A checkpoint's reward, all of it in one object: its heads, the blend they are part of, and the
view that cuts texts into the pieces the heads read.

    model, record = RewardModel.load("ckpt/")     # the one reader of a checkpoint's reward
    rows = RowTensors.from_pieces(piece_vectors, counts, model.module_index(modules))   # heads/training.py
    out = model.score(rows, contexts, module_texts)   # a RewardOutput, one entry per row:
    out.reward, out.uncertainty        # the members' mean reward and their spread (ddof 0)
    out.members                        # (K, rows): every member's reward, blended
    out.parts                          # each part alone: "heads" (the members' mean), "linear", "tfidf"
    out.round_rewards()                # rounds view: each row's reward split over its module text's pieces

- **Members.** A single-model checkpoint is an ensemble of one (heads/ensemble.py): its uncertainty
  is 0 and its scores are those of the model, bit for bit.
- **Blend** (heads/blend.py). A checkpoint whose reward blends its heads with a linear and a TF-IDF
  part scores each member's heads blended with the same linear and TF-IDF scores. The linear part
  reads each text's mean piece vector (or `pooled`, the mean-pooled vectors the caller has); the
  TF-IDF part reads the texts, so a blend with one needs `contexts` and `module_texts`. In `parts`
  the linear part is NaN on rows of a module it was never fitted on (no score); the blend reads
  its mean there, so the other parts rank those rows.
- **View** (features/views.py). Under the rounds view the heads pool a text's pieces with a learned
  attention, and `round_rewards` splits a reward over the module text's pieces: a piece's share is
  its attention weight (the members' mean) times the reward, so a row's shares sum to its reward.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from data.errors import UserError
from features.views import View, ViewMismatch
from heads.blend import Blended
from heads.ensemble import RewardEnsemble, load_heads
from heads.checkpoint import CheckpointRecord, read_record
from heads.model import CheckpointError, masked_mean
from heads.training import RowTensors


class ScoringError(UserError):
    """A request the scorer cannot answer: unknown module, texts that are not strings, rows of
    unequal length, vectors without the texts a TF-IDF part reads."""


@dataclass
class RewardOutput:
    """What `RewardModel.score` says about each row, from one pass of the heads."""

    reward: np.ndarray  # (rows,) the members' mean
    uncertainty: np.ndarray  # (rows,) the members' population std; 0 for a single model
    members: np.ndarray  # (members, rows) every member's reward, blended
    parts: dict[str, np.ndarray]  # each part of the reward alone, raw: "heads", and "linear" and "tfidf" when blended
    piece_weights: list[np.ndarray] | None  # rounds view: each row's module-text pieces' weights, summing to 1

    def round_rewards(self, rewards: np.ndarray | None = None) -> list[np.ndarray] | None:
        """Each row's reward (`rewards`, by default `reward`) split over its module text's pieces
        by their weights; None unless the checkpoint is of the rounds view."""
        if self.piece_weights is None:
            return None
        rewards = self.reward if rewards is None else rewards
        return [(weights * reward).astype(np.float32) for weights, reward in zip(self.piece_weights, rewards)]


class RewardModel:
    """Members (1..K `MultiModuleRewardModel`s as a `RewardEnsemble`), the blend they are part of
    (or None: the heads alone) and the view their texts are read through."""

    def __init__(self, heads: RewardEnsemble, view: View, blended: Blended | None = None):
        self.heads = heads.eval()
        self.view = view
        self.blended = blended

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu") -> tuple["RewardModel", CheckpointRecord]:
        """The reward model saved in `folder`, and its record (heads/checkpoint.py `read_record`)."""
        record = read_record(folder)
        return cls.from_checkpoint(folder, record, device), record

    @classmethod
    def from_checkpoint(cls, folder: str | Path, record: CheckpointRecord, device: str = "cpu") -> "RewardModel":
        """The reward model of a checkpoint folder whose record is `record`: its heads, its view and
        its blend (`Blended.load`; none recorded: the heads alone). One `CheckpointError` naming the
        file for a part that cannot be read or a view its encoder's vectors are not cut for."""
        folder = Path(folder)
        heads, _ = load_heads(folder, device, record)
        try:
            record.view.check_vectors(record.encoder_fingerprint, f"the encoder {folder} records")
        except ViewMismatch as e:
            raise CheckpointError(str(e)) from None
        blended = Blended.load(folder, record.blend) if record.blend else None
        return cls(heads if isinstance(heads, RewardEnsemble) else RewardEnsemble([heads]), record.view, blended)

    @property
    def modules(self) -> list[str]:
        return list(self.heads.modules_order)

    @property
    def size(self) -> int:
        """How many members; 1 for a single model."""
        return self.heads.size

    def module_index(self, names: Sequence[str]) -> torch.Tensor:
        return self.heads.module_index(list(names))

    @torch.no_grad()
    def score(
        self,
        rows: RowTensors,
        contexts: Sequence[str] | None = None,
        module_texts: Sequence[str] | None = None,
        *,
        pooled: tuple[np.ndarray, np.ndarray] | None = None,
        batch_size: int | None = 4096,
        round_weights: bool = True,
    ) -> RewardOutput:
        """Every row's reward, its parts, the members' spread and (rounds view, `round_weights`) its
        module text's piece weights; the heads run `batch_size` rows at a time (None: all at once).
        `contexts` and `module_texts` are the rows' texts, which a TF-IDF part reads; `pooled` the
        rows' mean-pooled context and module-text vectors, which the linear part reads (by default
        the mean of their pieces)."""
        blended = self.blended
        if blended is not None and blended.tfidf is not None and (contexts is None or module_texts is None):
            raise ScoringError("this checkpoint blends its heads with a TF-IDF model, which reads the texts: pass the rows' texts beside their vectors")
        pool = blended is not None and blended.linear is not None and pooled is None
        head_scores, weights, means = self._run_heads(rows, batch_size, round_weights and self.view.attention, pool)
        parts = {"heads": head_scores.mean(axis=0)}
        members = head_scores
        if blended is not None:
            linear = tfidf = None
            if blended.linear is not None:
                names = np.asarray(self.modules)[rows.module_index.cpu().numpy()]
                linear = blended.linear_scores(*(means if pooled is None else pooled), names)  # a module it was never fitted on: its mean
                parts["linear"] = np.where(np.isin(names, list(blended.linear.weights)), linear, np.nan)  # alone: no score there
            if blended.tfidf is not None:
                parts["tfidf"] = tfidf = blended.tfidf.score_texts(contexts, module_texts)
            members = blended.blend(head_scores, linear, tfidf)
        return RewardOutput(members.mean(axis=0), members.std(axis=0), members, parts, weights)

    def _run_heads(self, rows: RowTensors, batch_size: int | None, round_weights: bool, pool: bool) -> tuple[np.ndarray, list[np.ndarray] | None, tuple[np.ndarray, np.ndarray] | None]:
        """Every member's heads' score of every row (members, rows), `batch_size` rows at a time; with
        `round_weights` each row's module-text piece weights (the members' mean), with `pool` the
        rows' mean piece vectors (context, module text)."""
        scores, weights, means = [], [] if round_weights else None, []
        for index in torch.arange(len(rows), device=rows.module_index.device).split(batch_size or max(len(rows), 1)):
            batch = rows.rows(index)
            context, module_text = batch.pieces()
            members, piece_weights = self.heads.member_pieces(context, module_text, batch.module_index)
            scores.append(members.float().cpu())
            if round_weights:
                counts = module_text[1].sum(dim=1).tolist()
                weights += [w[:count] for w, count in zip(piece_weights.mean(dim=0).float().cpu().numpy(), counts)]
            if pool:
                means.append([masked_mean(*pieces).float().cpu().numpy() for pieces in (context, module_text)])
        head_scores = torch.cat(scores, dim=1).numpy() if scores else np.zeros((self.size, 0), np.float32)
        if not pool:
            return head_scores, weights, None
        empty = np.zeros((0, rows.vectors.shape[1]), np.float32)
        return head_scores, weights, tuple(np.concatenate([m[k] for m in means]) if means else empty for k in (0, 1))
