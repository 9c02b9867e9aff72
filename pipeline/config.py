"""One YAML config for every verb: sections model, features, data, cache, stage_0, stage_1, loss, training, evaluation, serve, search.

    model:
      encoder: Qwen/Qwen3-Embedding-0.6B
    stage_0:
      epochs: 3

Any key left out keeps its default below; an unknown key, a value of the wrong type, a number out
of its range (`_RANGES`, one row per numeric key) or a section or key written twice is an error
that names the file and the key. Command-line flags override the file. Every verb writes the
resolved config (`config.yaml`) next to its output.
"""

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field, fields
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import yaml

from data.errors import ConfigError
from data.files import write_text_atomic
from data.schema import DEFAULT_MODULES
from data.trajectory import DEFAULT_MODULE_FIELDS, ROUND_FIELDS


@dataclass
class ModelConfig:
    encoder: str = "Qwen/Qwen3-Embedding-0.6B"  # model id, local folder, or `minilm` (bundled all-MiniLM-L6-v2)
    max_context_tokens: int = 2048
    max_module_tokens: int = 512
    # Instruction before each context text. "auto": the Qwen3 instruction (features.encoder.QWEN3_CONTEXT_PROMPT) for
    # last-token-pooling models, which are instruction-tuned as Qwen3-Embedding's authors describe;
    # none for others (MiniLM). Module texts never get one.
    context_prompt: str = "auto"
    truncation_side: str = "left"  # left keeps the end of a long trajectory: its latest rounds
    normalize: bool = True
    batch_size: int = 32
    dropout: float = 0.1
    # hidden widths of each reward head: "2d,d" is the design's 3d -> 2d -> d -> 1; "256" one hidden
    # layer; "linear" none (heads/model.py)
    head: str = "2d,d"
    # The reward as a blend of the heads, a linear part and a TF-IDF part (heads/blend.py). "auto":
    # train-heads fits both parts and blends them with the heads at the weights of highest accuracy
    # on held-out pairs (validation, and training pairs out of fold when there are few); "off":
    # heads only.
    blend: str = "auto"


@dataclass
class FeaturesConfig:
    # How a long text becomes vectors (features/views.py): truncate (one vector, cut to the token
    # limit), head_tail (one vector of the text's start and end), chunks (the mean of word windows'
    # vectors), rounds (one vector per [Round i] block, pooled by the heads with learned attention)
    view: str = "truncate"
    max_pieces: int = 32  # pieces per text at most: the first half and the last half are kept
    # words per window (chunks, and rounds longer than this); 0: half the role's token limit
    window_words: int = 0


@dataclass
class DataConfig:
    modules: list[str] = field(default_factory=lambda: list(DEFAULT_MODULES))
    group_by: str = "task"  # splits never put two pairs with the same value here in different splits
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    split_seed: int = 0
    # Which round fields of a run (data/runs.py) make up each module's text when `pipeline pairs`
    # mines pairs from runs; give the whole mapping when you change it.
    module_fields: dict[str, list[str]] = field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_MODULE_FIELDS.items()})


@dataclass
class CacheConfig:
    dtype: str = "float32"  # float32 or float16 vectors on disk; part of the namespace
    shard_size: int = 4096  # vectors per Parquet shard: the unit a killed `embed` can lose


@dataclass
class Stage0Config:
    lr: float = 3e-4
    warmup_steps: int = 100
    grad_accumulation: int = 2
    epochs: int = 5
    batch_size: int = 64
    patience: int = 2
    # piece vectors larger than this (MiB) stay on disk, memory-mapped; "auto": larger than half the
    # memory available when the run starts (cache.memory_map_above)
    memory_map_above_mb: int | str = "auto"
    # members of an ensemble trained on bootstrap resamples of the training tasks (heads/ensemble.py); 1: one model
    ensemble: int = 1


@dataclass
class Stage1Config:
    encoder_lr: float = 1e-5
    heads_lr: float = 1e-4
    warmup_steps: int = 100
    grad_accumulation: int = 2
    epochs: int = 5
    batch_size: int = 8
    patience: int = 2
    precision: str = "auto"  # auto, bf16, fp16 or fp32 (auto: bf16 where the GPU or CPU has it, fp16 on older GPUs)
    gradient_checkpointing: bool = False
    save_every_steps: int = 0  # optimiser steps between resumable saves; 0: at the end of each epoch only


@dataclass
class LossConfig:
    margin: float = 0.1
    margin_weight: float = 0.1


@dataclass
class TrainingConfig:
    seed: int = 0
    device: str = "auto"  # auto picks cuda when present, else cpu
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    max_warmup_fraction: float = 0.1  # warmup is capped to this fraction of all steps on small data


@dataclass
class EvaluationConfig:
    bootstrap_samples: int = 1000
    confidence: float = 0.95
    calibration_bins: int = 10
    # fit it on the checkpoint's training pairs; for a stage 1 checkpoint that first embeds all of
    # them with its fine-tuned encoder, minutes on a CPU (a checkpoint whose blend has a linear
    # part reports that part alone whatever this says: it costs nothing)
    logistic_baseline: bool = True


@dataclass
class ServeConfig:
    max_batch: int = 64  # rows scored together in one call; 1 scores every request alone (no micro-batching)
    max_wait_ms: float = 5.0  # how long a batch waits for more requests after its first one arrived
    max_request_rows: int = 1024  # rows (items, queries) one request may hold; more is refused with 413
    max_body_bytes: int = 16 * 1024 * 1024  # larger request bodies are refused with 413
    module: str = ""  # /get_reward's module when neither the label nor a <module> tag in the prompt names one
    normalize: bool = False  # serve (r - mean) / std per module, as `pipeline evaluate` stored them
    memory_size: int = 20_000  # text vectors kept in memory (LRU) so repeated texts skip the encoder
    max_pending: int = 256  # requests waiting to be scored; past it a request gets 503 with Retry-After
    read_timeout_s: float = 30.0  # a request's headers and body must arrive within this of its first byte; else the connection is closed
    docs: bool = False  # serve /docs and /openapi.json
    allow_untrained: bool = False  # also score modules whose head saw no training pairs (their scores mean nothing); refused by default
    extra_logs: bool = True  # /get_reward answers "extra_logs" (per-query numbers OpenRLHF logs); false for OpenRLHF 0.8.x, whose client fails on them
    max_request_chars: int = 4_000_000  # characters of text (contexts + module texts) one request may hold; more is refused with 413


@dataclass
class SearchConfig:
    """`pipeline train-heads --search` tries every combination of these lists (heads/search.py) and
    keeps the one of lowest validation loss; a linear head has no dropout, so it is tried once per
    combination of the others. Each run stops early and keeps its best epoch, so `epochs` is the
    longest run (and the length of its lr decay), not a count to hit: 20 settings by default."""

    head: list[str] = field(default_factory=lambda: ["2d,d", "256", "linear"])
    lr: list[float] = field(default_factory=lambda: [3e-4, 1e-3])
    weight_decay: list[float] = field(default_factory=lambda: [0.01, 0.1])
    dropout: list[float] = field(default_factory=lambda: [0.1, 0.3])
    epochs: list[int] = field(default_factory=lambda: [10])


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    data: DataConfig = field(default_factory=DataConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    stage_0: Stage0Config = field(default_factory=Stage0Config)
    stage_1: Stage1Config = field(default_factory=Stage1Config)
    loss: LossConfig = field(default_factory=LossConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    # Dotted keys the user set (in the file or by a flag), as opposed to defaults: a verb may choose
    # for itself where the user did not, as train-heads picks the only encoder of a cache.
    explicit: ClassVar[frozenset[str]] = frozenset()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def save(self, path: str | Path) -> Path:
        return write_text_atomic(path, self.to_yaml())

    def override(self, values: dict[str, Any], source: str = "command line") -> "Config":
        """A copy with dotted keys replaced (`{"stage_0.epochs": 3}`); None values are skipped."""
        data = self.to_dict()
        for key, value in values.items():
            if value is None:
                continue
            section, _, name = key.partition(".")
            data[section][name] = value
        config = _from_dict(data, source)
        config.explicit = self.explicit | {key for key, value in values.items() if value is not None}
        return config


CONFIG_SECTIONS = tuple(f.name for f in fields(Config))  # what a config file this pipeline writes holds


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Defaults, then the YAML file (if any), then `overrides` (dotted keys; None is skipped)."""
    config = Config()
    if path is not None:
        path = Path(path)
        try:
            raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)
        except _DuplicateKey as e:
            raise ConfigError(f"{path}: {e}") from None
        except OSError as e:
            raise ConfigError(f"{path}: cannot read config: {e.strerror or e}") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from e
        if raw is not None and not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of sections ({', '.join(_SECTIONS)}), got {type(raw).__name__}")
        data = config.to_dict()
        for section, values in (raw or {}).items():
            if section not in _SECTIONS:
                raise ConfigError(f"{path}: unknown section {section!r} (known: {', '.join(_SECTIONS)})")
            if values is None:
                continue
            if not isinstance(values, dict):
                raise ConfigError(f"{path}: section {section!r} must be a mapping, got {type(values).__name__}")
            data[section].update(values)
        config = _from_dict(data, str(path))
        config.explicit = frozenset(f"{section}.{name}" for section, values in (raw or {}).items() for name in values or {})
    return config.override(overrides or {})


class _DuplicateKey(Exception):
    pass


class _StrictLoader(yaml.SafeLoader):
    """yaml.safe_load that refuses a key written twice in one mapping (PyYAML keeps the last one
    silently, so a section written twice lost the first one's settings)."""

    def construct_document(self, node):
        self._check_duplicates(node, "")
        return super().construct_document(node)

    def _check_duplicates(self, node, where: str) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key, value in node.value:
                if key.tag == "tag:yaml.org,2002:merge" or not isinstance(key, yaml.ScalarNode):
                    continue  # `<<: *anchor` keys are overridden by design
                path = f"{where}.{key.value}" if where else key.value
                line = key.start_mark.line + 1
                if key.value in seen:
                    raise _DuplicateKey(f"line {line}: {path!r} is written twice (first at line {seen[key.value]}); write each section and key once")
                seen[key.value] = line
                self._check_duplicates(value, path)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._check_duplicates(item, f"{where}[{i}]")


_SECTIONS = {f.name: f.type for f in fields(Config)}
_CHOICES = {
    "model.truncation_side": ("left", "right"),
    "model.blend": ("auto", "off"),
    "features.view": ("truncate", "head_tail", "chunks", "rounds"),
    "cache.dtype": ("float32", "float16"),
    "stage_1.precision": ("auto", "bf16", "fp16", "fp32"),
}

# The largest integer any setting takes: sizes, counts and seeds pass through torch, numpy and C
# code that overflow past a C int (a batch size of 10**23 was "Overflow when unpacking long long").
INT_MAX = 2**31 - 1


@dataclass(frozen=True)
class _Range:
    """Where a number must lie: `low` <= value (or <, `low_open`), value <= `high` (or <, `high_open`).
    Floats must also be finite; ints are bounded by INT_MAX at most."""

    low: float
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def holds(self, value: int | float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def describe(self, integer: bool) -> str:
        if integer:
            low = int(self.low) + 1 if self.low_open else int(self.low)
            return f"an integer from {low} to {int(min(self.high, INT_MAX))}"
        if self.high == math.inf:
            return f"a finite number {'>' if self.low_open else '>='} {self.low:g}"
        return f"a number in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


_POSITIVE = _Range(0, INT_MAX, low_open=True)  # an int >= 1, or a float > 0
_ZERO_OR_MORE = _Range(0, INT_MAX)  # an int or float >= 0 (0: off, where the key's comment says so)
_FRACTION = _Range(0, 1, high_open=True)  # [0, 1)
_PROBABILITY = _Range(0, 1, low_open=True, high_open=True)  # (0, 1)
_RATE = _Range(0, low_open=True)  # a float > 0 with no upper bound
_NON_NEGATIVE = _Range(0)  # a float >= 0 with no upper bound

# Every number of the config, in one table: `pipeline/config.py`'s one place for a setting's range.
# A key ending in [] applies to every item of a list. tests/test_config.py checks that every int
# or float key is here.
_RANGES: dict[str, _Range] = {
    "model.max_context_tokens": _POSITIVE,
    "model.max_module_tokens": _POSITIVE,
    "model.batch_size": _POSITIVE,
    "model.dropout": _FRACTION,
    "features.max_pieces": _POSITIVE,
    "features.window_words": _ZERO_OR_MORE,  # 0: half the role's token limit
    "data.val_fraction": _FRACTION,
    "data.test_fraction": _FRACTION,
    "data.split_seed": _ZERO_OR_MORE,
    "cache.shard_size": _POSITIVE,
    "stage_0.lr": _RATE,
    "stage_0.warmup_steps": _ZERO_OR_MORE,
    "stage_0.grad_accumulation": _POSITIVE,
    "stage_0.epochs": _POSITIVE,
    "stage_0.batch_size": _POSITIVE,
    "stage_0.patience": _POSITIVE,
    "stage_0.memory_map_above_mb": _ZERO_OR_MORE,  # or "auto"
    "stage_0.ensemble": _Range(1, 1000),  # each member is a whole training run
    "stage_1.encoder_lr": _RATE,
    "stage_1.heads_lr": _RATE,
    "stage_1.warmup_steps": _ZERO_OR_MORE,
    "stage_1.grad_accumulation": _POSITIVE,
    "stage_1.epochs": _POSITIVE,
    "stage_1.batch_size": _POSITIVE,
    "stage_1.patience": _POSITIVE,
    "stage_1.save_every_steps": _ZERO_OR_MORE,  # 0: at the end of each epoch only
    "loss.margin": _NON_NEGATIVE,
    "loss.margin_weight": _NON_NEGATIVE,
    "training.seed": _ZERO_OR_MORE,
    "training.weight_decay": _NON_NEGATIVE,
    "training.grad_clip": _RATE,
    "training.max_warmup_fraction": _FRACTION,
    "evaluation.bootstrap_samples": _ZERO_OR_MORE,  # 0: no confidence intervals
    "evaluation.confidence": _PROBABILITY,
    "evaluation.calibration_bins": _POSITIVE,
    "serve.max_batch": _POSITIVE,
    "serve.max_wait_ms": _Range(0, 60_000),  # a batch waiting a minute for company is a mistake
    "serve.max_request_rows": _POSITIVE,
    "serve.max_body_bytes": _POSITIVE,
    "serve.max_request_chars": _POSITIVE,
    "serve.memory_size": _ZERO_OR_MORE,  # 0: no memory
    "serve.max_pending": _POSITIVE,
    "serve.read_timeout_s": _Range(0, 86_400, low_open=True),
    "search.lr[]": _RATE,
    "search.weight_decay[]": _NON_NEGATIVE,
    "search.dropout[]": _FRACTION,
    "search.epochs[]": _POSITIVE,
}

def _from_dict(data: dict[str, dict[str, Any]], source: str) -> Config:
    sections = {}
    for section, cls in _SECTIONS.items():
        known = {f.name: f for f in fields(cls)}
        hints = typing.get_type_hints(cls)
        for name, value in data[section].items():
            key = f"{section}.{name}"
            if name not in known:
                raise ConfigError(f"{source}: unknown key {key!r} (known in {section}: {', '.join(known)})")
            data[section][name] = _check_type(value, hints[name], key, source)
            if key in _CHOICES and value not in _CHOICES[key]:
                raise ConfigError(f"{source}: {key} must be one of {', '.join(_CHOICES[key])}, got {value!r}")
        sections[section] = cls(**data[section])
    config = Config(**sections)
    _check_values(config, source)
    return config


def _check_type(value: Any, hint: Any, key: str, source: str) -> Any:
    if typing.get_origin(hint) is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{source}: {key} must be a mapping, got {value!r}")
        return {k: _check_type(v, typing.get_args(hint)[1], f"{key}.{k}", source) for k, v in value.items()}
    if typing.get_origin(hint) is list:
        inner = typing.get_args(hint)[0]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: {key} must be a list of {inner.__name__} values, got {value!r}")
        return [_check_type(v, inner, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if isinstance(hint, types.UnionType):  # `int | str`: a value of either type, checked in _check_values
        if not any(_fits_type(value, member) for member in typing.get_args(hint)):
            raise ConfigError(f"{source}: {key} must be {' or '.join(t.__name__ for t in typing.get_args(hint))}, got {value!r}")
        return value
    if not _fits_type(value, hint):
        raise ConfigError(f"{source}: {key} must be {hint.__name__}, got {value!r}")
    if hint is float:
        try:
            return float(value)
        except OverflowError:  # an int too large for a float
            raise ConfigError(f"{source}: {key} must be a finite number, got {value!r}") from None
    return value


def _fits_type(value: Any, hint: type) -> bool:
    return {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }[hint]


def _check_values(config: Config, source: str) -> None:
    def require(condition: bool, message: str) -> None:
        if not condition:
            raise ConfigError(f"{source}: {message}")

    above = config.stage_0.memory_map_above_mb
    require(above == "auto" or isinstance(above, int), f"stage_0.memory_map_above_mb must be auto or 0 or more, got {above!r}")
    for key, value in _numbers(config):
        rule = _RANGES.get(re.sub(r"\[\d+\]$", "[]", key))
        integer = isinstance(value, int)
        if rule is None:  # a number without a row: finite, and an int a C int holds
            require((integer or math.isfinite(value)) and (not integer or -INT_MAX - 1 <= value <= INT_MAX), f"{key} must be a finite number within +-{INT_MAX}, got {value!r}")
        else:
            require(rule.holds(value) and (not integer or value <= INT_MAX), f"{key} must be {rule.describe(integer)}, got {value!r}")
    data = config.data
    require(len(data.modules) > 0 and len(set(data.modules)) == len(data.modules), f"data.modules must be distinct and non-empty, got {data.modules}")
    require(data.val_fraction + data.test_fraction < 1, "data.val_fraction + data.test_fraction must leave pairs for training (< 1)")
    for module, names in data.module_fields.items():
        unknown = [name for name in names if name not in ROUND_FIELDS]
        require(bool(names) and not unknown, f"data.module_fields.{module} must list round fields among {', '.join(ROUND_FIELDS)}, got {names}")
    search = config.search
    for name in ("head", "lr", "weight_decay", "dropout", "epochs"):
        require(len(getattr(search, name)) > 0, f"search.{name} must list at least one value")


def _numbers(config: Config) -> Iterator[tuple[str, int | float]]:
    """Every int and float of `config` with its dotted key (`search.lr[1]` for a list's items)."""
    for section in _SECTIONS:
        for f in fields(getattr(config, section)):
            value = getattr(getattr(config, section), f.name)
            key = f"{section}.{f.name}"
            items = [(f"{key}[{i}]", v) for i, v in enumerate(value)] if isinstance(value, list) else [(key, value)]
            for name, item in items:
                if isinstance(item, (int, float)) and not isinstance(item, bool):
                    yield name, item
