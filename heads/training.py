"""Training pieces shared by the stage recipes: pair tensors, the warmup schedule, one epoch of
heads over cached vectors, per-module validation, and early stopping on the best epoch."""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.optim.lr_scheduler import LambdaLR

from features.pairs import PairVectors
from features.views import PieceFeatures, View
from heads.model import MultiModuleRewardModel, bradley_terry_loss, module_index


@dataclass
class PairTensors:
    """Pairs as text ids into one matrix of piece vectors (features.views.PieceFeatures on a
    device): `vectors` (pieces, d), each text's piece rows `piece_ids[offsets[t]:offsets[t + 1]]`,
    each pair's four text ids (`pair_texts`, columns positive context, positive module text,
    negative context, negative module text) and its module's head. A batch gathers its pieces when
    it is scored; nothing is copied per pair."""

    vectors: torch.Tensor
    offsets: torch.Tensor
    piece_ids: torch.Tensor
    pair_texts: torch.Tensor
    module_index: torch.Tensor

    @classmethod
    def from_pieces(cls, features: PieceFeatures, model: MultiModuleRewardModel | Sequence[str], device: str = "cpu") -> "PairTensors":
        """`model`: the heads whose module order the pairs' head indices follow, or that order itself."""
        vectors = features.vectors
        if isinstance(vectors, np.memmap) and device == "cpu":
            # stays on disk: batches are gathered from the page cache, never the whole matrix
            matrix = torch.from_numpy(np.asarray(vectors))
        else:
            matrix = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32)).to(device)
        return cls(
            matrix,
            torch.from_numpy(np.asarray(features.offsets, np.int64)).to(device),
            torch.from_numpy(np.asarray(features.piece_ids, np.int64)).to(device),
            torch.from_numpy(np.asarray(features.pair_texts, np.int64)).to(device),
            _module_index(model, features.target_module.tolist()).to(device),
        )

    @classmethod
    def from_vectors(cls, vectors: PairVectors, model: MultiModuleRewardModel, device: str = "cpu") -> "PairTensors":
        """From pooled pair vectors: their pieces when they carry them, else each text one piece."""
        if vectors.pieces is not None:
            return cls.from_pieces(vectors.pieces, model, device)
        n = len(vectors.target_module)
        matrix = np.concatenate([vectors.positive_context, vectors.positive_module_text, vectors.negative_context, vectors.negative_module_text])
        texts = np.arange(4 * n, dtype=np.int64).reshape(4, n).T
        features = PieceFeatures(matrix, np.arange(4 * n + 1), np.arange(4 * n), texts, vectors.target_module, vectors.text_keys, View())
        return cls.from_pieces(features, model, device)

    def __len__(self) -> int:
        return self.module_index.shape[0]

    def rows(self, index: torch.Tensor) -> "PairTensors":
        return PairTensors(self.vectors, self.offsets, self.piece_ids, self.pair_texts[index], self.module_index[index])

    def pieces(self, texts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return gather_pieces(self.vectors, self.offsets, self.piece_ids, texts)

    def side(self, k: int) -> "RowTensors":
        """The pairs' positive (k = 0) or negative (k = 1) sides as rows to score."""
        return RowTensors(self.vectors, self.offsets, self.piece_ids, self.pair_texts[:, 2 * k], self.pair_texts[:, 2 * k + 1], self.module_index)

    def scores(self, model: MultiModuleRewardModel) -> tuple[torch.Tensor, torch.Tensor]:
        columns = [self.pieces(self.pair_texts[:, j]) for j in range(4)]
        return (
            model.score_pieces(columns[0], columns[1], self.module_index)[0],
            model.score_pieces(columns[2], columns[3], self.module_index)[0],
        )

    def joint_scores(self, model: MultiModuleRewardModel) -> tuple[torch.Tensor, torch.Tensor]:
        """`scores` with both sides through the heads in one call: half the calls, and matrix
        products twice as tall: a cheaper CPU epoch (docs/results/speed.md, bench/search.py).
        For training only: a row's score can differ in the last bits with its place in the product,
        so two identical sides might no longer tie, and validation keeps `scores`."""
        n = len(self)
        context = self.pieces(torch.cat([self.pair_texts[:, 0], self.pair_texts[:, 2]]))
        module_text = self.pieces(torch.cat([self.pair_texts[:, 1], self.pair_texts[:, 3]]))
        scores = model.score_pieces(context, module_text, torch.cat([self.module_index, self.module_index]))[0]
        return scores[:n], scores[n:]


def _module_index(model: MultiModuleRewardModel | Sequence[str], names: Sequence[str]) -> torch.Tensor:
    return module_index(model if isinstance(model, (list, tuple)) else model.modules_order, names)


@dataclass
class RowTensors:
    """Rows to score, in the layout of `PairTensors`: each row a context and a module text (text
    ids into one matrix of piece vectors) and its module's head (`module_index`)."""

    vectors: torch.Tensor
    offsets: torch.Tensor
    piece_ids: torch.Tensor
    context: torch.Tensor
    module_text: torch.Tensor
    module_index: torch.Tensor

    @classmethod
    def from_pieces(cls, vectors: torch.Tensor, counts: list[int], module_index: torch.Tensor) -> "RowTensors":
        """Rows of `vectors` listed text by text, the contexts of all rows first, then their module
        texts, text t having `counts[t]` pieces."""
        n = len(module_index)
        offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64))
        return cls(vectors, offsets, torch.arange(len(vectors)), torch.arange(n), torch.arange(n, 2 * n), module_index)

    def to(self, device: str) -> "RowTensors":
        return RowTensors(*(t.to(device) for t in (self.vectors, self.offsets, self.piece_ids, self.context, self.module_text, self.module_index)))

    def __len__(self) -> int:
        return self.module_index.shape[0]

    def rows(self, index: torch.Tensor) -> "RowTensors":
        return RowTensors(self.vectors, self.offsets, self.piece_ids, self.context[index], self.module_text[index], self.module_index[index])

    def pieces(self) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """The rows' context and module-text pieces, each padded (N, L, d) with its mask (N, L)."""
        return gather_pieces(self.vectors, self.offsets, self.piece_ids, self.context), gather_pieces(self.vectors, self.offsets, self.piece_ids, self.module_text)


def gather_pieces(vectors: torch.Tensor, offsets: torch.Tensor, piece_ids: torch.Tensor, texts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The piece vectors of `texts` (N,) in a CSR layout (text t's pieces are rows
    `piece_ids[offsets[t]:offsets[t + 1]]` of `vectors`), padded: (N, L, d) with zeros past each
    text's pieces, on the device of `texts`, and the mask (N, L) of real pieces."""
    start = offsets[texts]
    count = offsets[texts + 1] - start
    width = int(count.max()) if len(texts) else 1
    steps = torch.arange(width, device=texts.device)
    mask = steps.unsqueeze(0) < count.unsqueeze(1)
    rows = piece_ids[torch.where(mask, start.unsqueeze(1) + steps, start.unsqueeze(1))]
    gathered = vectors[rows.to(vectors.device)].to(texts.device, non_blocking=True)
    if width > 1:
        gathered = gathered.masked_fill(~mask.unsqueeze(-1), 0.0)
    return gathered, mask


def warmup_linear_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int) -> LambdaLR:
    """Linear warmup to the optimiser's lr over `warmup_steps`, then linear decay to 0 at `total_steps`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return LambdaLR(optimizer, factor)


def warmup_steps_for(total_steps: int, warmup_steps: int, max_fraction: float) -> int:
    """The configured warmup, capped to a fraction of all steps so small data still trains at full lr."""
    return max(1, min(warmup_steps, int(max_fraction * total_steps)))


@dataclass
class EarlyStopping:
    """The best epoch so far by validation loss, and when to stop: after `patience` epochs in a row
    without a lower one. Both stages' loops use it (heads/fitting.py, pipeline/finetune.py); stage 1
    keeps its three counters in its resume state (`state()`, `EarlyStopping(patience, **saved)`)."""

    patience: int
    best_loss: float | None = None
    best_epoch: int = 0  # 0: no epoch validated yet
    since_best: int = 0

    def update(self, epoch: int, loss: float) -> bool:
        """Record `epoch`'s validation loss; True when it is the lowest so far (the first always is)."""
        if self.best_loss is None or loss < self.best_loss:
            self.best_loss, self.best_epoch, self.since_best = loss, epoch, 0
            return True
        self.since_best += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.since_best >= self.patience

    def state(self) -> dict:
        return {"best_loss": self.best_loss, "best_epoch": self.best_epoch, "since_best": self.since_best}


def optimizer_steps(n_pairs: int, batch_size: int, grad_accumulation: int) -> int:
    return math.ceil(math.ceil(n_pairs / batch_size) / grad_accumulation)


def train_epoch(
    model: MultiModuleRewardModel,
    data: PairTensors,
    optimizer: torch.optim.Optimizer,
    scheduler: LambdaLR,
    *,
    batch_size: int,
    grad_accumulation: int,
    grad_clip: float,
    margin: float,
    margin_weight: float,
    generator: torch.Generator,
    on_step=None,
) -> float:
    """One pass over `data` in a seeded random order; returns the mean training loss."""
    model.train()
    order = torch.randperm(len(data), generator=generator).to(data.module_index.device)
    batches = list(order.split(batch_size))
    total, count = torch.zeros((), device=order.device), 0  # summed on the device: no sync per step
    optimizer.zero_grad(set_to_none=True)
    for i, index in enumerate(batches):
        positive, negative = data.rows(index).joint_scores(model)
        loss = bradley_terry_loss(positive, negative, margin, margin_weight)
        (loss / grad_accumulation).backward()
        total, count = total + loss.detach() * len(index), count + len(index)
        if (i + 1) % grad_accumulation == 0 or i + 1 == len(batches):
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if on_step is not None:
                on_step(loss.item())
    return total.item() / max(count, 1)


@torch.no_grad()
def pair_scores(model: MultiModuleRewardModel, data: PairTensors, batch_size: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """(r_pos, r_neg) of every pair, in eval mode, `batch_size` pairs at a time."""
    model.eval()
    positive, negative = [], []
    for index in torch.arange(len(data), device=data.module_index.device).split(batch_size):
        p, n = data.rows(index).scores(model)
        positive.append(p)
        negative.append(n)
    return torch.cat(positive), torch.cat(negative)


@torch.no_grad()
def evaluate_pairs(model: MultiModuleRewardModel, data: PairTensors, margin: float, margin_weight: float, batch_size: int = 4096) -> dict:
    """Loss and pairwise accuracy (r_pos > r_neg; ties count wrong), overall and per module."""
    positive, negative = pair_scores(model, data, batch_size)

    def summary(rows: torch.Tensor) -> dict:
        if not len(rows):  # None, not NaN: the metrics go to JSON
            return {"loss": None, "pairwise_accuracy": None, "n_pairs": 0}
        p, n = positive[rows], negative[rows]
        return {
            "loss": bradley_terry_loss(p, n, margin, margin_weight).item(),
            "pairwise_accuracy": (p > n).float().mean().item(),
            "n_pairs": int(len(rows)),
        }

    everything = torch.arange(len(data), device=positive.device)
    result = summary(everything)
    result["modules"] = {
        name: summary((data.module_index == i).nonzero(as_tuple=True)[0]) for i, name in enumerate(model.modules_order)
    }
    return result
