"""Reward heads, all of them in this file: one MLP per agent module over a frozen encoder's vectors,
the Bradley–Terry loss they train with, and their checkpoint folder.

    model = MultiModuleRewardModel(dimension=384, modules=["reflection", "planner", "executor", "memory"])
    scores = model(e_ctx, e_mod, module_index)          # one reward per row, each row scored by its own module's head
    loss = bradley_terry_loss(scores_pos, scores_neg)    # BCE(r_pos - r_neg, 1) + alpha * ReLU(margin - (r_pos - r_neg))

A head reads concat(e_ctx, e_mod, e_ctx * e_mod) (3d) and goes 3d -> 2d -> d -> 1, each hidden
layer Linear + GELU + LayerNorm + Dropout. For d = 1024 that is 3072 -> 2048 -> 1024 -> 1.
"""

import json
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from data.errors import UserError

WEIGHTS = "heads.safetensors"
CONFIG = "config.json"


class CheckpointError(UserError):
    """A folder that is not a checkpoint, or one that does not fit what it is used with (another
    encoder's vectors, other modules, no stored normalisation)."""


class RewardHead(nn.Module):
    """Scores one module's text in its trajectory context."""

    def __init__(self, dimension: int, dropout: float = 0.1):
        super().__init__()
        d = dimension
        self.mlp = nn.Sequential(
            nn.Linear(3 * d, 2 * d), nn.GELU(), nn.LayerNorm(2 * d), nn.Dropout(dropout),
            nn.Linear(2 * d, d), nn.GELU(), nn.LayerNorm(d), nn.Dropout(dropout),
            nn.Linear(d, 1),
        )  # fmt: skip

    def forward(self, context: torch.Tensor, module_text: torch.Tensor) -> torch.Tensor:
        features = torch.cat([context, module_text, context * module_text], dim=-1)
        return self.mlp(features).squeeze(-1)


class MultiModuleRewardModel(nn.Module):
    """One `RewardHead` per module of the configured set."""

    def __init__(self, dimension: int, modules: Sequence[str], dropout: float = 0.1):
        super().__init__()
        self.dimension = dimension
        self.modules_order = list(modules)
        self.dropout = dropout
        self.heads = nn.ModuleDict({name: RewardHead(dimension, dropout) for name in self.modules_order})

    def forward(self, context: torch.Tensor, module_text: torch.Tensor, module_index: torch.Tensor) -> torch.Tensor:
        """Scores (N,) for rows whose module is `modules_order[module_index[i]]`. Each head runs only
        on its own rows, so a batch updates only the heads of the modules it holds."""
        scores = context.new_empty(context.shape[0])
        for i, name in enumerate(self.modules_order):
            rows = (module_index == i).nonzero(as_tuple=True)[0]
            if len(rows):
                scores[rows] = self.heads[name](context[rows], module_text[rows]).to(scores.dtype)
        return scores

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
        full = {"dimension": self.dimension, "modules": self.modules_order, "dropout": self.dropout, **config}
        (folder / CONFIG).write_text(json.dumps(full, indent=2, default=str))

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu") -> tuple["MultiModuleRewardModel", dict]:
        """The model saved in `folder`, and its config.json. No pickle: safetensors only."""
        folder = Path(folder)
        if not (folder / WEIGHTS).is_file() or not (folder / CONFIG).is_file():
            raise CheckpointError(f"{folder} is not a reward-head checkpoint (it needs {WEIGHTS} and {CONFIG})")
        config = json.loads((folder / CONFIG).read_text())
        model = cls(config["dimension"], config["modules"], config.get("dropout", 0.1))
        model.load_state_dict(load_file(folder / WEIGHTS, device=device))
        return model.to(device), config


def bradley_terry_loss(positive: torch.Tensor, negative: torch.Tensor, margin: float = 0.1, margin_weight: float = 0.1) -> torch.Tensor:
    """BCEWithLogits(r_pos - r_neg, 1) + margin_weight * ReLU(margin - (r_pos - r_neg)), averaged.
    BCE with target 1 on the difference is -log sigmoid(r_pos - r_neg): the Bradley–Terry likelihood."""
    difference = positive - negative
    preference = F.binary_cross_entropy_with_logits(difference, torch.ones_like(difference))
    return preference + margin_weight * F.relu(margin - difference).mean()
