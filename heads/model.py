"""Reward heads, all of them in this file: one MLP per agent module over a frozen encoder's vectors,
the Bradley–Terry loss they train with, and their checkpoint folder.

    model = MultiModuleRewardModel(dimension=384, modules=["reflection", "planner", "executor", "memory"])
    scores = model(e_ctx, e_mod, module_index)          # one reward per row, each row scored by its own module's head
    loss = bradley_terry_loss(scores_pos, scores_neg)    # BCE(r_pos - r_neg, 1) + alpha * ReLU(margin - (r_pos - r_neg))

A head reads concat(e_ctx, e_mod, e_ctx * e_mod) (3d) and, by design, goes 3d -> 2d -> d -> 1, each
hidden layer Linear + GELU + LayerNorm + Dropout. For d = 1024 that is 3072 -> 2048 -> 1024 -> 1
(8.4M parameters per head). The hidden widths are a setting (`model.head`): "2d,d" is the design,
"256" one hidden layer of 256, "linear" none at all (a linear probe on the same features), for
data too small for millions of parameters.

Under the `rounds` view (features/views.py) a text is several piece vectors (its rounds), and each
head owns one `AttentionPool` per role: a learned query attends over the text's pieces (a masked
softmax, so any number of pieces and padding never matters), and the text becomes
concat(attention-pooled, mean) (2d); the head then reads 3 x 2d. Under the other views a text's
pieces are averaged (one piece: the vector itself) and the head is exactly the one above.

    scores, weights = model.score_pieces((ctx_pieces, ctx_mask), (mod_pieces, mod_mask), module_index)
"""

import json
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from data.errors import ConfigError, UserError
from data.files import json_text

WEIGHTS = "heads.safetensors"
CONFIG = "config.json"
DESIGN_HEAD = "2d,d"  # hidden widths of the design's 3d -> 2d -> d -> 1


class CheckpointError(UserError):
    """A folder that is not a checkpoint, or one that does not fit what it is used with (another
    encoder's vectors, other modules, no stored normalisation)."""


def hidden_widths(head: str, dimension: int) -> list[int]:
    """The hidden layer widths a head spec (`model.head`) names: "2d,d" -> [2d, d], "512,128" ->
    [512, 128], "linear" -> [] (no hidden layer). `ConfigError` for anything else."""
    if head.strip() == "linear":
        return []
    widths = []
    for item in head.split(","):
        item = item.strip()
        factor = item.removesuffix("d")
        if item.endswith("d") and (factor == "" or factor.isdigit()):
            widths.append(int(factor or 1) * dimension)
        elif item.isdigit() and int(item) > 0:
            widths.append(int(item))
        else:
            raise ConfigError(f'model.head {head!r}: expected "linear" or comma-separated widths such as "2d,d" or "256", got {item!r}')
    return widths


POOLINGS = ("mean", "attention")


class AttentionPool(nn.Module):
    """A text's piece vectors (N, L, d) with their mask (N, L) -> concat(attention-pooled, mean)
    (N, 2d) and the attention weights (N, L) (0 on padding, each row summing to 1). The query
    starts at zero, so the attention starts as the mean."""

    def __init__(self, dimension: int):
        super().__init__()
        self.query = nn.Parameter(torch.zeros(dimension))

    def forward(self, pieces: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = (pieces @ self.query.to(pieces.dtype)).masked_fill(~mask, float("-inf"))
        weights = torch.softmax(logits.float(), dim=1).to(pieces.dtype)
        attended = (weights.unsqueeze(-1) * pieces).sum(1)
        return torch.cat([attended, masked_mean(pieces, mask)], dim=-1), weights


def masked_mean(pieces: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of each row's unmasked piece vectors: (N, L, d), (N, L) -> (N, d). One piece per
    row is returned as is, bit for bit."""
    if pieces.shape[1] == 1:
        return pieces[:, 0]
    weights = mask.to(pieces.dtype)
    return (weights.unsqueeze(-1) * pieces).sum(1) / weights.sum(1, keepdim=True).clamp(min=1)


class RewardHead(nn.Module):
    """Scores one module's text in its trajectory context."""

    def __init__(self, dimension: int, dropout: float = 0.1, head: str = DESIGN_HEAD, pooling: str = "mean"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        self.pooling = pooling
        if pooling == "attention":
            self.poolers = nn.ModuleDict({role: AttentionPool(dimension) for role in ("context", "module")})
        layers, width = [], 3 * dimension * (2 if pooling == "attention" else 1)
        for hidden in hidden_widths(head, dimension):
            layers += [nn.Linear(width, hidden), nn.GELU(), nn.LayerNorm(hidden), nn.Dropout(dropout)]
            width = hidden
        self.mlp = nn.Sequential(*layers, nn.Linear(width, 1))

    def forward(self, context: torch.Tensor, module_text: torch.Tensor) -> torch.Tensor:
        features = torch.cat([context, module_text, context * module_text], dim=-1)
        return self.mlp(features).squeeze(-1)

    def pool(self, role: str, pieces: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A text's representation from its pieces (N, L, d) and mask, and each piece's weight in
        it: the attention weights, or (mean pooling) an equal share of each unmasked piece."""
        if self.pooling == "attention":
            return self.poolers[role](pieces, mask)
        weights = mask.to(pieces.dtype)
        return masked_mean(pieces, mask), weights / weights.sum(1, keepdim=True).clamp(min=1)


class MultiModuleRewardModel(nn.Module):
    """One `RewardHead` per module of the configured set."""

    def __init__(self, dimension: int, modules: Sequence[str], dropout: float = 0.1, head: str = DESIGN_HEAD, pooling: str = "mean"):
        super().__init__()
        self.dimension = dimension
        self.modules_order = list(modules)
        self.dropout = dropout
        self.head = head
        self.pooling = pooling
        self.heads = nn.ModuleDict({name: RewardHead(dimension, dropout, head, pooling) for name in self.modules_order})

    def forward(self, context: torch.Tensor, module_text: torch.Tensor, module_index: torch.Tensor) -> torch.Tensor:
        """Scores (N,) for rows whose module is `modules_order[module_index[i]]`. Each head runs only
        on its own rows, so a batch updates only the heads of the modules it holds."""
        scores = context.new_empty(context.shape[0])
        for i, name in enumerate(self.modules_order):
            rows = (module_index == i).nonzero(as_tuple=True)[0]
            if len(rows):
                scores[rows] = self.heads[name](context[rows], module_text[rows]).to(scores.dtype)
        return scores

    def score_pieces(
        self, context: tuple[torch.Tensor, torch.Tensor], module_text: tuple[torch.Tensor, torch.Tensor], module_index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores (N,) for rows given as pieces: `context` and `module_text` are each (pieces
        (N, L, d), mask (N, L)), pooled by the row's head. Also each module-text piece's weight in
        its text's pooled vector (N, L), which `pipeline/rewards.py` turns into per-round rewards."""
        pieces, mask = module_text
        scores = pieces.new_empty(pieces.shape[0])
        weights = pieces.new_zeros(mask.shape)
        for i, name in enumerate(self.modules_order):
            rows = (module_index == i).nonzero(as_tuple=True)[0]
            if len(rows):
                head = self.heads[name]
                c, _ = head.pool("context", context[0][rows], context[1][rows])
                m, w = head.pool("module", pieces[rows], mask[rows])
                scores[rows] = head(c, m).to(scores.dtype)
                weights[rows] = w.to(weights.dtype)
        return scores, weights

    def module_index(self, names: Sequence[str]) -> torch.Tensor:
        lookup = {name: i for i, name in enumerate(self.modules_order)}
        unknown = sorted(set(names) - lookup.keys())
        if unknown:
            raise ValueError(f"no head for module(s) {', '.join(unknown)}; this model has {', '.join(self.modules_order)}")
        return torch.tensor([lookup[n] for n in names], dtype=torch.long)

    def save(self, folder: str | Path, config: dict) -> None:
        """`heads.safetensors` + `config.json` (dimension, modules and whatever `config` adds)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, folder / WEIGHTS)
        full = {"dimension": self.dimension, "modules": self.modules_order, "dropout": self.dropout, "head": self.head, "pooling": self.pooling, **config}
        (folder / CONFIG).write_text(json_text(full, indent=2, default=str))

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu") -> tuple["MultiModuleRewardModel", dict]:
        """The model saved in `folder`, and its config.json. No pickle: safetensors only."""
        folder = Path(folder)
        if not (folder / WEIGHTS).is_file() or not (folder / CONFIG).is_file():
            raise CheckpointError(f"{folder} is not a reward-head checkpoint (it needs {WEIGHTS} and {CONFIG})")
        config = json.loads((folder / CONFIG).read_text())
        if config.get("ensemble", 1) > 1:
            raise CheckpointError(
                f"{folder} holds an ensemble of {config['ensemble']} heads, and this needs a single-head checkpoint: stage 1 "
                "(finetune) and --resume start from one. Train one without --ensemble (heads.ensemble.load_heads reads ensembles)."
            )
        model = cls(config["dimension"], config["modules"], config.get("dropout", 0.1), config.get("head", DESIGN_HEAD), config.get("pooling", "mean"))
        model.load_state_dict(load_file(folder / WEIGHTS, device=device))
        return model.to(device), config


def bradley_terry_loss(positive: torch.Tensor, negative: torch.Tensor, margin: float = 0.1, margin_weight: float = 0.1) -> torch.Tensor:
    """BCEWithLogits(r_pos - r_neg, 1) + margin_weight * ReLU(margin - (r_pos - r_neg)), averaged.
    BCE with target 1 on the difference is -log sigmoid(r_pos - r_neg): the Bradley–Terry likelihood."""
    difference = positive - negative
    preference = F.binary_cross_entropy_with_logits(difference, torch.ones_like(difference))
    return preference + margin_weight * F.relu(margin - difference).mean()
