"""Reward heads, all of them in this file: one MLP per agent module over a frozen encoder's vectors,
the Bradley–Terry loss they train with, and their checkpoint folder.

    model = MultiModuleRewardModel(dimension=384, modules=["reflection", "planner", "executor", "memory"])
    scores = model(e_ctx, e_mod, module_index)          # one reward per row, each row scored by its own module's head
    loss = bradley_terry_loss(scores_pos, scores_neg)    # BCE(r_pos - r_neg, 1) + alpha * ReLU(margin - (r_pos - r_neg))
    model, record = MultiModuleRewardModel.load("ckpt/")  # a damaged config.json or heads.safetensors: one CheckpointError naming it

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
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from data.errors import ConfigError, UserError
from features.views import VIEWS

if TYPE_CHECKING:
    from heads.checkpoint import CheckpointRecord

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


def module_index(order: Sequence[str], names: Sequence[str]) -> torch.Tensor:
    """Each of `names` as its index in the heads' module `order` (N,)."""
    lookup = {name: i for i, name in enumerate(order)}
    unknown = sorted(set(names) - lookup.keys())
    if unknown:
        raise ValueError(f"no head for module(s) {', '.join(unknown)}; this model has {', '.join(order)}")
    return torch.tensor([lookup[n] for n in names], dtype=torch.long)


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
        its text's pooled vector (N, L), which `heads/reward_model.py` turns into per-round rewards."""
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
        return module_index(self.modules_order, names)

    @classmethod
    def from_record(cls, record: "CheckpointRecord") -> "MultiModuleRewardModel":
        """Untrained heads of the shape a checkpoint's record (heads/checkpoint.py) names."""
        return cls(record.dimension, record.modules, record.dropout, record.head, record.pooling)

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu") -> tuple["MultiModuleRewardModel", "CheckpointRecord"]:
        """The model saved in `folder`, and its record. No pickle: safetensors only."""
        from heads.checkpoint import read_record  # the record module builds on this one

        folder = Path(folder)
        record = read_record(folder)
        if record.ensemble > 1:
            raise CheckpointError(
                f"{folder} holds an ensemble of {record.ensemble} heads, and this needs a single-head checkpoint: stage 1 "
                "(finetune) and --resume start from one. Train one without --ensemble (heads.ensemble.load_heads reads ensembles)."
            )
        model = cls.from_record(record)
        load_weights(model, folder, device)
        return model.to(device), record


# --- reading a checkpoint folder -----------------------------------------------------------------
# Every verb that reads a checkpoint (evaluate, score, serve, train-heads --resume, finetune --init,
# the reward API) loads it through `read_config` (by heads/checkpoint.py's `read_record`) and
# `load_weights`, so a damaged or hand-edited folder is one CheckpointError naming the file and
# what is wrong, never a KeyError or a safetensors traceback deep inside a verb.


def _positive_int(value) -> bool:
    return type(value) is int and value > 0


def _number(value) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _names(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) and v for v in value) and len(set(value)) == len(value)


def _head_spec(value) -> bool:
    if not isinstance(value, str):
        return False
    try:
        hidden_widths(value, 1)
    except ConfigError:
        return False
    return True


def _windows(value) -> bool:
    return isinstance(value, dict) and all(_positive_int(value.get(role)) for role in ("context", "module"))


def valid_normalization(value) -> bool:
    """{module: {"mean": x, "std": y, ...}, "data_sha256": ...}, as `pipeline evaluate` stores it
    (null where a reward was not finite: that module's normalisation is then unusable, not damaged)."""
    if not isinstance(value, dict):
        return False
    entries = [v for k, v in value.items() if k != "data_sha256"]
    return all(isinstance(v, dict) and all(_number(v.get(k)) or v.get(k) is None for k in ("mean", "std")) for v in entries)


def _lexical(value) -> bool:
    fields = ("weight", "head_mean", "head_std", "lexical_mean", "lexical_std")
    return isinstance(value, dict) and all(_number(value.get(k)) for k in fields)


# key -> (required, valid, what it should be); keys older checkpoints lack are not required
# (heads/checkpoint.py's `migrate` reads them as their format meant)
def _module_pairs(value) -> bool:
    count = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0  # noqa: E731
    return isinstance(value, dict) and all(isinstance(c, dict) and count(c.get("train")) and count(c.get("val", 0)) for c in value.values())


CONFIG_KEYS = {
    "format_version": (False, _positive_int, "a positive integer (the checkpoint format)"),
    "dimension": (True, _positive_int, "a positive integer"),
    "modules": (True, _names, "a non-empty list of distinct module names"),
    "dropout": (False, lambda v: _number(v) and 0 <= v <= 1, "a number from 0 to 1"),
    "head": (False, _head_spec, 'hidden widths such as "2d,d", "256" or "linear"'),
    "pooling": (False, lambda v: v in POOLINGS, f"one of {', '.join(POOLINGS)}"),
    "ensemble": (False, _positive_int, "a positive integer (how many members)"),
    "encoder_fingerprint": (True, lambda v: isinstance(v, dict), "an object (the encoder the heads read vectors of)"),
    "cache_dtype": (False, lambda v: isinstance(v, str), "a string"),
    "view": (False, lambda v: v in VIEWS, f"one of {', '.join(VIEWS)}"),
    "window_words": (False, _windows, 'an object of positive integers {"context": ..., "module": ...}'),
    "max_pieces": (False, _positive_int, "a positive integer"),
    "normalization": (False, valid_normalization, "an object of {module: {mean, std}} with numbers (or null)"),
    "blend": (False, lambda v: isinstance(v, dict), "an object"),
    "lexical": (False, _lexical, "an object of numbers weight, head_mean, head_std, lexical_mean, lexical_std"),  # format 1's blend before its linear part
    "training_config": (False, lambda v: isinstance(v, dict), "an object"),
    "train_files": (False, lambda v: isinstance(v, list) and all(isinstance(f, str) for f in v), "a list of file names"),
    "val_file": (False, lambda v: v is None or isinstance(v, str), "a file name or null"),
    "module_pairs": (False, lambda v: v is None or _module_pairs(v), 'an object of {module: {"train": n, "val": n}} with counts, or null'),
}
FINGERPRINT_KEYS = {
    "encoder": (True, lambda v: isinstance(v, str) and bool(v.strip()), "a model name or folder"),
    "max_context_tokens": (True, _positive_int, "a positive integer"),
    "max_module_tokens": (True, _positive_int, "a positive integer"),
    "context_prompt": (True, lambda v: isinstance(v, str), "a string"),
    "truncation_side": (True, lambda v: isinstance(v, str), "a string"),
    "normalize": (True, lambda v: isinstance(v, bool), "true or false"),
    "dimension": (True, _positive_int, "a positive integer"),
}
VIEW_KEYS = ("window_words", "max_pieces")  # required beside "view"


def damaged(path: Path, problem: str) -> CheckpointError:
    """The one error of a damaged checkpoint file: which file, what is wrong, and the way out."""
    return CheckpointError(f"{path}: {problem}; the checkpoint is damaged: copy its folder whole again, or retrain it")


def read_config(folder: str | Path) -> dict:
    """The checkpoint's config.json as written (of any format), checked against `CONFIG_KEYS`:
    `CheckpointError` naming the file and the key when the folder is no checkpoint or the file is
    not what we wrote. Readers use `heads.checkpoint.read_record`, which migrates it."""
    folder = Path(folder)
    path = folder / CONFIG
    if not (folder / WEIGHTS).is_file() or not path.is_file():
        raise CheckpointError(f"{folder} is not a reward-head checkpoint (it needs {WEIGHTS} and {CONFIG})")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise damaged(path, f"cannot be read ({error_line(e)})") from None
    try:
        config = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise damaged(path, f"not valid JSON ({error_line(e)})") from None
    if not isinstance(config, dict):
        raise damaged(path, f"holds a JSON {_kind(config)}, not an object")
    _check_keys(path, config, CONFIG_KEYS, "")
    _check_keys(path, config["encoder_fingerprint"], FINGERPRINT_KEYS, "encoder_fingerprint.")
    if config["encoder_fingerprint"]["dimension"] != config["dimension"]:
        raise damaged(path, f"encoder_fingerprint.dimension {config['encoder_fingerprint']['dimension']} differs from dimension {config['dimension']}")
    lacking = [key for key in VIEW_KEYS if "view" in config and key not in config]
    if lacking:
        raise damaged(path, f"records view {config['view']!r} without {' and '.join(map(repr, lacking))}")
    return config


def _check_keys(path: Path, record: dict, schema: dict, prefix: str) -> None:
    for key, (required, valid, what) in schema.items():
        if key not in record:
            if required:
                raise damaged(path, f"{prefix + key!r} is missing (it should be {what})")
        elif not valid(record[key]):
            raise damaged(path, f"{prefix + key!r} should be {what}, not {_shown(record[key])}")


def load_weights(model: nn.Module, folder: str | Path, device: str = "cpu") -> None:
    """`heads.safetensors` into `model` (built from config.json): `CheckpointError` naming the file
    when it is not safetensors, lacks the weights of a module (or member), holds weights the config
    has no head for, or holds a tensor of another shape than the config's heads."""
    path = Path(folder) / WEIGHTS
    try:
        tensors = load_file(path, device=device)
    except (OSError, SafetensorError) as e:
        raise damaged(path, f"not a readable safetensors file ({error_line(e)})") from None
    expected = model.state_dict()
    missing, unexpected = [k for k in expected if k not in tensors], [k for k in tensors if k not in expected]
    if missing:
        raise damaged(path, f"holds no weights for {_heads_of(missing)}, which config.json has ({len(missing)} tensors missing, e.g. {missing[0]})")
    if unexpected:
        raise damaged(path, f"holds weights for {_heads_of(unexpected)}, which config.json has no head for (e.g. {unexpected[0]})")
    for name, wanted in expected.items():
        if tensors[name].shape != wanted.shape:
            raise damaged(path, f"tensor {name} is {list(tensors[name].shape)}, but config.json's heads (dimension {model.dimension}, head {model.head!r}) need {list(wanted.shape)}")
    model.load_state_dict(tensors)


def _heads_of(names: list[str]) -> str:
    """The heads tensor names belong to: "module planner", "member 2's module planner"."""
    heads = []
    for name in names:
        parts = name.split(".")
        where = f"module {parts[parts.index('heads') + 1]}" if "heads" in parts[:-1] else name
        if parts[0] == "members" and len(parts) > 1:
            where = f"member {parts[1]}'s {where}"
        heads.append(where)
    return ", ".join(dict.fromkeys(heads))


def error_line(error: Exception) -> str:
    """An exception as one line for a user: its type and the first line of its text."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def _kind(value) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}.get(type(value), type(value).__name__)


def _shown(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def bradley_terry_loss(positive: torch.Tensor, negative: torch.Tensor, margin: float = 0.1, margin_weight: float = 0.1) -> torch.Tensor:
    """BCEWithLogits(r_pos - r_neg, 1) + margin_weight * ReLU(margin - (r_pos - r_neg)), averaged.
    BCE with target 1 on the difference is -log sigmoid(r_pos - r_neg): the Bradley–Terry likelihood."""
    difference = positive - negative
    preference = F.binary_cross_entropy_with_logits(difference, torch.ones_like(difference))
    return preference + margin_weight * F.relu(margin - difference).mean()
