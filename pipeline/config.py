"""One YAML config for every verb: sections model, features, data, cache, stage_0, stage_1, loss, training, evaluation, serve, search.

    model:
      encoder: Qwen/Qwen3-Embedding-0.6B
    stage_0:
      epochs: 3

Each section is a pydantic model below, and each key is declared there once: its type, default,
bounds or choices and description. `docs/reference/config.md` lists them all, and the CLI's flags
take their types, ranges and help from them (pipeline/cli.py: `setting_option`). Any key left out
keeps its default; an unknown key, a value of the wrong type (1 is no bool, "3" no int), a number
out of its bounds or not finite, or a section or key written twice is an error that names the file
and the key. Command-line flags override the file. Every verb writes the resolved config
(`config.yaml`) next to its output.

    python -m pipeline.config --reference > docs/reference/config.md   # after changing a declaration
"""

import argparse
import math
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from data.errors import ConfigError
from data.files import write_text_atomic
from data.schema import DEFAULT_MODULES
from data.trajectory import DEFAULT_MODULE_FIELDS, ROUND_FIELDS
from features.views import ViewName

# The largest integer any setting takes: sizes, counts and seeds pass through torch, numpy and C
# code that overflow past a C int (a batch size of 10**23 was "Overflow when unpacking long long").
INT_MAX = 2**31 - 1

OneOrMore = Annotated[int, Field(ge=1, le=INT_MAX)]
ZeroOrMore = Annotated[int, Field(ge=0, le=INT_MAX)]  # 0 means off where the description says so
Fraction = Annotated[float, Field(ge=0, lt=1)]
Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]


class Section(BaseModel):
    """A section of the config: unknown keys are refused, values must have the declared type as
    written (strict: 1 is no bool, "3" no int; an int is a float) and floats must be finite."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class ModelConfig(Section):
    """The encoder, its token limits, and the reward heads on top of it."""

    encoder: str = Field("Qwen/Qwen3-Embedding-0.6B", description="Model id, local folder, or `minilm` (bundled all-MiniLM-L6-v2).")
    max_context_tokens: OneOrMore = Field(2048, description="Tokens of a context the encoder reads; longer contexts are cut (model.truncation_side).")
    max_module_tokens: OneOrMore = Field(512, description="Tokens of a module text the encoder reads; longer texts are cut (model.truncation_side).")
    context_prompt: str = Field(
        "auto",
        description="Instruction before each context text. auto: the Qwen3 instruction (features.encoder.QWEN3_CONTEXT_PROMPT) "
        "for last-token-pooling models, which are instruction-tuned as Qwen3-Embedding's authors describe; none for others "
        "(MiniLM). Module texts never get one.",
    )
    truncation_side: Literal["left", "right"] = Field("left", description="Which end of a long text the encoder keeps: left keeps the end (a trajectory's latest rounds), right its start.")
    normalize: bool = Field(True, description="L2-normalise the text vectors.")
    batch_size: OneOrMore = Field(32, description="Texts per encoder batch.")
    dropout: Fraction = Field(0.1, description="Dropout of the reward heads' hidden layers.")
    head: str = Field(
        "2d,d",
        description="Hidden widths of each reward head (heads/model.py): 2d,d is the design's 3d -> 2d -> d -> 1; 256 one hidden layer; linear none.",
    )
    blend: Literal["auto", "off"] = Field(
        "auto",
        description="The reward as a blend of the heads, a linear part and a TF-IDF part (heads/blend.py). auto: train-heads fits "
        "both parts and blends them with the heads at weights chosen on held-out pairs (validation, and training pairs out "
        "of fold when there are few; model.blend_rule says how); off: the heads only.",
    )
    blend_rule: Literal["argmax", "shrink", "equal", "stack", "best_part"] = Field(
        "shrink",
        description="How model.blend: auto weighs the parts on the held-out pairs (heads/blend.py rule_weights): shrink the grid "
        "point of highest accuracy moved toward equal weights, the more the fewer held-out tasks (below 8,000 training pairs, "
        "equal weights on the linear and TF-IDF parts: the heads add nothing there); argmax that point itself; equal "
        "equal weights on every part; stack a regularised logistic regression on the parts' score differences, weights >= 0; "
        "best_part the single part of highest held-out accuracy. bench/blend_regret.py measures each (docs/results/blend-regret.md).",
    )


class FeaturesConfig(Section):
    """How a text longer than the encoder's window becomes vectors (features/views.py)."""

    view: ViewName = Field(
        "truncate",
        description="How long texts become vectors: truncate (one vector, cut to the token limit), head_tail (one vector of "
        "the text's start and end), chunks (the mean of word windows' vectors), rounds (one vector per [Round i] block, "
        "pooled by the heads with learned attention).",
    )
    max_pieces: OneOrMore = Field(32, description="Pieces per text at most: the first half and the last half are kept.")
    window_words: ZeroOrMore = Field(0, description="Words per window (chunks, and rounds longer than this); 0: half the role's token limit.")


class DataConfig(Section):
    """The modules, and how pairs are split and mined from runs."""

    modules: list[str] = Field(default_factory=lambda: list(DEFAULT_MODULES), description="The agent's modules, one reward head each; distinct.")
    group_by: str = Field("task", description="Column no two splits share: pairs with the same value here always land in the same split.")
    val_fraction: Fraction = Field(0.1, description="Share of pairs for validation (with test_fraction, less than 1).")
    test_fraction: Fraction = Field(0.1, description="Share of pairs for test (with val_fraction, less than 1).")
    split_seed: ZeroOrMore = Field(0, description="Seed of the split: same seed, same splits.")
    module_fields: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_MODULE_FIELDS.items()},
        description="Which round fields of a run (data/runs.py) make up each module's text when `pipeline pairs` mines pairs "
        f"from runs, among {', '.join(ROUND_FIELDS)}; give the whole mapping when you change it.",
    )

    @field_validator("modules")
    @classmethod
    def _distinct(cls, modules: list[str]) -> list[str]:
        if not modules or len(set(modules)) != len(modules):
            raise ValueError(f"data.modules must be distinct and non-empty, got {modules}")
        return modules

    @field_validator("module_fields")
    @classmethod
    def _round_fields(cls, module_fields: dict[str, list[str]]) -> dict[str, list[str]]:
        for module, names in module_fields.items():
            if not names or any(name not in ROUND_FIELDS for name in names):
                raise ValueError(f"data.module_fields.{module} must list round fields among {', '.join(ROUND_FIELDS)}, got {names}")
        return module_fields

    @model_validator(mode="after")
    def _leaves_training_pairs(self) -> "DataConfig":
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("data.val_fraction + data.test_fraction must leave pairs for training (< 1)")
        return self


class CacheConfig(Section):
    """The embedding cache's files."""

    dtype: Literal["float32", "float16"] = Field("float32", description="Vectors on disk as float32 or float16; part of the cache namespace.")
    shard_size: OneOrMore = Field(4096, description="Vectors per Parquet shard: the most a killed `embed` can lose.")


class Stage0Config(Section):
    """Stage 0: `pipeline train-heads`, the heads trained on cached vectors."""

    lr: Positive = Field(3e-4, description="Peak learning rate of AdamW.")
    warmup_steps: ZeroOrMore = Field(100, description="Optimiser steps of linear warmup (at most training.max_warmup_fraction of all steps).")
    grad_accumulation: OneOrMore = Field(2, description="Batches per optimiser step.")
    epochs: OneOrMore = Field(5, description="Epochs at most; training stops early and keeps its best epoch.")
    batch_size: OneOrMore = Field(64, description="Pairs per batch.")
    patience: OneOrMore = Field(2, description="Epochs without a better validation loss before training stops.")
    memory_map_above_mb: ZeroOrMore | str = Field(
        "auto",
        description="Piece vectors larger than this (MiB) stay on disk, memory-mapped; auto: larger than half the memory "
        "available when the run starts (cache.memory_map_above).",
    )
    ensemble: int = Field(1, ge=1, le=1000, description="Members of an ensemble trained on bootstrap resamples of the training tasks (heads/ensemble.py), each a whole training run; 1: one model.")

    @field_validator("memory_map_above_mb")
    @classmethod
    def _auto_or_mib(cls, value: int | str) -> int | str:
        if isinstance(value, str) and value != "auto":
            raise ValueError(f"stage_0.memory_map_above_mb must be auto or 0 or more, got {value!r}")
        return value


class Stage1Config(Section):
    """Stage 1: `pipeline finetune`, encoder and heads trained together on raw text."""

    encoder_lr: Positive = Field(1e-5, description="Peak learning rate of the encoder.")
    heads_lr: Positive = Field(1e-4, description="Peak learning rate of the heads.")
    warmup_steps: ZeroOrMore = Field(100, description="Optimiser steps of linear warmup (at most training.max_warmup_fraction of all steps).")
    grad_accumulation: OneOrMore = Field(2, description="Batches per optimiser step.")
    epochs: OneOrMore = Field(5, description="Epochs at most; training stops early and keeps its best epoch.")
    batch_size: OneOrMore = Field(8, description="Pairs per batch and process.")
    patience: OneOrMore = Field(2, description="Epochs without a better validation loss before training stops.")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field("auto", description="Autocast precision; auto: bf16 where the GPU or CPU has it, fp16 on older GPUs.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward pass: less memory, more time.")
    save_every_steps: ZeroOrMore = Field(0, description="Optimiser steps between resumable saves; 0: at the end of each epoch only.")


class LossConfig(Section):
    """The pairwise loss: -log sigmoid(r+ - r-) plus a margin term."""

    margin: NonNegative = Field(0.1, description="How far the positive's reward should exceed the negative's.")
    margin_weight: NonNegative = Field(0.1, description="Weight of the margin term in the loss.")


class TrainingConfig(Section):
    """What both stages share: seed, device, regularisation."""

    seed: ZeroOrMore = Field(0, description="Seed of initialisation and shuffling.")
    device: str = Field("auto", description="cpu, cuda, cuda:1, ...; auto picks cuda when present, else cpu.")
    weight_decay: NonNegative = Field(0.01, description="AdamW weight decay.")
    grad_clip: Positive = Field(1.0, description="Largest gradient norm; larger gradients are scaled down to it.")
    max_warmup_fraction: Fraction = Field(0.1, description="Warmup is capped to this fraction of all steps on small data.")


class EvaluationConfig(Section):
    """`pipeline evaluate`'s report."""

    bootstrap_samples: ZeroOrMore = Field(1000, description="Bootstrap resamples (over tasks) for the confidence intervals; 0: none.")
    confidence: float = Field(0.95, gt=0, lt=1, description="Level of the confidence intervals.")
    calibration_bins: OneOrMore = Field(10, description="Bins of the calibration table and plot.")
    logistic_baseline: bool = Field(
        True,
        description="Report a logistic regression on the heads' features as a baseline, fit on the checkpoint's training "
        "pairs; for a stage 1 checkpoint that first embeds all of them with its fine-tuned encoder, minutes on a CPU (a "
        "checkpoint whose blend has a linear part reports that part alone whatever this says: it costs nothing).",
    )


class ServeConfig(Section):
    """`pipeline serve` (pipeline/serve.py) and `pipeline score`."""

    max_batch: OneOrMore = Field(64, description="Rows scored together in one call; 1 scores every request alone (no micro-batching).")
    max_wait_ms: float = Field(5.0, ge=0, le=60_000, description="How long a batch waits for more requests after its first one arrived (a minute at most).")
    max_request_rows: OneOrMore = Field(1024, description="Rows (items, queries) one request may hold; more is refused with 413.")
    max_body_bytes: OneOrMore = Field(16 * 1024 * 1024, description="Largest request body in bytes; larger ones are refused with 413.")
    module: str = Field("", description="/get_reward's module when neither the label nor a `<module>` tag in the prompt names one.")
    normalize: bool = Field(False, description="Rewards as (r - mean) / std per module, as `pipeline evaluate` stored them, instead of raw.")
    memory_size: ZeroOrMore = Field(20_000, description="Text vectors kept in memory (LRU) so repeated texts skip the encoder; 0: none.")
    max_pending: OneOrMore = Field(256, description="Requests waiting to be scored; past it a request gets 503 with Retry-After.")
    read_timeout_s: float = Field(30.0, gt=0, le=86_400, description="Seconds a request's headers and body may take to arrive from its first byte; else the connection is closed.")
    docs: bool = Field(False, description="Serve /docs and /openapi.json.")
    allow_untrained: bool = Field(False, description="Also score modules whose head saw no training pairs (their scores mean nothing); refused by default.")
    extra_logs: bool = Field(True, description="/get_reward answers with extra_logs (per-query numbers OpenRLHF logs); false for OpenRLHF 0.8.x, whose client fails on them.")
    max_request_chars: OneOrMore = Field(4_000_000, description="Characters of text (contexts and module texts) one request may hold; more is refused with 413.")


class SearchConfig(Section):
    """`pipeline train-heads --search` tries every combination of these lists (heads/search.py) and
    keeps the one of lowest validation loss; a linear head has no dropout, so it is tried once per
    combination of the others. Each run stops early and keeps its best epoch, so `epochs` is the
    longest run (and the length of its lr decay), not a count to hit: 20 settings by default."""

    head: list[str] = Field(default_factory=lambda: ["2d,d", "256", "linear"], min_length=1, description="Head widths to try (as model.head).")
    lr: list[Positive] = Field(default_factory=lambda: [3e-4, 1e-3], min_length=1, description="Learning rates to try.")
    weight_decay: list[NonNegative] = Field(default_factory=lambda: [0.01, 0.1], min_length=1, description="Weight decays to try.")
    dropout: list[Fraction] = Field(default_factory=lambda: [0.1, 0.3], min_length=1, description="Dropouts to try.")
    epochs: list[OneOrMore] = Field(default_factory=lambda: [10], min_length=1, description="Longest runs to try, in epochs.")


class Config(BaseModel):
    """The whole config, one section each."""

    model_config = ConfigDict(extra="forbid")

    model: ModelConfig = Field(default_factory=ModelConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    stage_0: Stage0Config = Field(default_factory=Stage0Config)
    stage_1: Stage1Config = Field(default_factory=Stage1Config)
    loss: LossConfig = Field(default_factory=LossConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)

    @property
    def explicit(self) -> frozenset[str]:
        """Dotted keys the user set (in the file or by a flag), as opposed to defaults: a verb may
        choose for itself where the user did not, as train-heads picks the only encoder of a cache."""
        return frozenset(f"{section}.{name}" for section in CONFIG_SECTIONS for name in getattr(self, section).model_fields_set)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def save(self, path: str | Path) -> Path:
        return write_text_atomic(path, self.to_yaml())

    def override(self, values: dict[str, Any], source: str = "command line") -> "Config":
        """A copy with dotted keys replaced (`{"stage_0.epochs": 3}`); None values are skipped."""
        data = self.model_dump(exclude_unset=True)  # what the user set stays set: `explicit`
        for key, value in values.items():
            if value is not None:
                section, _, name = key.partition(".")
                data.setdefault(section, {})[name] = value
        return _validated(data, source)


CONFIG_SECTIONS = tuple(Config.model_fields)  # what a config file this pipeline writes holds


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Defaults, then the YAML file (if any), then `overrides` (dotted keys; None is skipped)."""
    config = Config() if path is None else _validated(_read_yaml(Path(path)), str(path))
    return config.override(overrides or {})


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)
    except _DuplicateKey as e:
        raise ConfigError(f"{path}: {e}") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config: {e.strerror or e}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections ({', '.join(CONFIG_SECTIONS)}), got {type(raw).__name__}")
    # a known section written with nothing under it keeps its defaults
    return {section: values for section, values in (raw or {}).items() if values is not None or section not in CONFIG_SECTIONS}


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


# PyYAML reads YAML 1.1, where 1e-4 is a string (it wants 1.0e-4); learning rates are written 1e-4,
# so here, as in YAML 1.2, a number in exponent notation is a float.
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


# --- the declarations, read back: for error messages, the CLI's flags and the reference ---------


@dataclass(frozen=True)
class Setting:
    """One key of the config as declared."""

    key: str  # dotted: stage_0.lr
    annotation: Any  # its type, bounds included
    default: Any
    description: str

    @property
    def type_name(self) -> str:
        """The type in words: int, float, list of float, int or str, ..."""
        return _type_words(self.annotation)

    @property
    def number(self) -> type | None:
        """int or float when the value (or each item of it) is a number."""
        return _number(self.annotation)[0]

    @property
    def bounds(self) -> dict[str, float]:
        """The number's bounds by pydantic's names: ge, gt, le, lt."""
        return _number(self.annotation)[1]

    @property
    def choices(self) -> tuple[str, ...]:
        return typing.get_args(self.annotation) if typing.get_origin(self.annotation) is Literal else ()

    def allowed(self) -> str:
        """Which values the key takes, in words ("" where its type says it all)."""
        if self.choices:
            return f"one of {', '.join(self.choices)}"
        bounds = self.bounds
        if not bounds:
            return ""
        if self.number is int:
            low = bounds["gt"] + 1 if "gt" in bounds else bounds["ge"]
            high = bounds["lt"] - 1 if "lt" in bounds else bounds.get("le", INT_MAX)
            return f"an integer from {low} to {high}"
        low, low_open = (bounds["gt"], True) if "gt" in bounds else (bounds["ge"], False)
        if "le" not in bounds and "lt" not in bounds:
            return f"a finite number {'>' if low_open else '>='} {low:g}"
        high, high_open = (bounds["lt"], True) if "lt" in bounds else (bounds["le"], False)
        return f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def shown_default(self) -> str:
        """The default as it is written in YAML."""
        return yaml.safe_dump(self.default, default_flow_style=True, width=math.inf, sort_keys=False).removesuffix("...\n").strip()


def _declared() -> list[Setting]:
    """Every key of the config, section by section, in declaration order."""
    found = []
    for section in CONFIG_SECTIONS:
        for name, field in Config.model_fields[section].annotation.model_fields.items():
            annotation = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
            found.append(Setting(f"{section}.{name}", annotation, field.get_default(call_default_factory=True), field.description))
    return found


SETTINGS = {setting.key: setting for setting in _declared()}  # every key, in declaration order


def _parts(annotation: Any) -> tuple[Any, list]:
    """(the type without `Annotated`, the constraints `Annotated` put on it)."""
    if typing.get_origin(annotation) is not Annotated:
        return annotation, []
    base, *extras = typing.get_args(annotation)
    return base, [constraint for extra in extras for constraint in getattr(extra, "metadata", [extra])]


def _number(annotation: Any) -> tuple[type | None, dict[str, float]]:
    base, constraints = _parts(annotation)
    origin = typing.get_origin(base)
    if origin is list:
        return _number(typing.get_args(base)[0])
    if origin in (typing.Union, types.UnionType):
        return next((found for member in typing.get_args(base) if (found := _number(member))[0]), (None, {}))
    bounds = {name: getattr(c, name) for c in constraints for name in ("ge", "gt", "le", "lt") if hasattr(c, name)}
    return (base if base in (int, float) else None), bounds


def _type_words(annotation: Any) -> str:
    base = _parts(annotation)[0]
    origin, args = typing.get_origin(base), typing.get_args(base)
    if origin is Literal:
        return "str"
    if origin is list:
        return f"list of {_type_words(args[0])}"
    if origin is dict:
        return f"mapping of {_type_words(args[0])} to {_type_words(args[1])}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_words(member) for member in args)
    return base.__name__


def _validated(data: dict[str, Any], source: str) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{source}: {_message(e.errors()[0])}") from None


_BOUND_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number"}


def _message(error: dict) -> str:
    """pydantic's complaint as one line naming the dotted key: what its value must be, and what it is."""
    kind, where, value = error["type"], error["loc"], error["input"]
    if kind == "value_error":  # the validators above say it all
        return str(error["ctx"]["error"])
    section = where[0]
    if len(where) == 1:
        if kind == "extra_forbidden":
            return f"unknown section {section!r} (known: {', '.join(CONFIG_SECTIONS)})"
        return f"section {section!r} must be a mapping, got {type(value).__name__}"
    name = where[1]
    if kind == "extra_forbidden":
        known = Config.model_fields[section].annotation.model_fields
        return f"unknown key '{section}.{name}' (known in {section}: {', '.join(known)})"
    setting = SETTINGS[f"{section}.{name}"]
    # below the key: list indexes, a mapping's keys, and the name of the member of a union (left out)
    annotation, key = setting.annotation, setting.key
    for part in where[2:]:
        origin = typing.get_origin(_parts(annotation)[0])
        if origin in (list, dict):
            annotation = typing.get_args(_parts(annotation)[0])[-1]
            key += f"[{part}]" if origin is list else f".{part}"
    if kind == "too_short":
        return f"{key} must list at least one value"
    if kind == "literal_error":
        return f"{key} must be one of {', '.join(setting.choices)}, got {value!r}"
    if setting.number is float and type(value) is int:  # shown as the float it was read as
        try:
            value = float(value)
        except OverflowError:
            return f"{key} must be a finite number, got {value!r}"
    if kind in _BOUND_ERRORS:
        return f"{key} must be {setting.allowed()}, got {value!r}"
    expected = _type_words(annotation)
    return f"{key} must be {'a ' if expected.startswith(('list', 'mapping')) else ''}{expected}, got {value!r}"


def config_reference(flags: dict[str, dict[str, list[str]]]) -> str:
    """docs/reference/config.md: every section and key with its type, default, allowed values and
    description, and the flags that set it (`flags`: {key: {flag: [verb, ...]}}, pipeline.cli.setting_flags)."""
    lines = [
        "# Config reference",
        "",
        "<!-- Generated from pipeline/config.py by `python -m pipeline.config --reference > docs/reference/config.md`; edit the declarations there, not this file. -->",
        "",
        "Every verb takes `--config FILE.yaml`; a key left out keeps its default, and a verb's flags override the file.",
        "An unknown key, a value of the wrong type or out of its range, or a key written twice is refused, naming the file and the key.",
        "Every verb writes the resolved config, all keys, as `config.yaml` beside its output.",
        "",
        "```yaml",
        "stage_0:",
        "  epochs: 3",
        "  lr: 0.001",
        "features:",
        "  view: rounds",
        "```",
    ]
    for section in CONFIG_SECTIONS:
        model = Config.model_fields[section].annotation
        lines += ["", f"## {section}", "", " ".join(model.__doc__.split()), ""]
        for setting in SETTINGS.values():
            if setting.key.startswith(f"{section}."):
                allowed = setting.allowed() and ("each " if setting.type_name.startswith("list") else "") + setting.allowed()
                facts = ", ".join(fact for fact in (setting.type_name, f"default `{setting.shown_default()}`", allowed) if fact)
                set_by = "; ".join(f"`{flag}` ({', '.join(verbs)})" for flag, verbs in flags.get(setting.key, {}).items())
                lines.append(f"- **`{setting.key.partition('.')[2]}`** ({facts}): {setting.description}" + (f" Flag: {set_by}." if set_by else ""))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m pipeline.config", description=__doc__.split("\n")[0])
    parser.add_argument("--reference", action="store_true", help="Print docs/reference/config.md, the reference of every key.")
    if parser.parse_args().reference:
        from pipeline.cli import setting_flags  # the flags are the CLI's, which imports this module

        print(config_reference(setting_flags()), end="")
    else:
        parser.print_help()
