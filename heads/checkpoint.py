"""A checkpoint folder's record: its config.json as a typed, versioned `CheckpointRecord`, the one
`migrate` that reads the config.json of older folders, and the normalisation `pipeline evaluate`
stores beside it.

    record = read_record("ckpt/")              # any format: migrated in memory, the folder never rewritten
    record.modules, record.view, record.blend, record.module_pairs, record.normalization
    record = CheckpointRecord.of(heads, stage=0, encoder_fingerprint=..., view=view, ...)
    save_checkpoint(folder, heads, record)     # heads.safetensors, then config.json: stage 0 and stage 1
    write_normalization("ckpt/", normalization)   # normalization.json; config.json stays as training wrote it

A checkpoint folder holds config.json (this record), heads.safetensors, the blend's part files
(heads/blend.py) when its reward blends them, `encoder/` after stage 1, and normalization.json once
`pipeline evaluate` has run on its validation data (or with --store-normalization).

Formats of config.json:
  1  no `format_version`: every checkpoint from before this record. Keys came in over time (see
     `migrate`), and evaluate wrote the normalisation into it.
  2  `format_version: 2`: every key of `CheckpointRecord` written (the blend and its choice only
     when the reward has them); the normalisation in normalization.json.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from safetensors.torch import save_file
from torch import nn

from data.files import atomic_path, json_text, write_text_atomic
from features.views import View
from heads.model import CONFIG, DESIGN_HEAD, WEIGHTS, CheckpointError, damaged, error_line, read_config, valid_normalization

FORMAT_VERSION = 2
NORMALIZATION = "normalization.json"


@dataclass(frozen=True)
class CheckpointRecord:
    """What a checkpoint's config.json says: the heads' shape, the encoder whose vectors they read,
    how texts become vectors, the reward's blend, and what training saw. `provenance` keeps what
    only people read (metrics, best epoch, library versions, the search and ensemble members; stage
    1's init checkpoint, precision, world size, seconds)."""

    dimension: int
    modules: list[str]
    encoder_fingerprint: dict
    stage: int = 0
    dropout: float = 0.1
    head: str = DESIGN_HEAD
    pooling: str = "mean"
    ensemble: int = 1  # members; 1: a single model
    cache_namespace: str | None = None  # the namespace stage 0 read (None after stage 1: its encoder changed)
    cache_dtype: str = "float32"
    view: View = field(default_factory=View)
    blend: dict | None = None  # `Blended.record()`: the weights, means and stds of the parts; None: the heads alone
    blend_choice: dict | None = None  # how train-heads chose the weights
    module_pairs: dict | None = None  # {module: {"train": n, "val": n}}; None: a checkpoint from before the count
    training_config: dict = field(default_factory=dict)  # `Config.to_dict()` of the run
    train_files: list[str] = field(default_factory=list)
    val_file: str | None = None
    train_data_sha256: str | None = None
    val_data_sha256: str | None = None
    provenance: dict = field(default_factory=dict)
    # {module: {"mean", "std", "n_responses"}, "data_sha256"}: what evaluate stored in normalization.json; never in config.json
    normalization: dict | None = None
    format_version: int = FORMAT_VERSION

    @classmethod
    def of(cls, heads: nn.Module, **fields) -> CheckpointRecord:
        """The record of `heads` (a `MultiModuleRewardModel` or a `RewardEnsemble`): their shape, and `fields`."""
        shape = {"dimension": heads.dimension, "modules": list(heads.modules_order), "dropout": heads.dropout, "head": heads.head, "pooling": heads.pooling}
        return cls(**shape, ensemble=getattr(heads, "size", 1), **fields)  # only an ensemble has a size

    @classmethod
    def from_dict(cls, raw: dict) -> CheckpointRecord:
        """From a config.json of the current format (`migrate` brings older ones to it)."""
        names = {f.name for f in dataclasses.fields(cls)} - {"view", "provenance", "normalization"}
        view = View(raw["view"], dict(raw["window_words"]), int(raw["max_pieces"]))
        provenance = {k: v for k, v in raw.items() if k not in names and k not in VIEW_KEYS and k != "normalization"}
        return cls(**{k: raw[k] for k in names if k in raw}, view=view, provenance=provenance, normalization=raw.get("normalization"))

    def to_dict(self) -> dict:
        """config.json: the record's fields with the view's and the provenance's keys inline; never the normalisation."""
        record = {
            "format_version": self.format_version, "stage": self.stage, "dimension": self.dimension, "modules": self.modules,
            "dropout": self.dropout, "head": self.head, "pooling": self.pooling, "ensemble": self.ensemble,
            "encoder_fingerprint": self.encoder_fingerprint, "cache_namespace": self.cache_namespace, "cache_dtype": self.cache_dtype,
            **self.view.record(), "training_config": self.training_config, "train_files": self.train_files, "val_file": self.val_file,
            "train_data_sha256": self.train_data_sha256, "val_data_sha256": self.val_data_sha256, "module_pairs": self.module_pairs,
        }  # fmt: skip
        if self.blend is not None:
            record["blend"] = self.blend
        if self.blend_choice is not None:
            record["blend_choice"] = self.blend_choice
        return {**record, **self.provenance}

    def save(self, folder: str | Path) -> None:
        """config.json, atomically: the one writer of every checkpoint's record, stage 0 and stage 1."""
        write_text_atomic(Path(folder) / CONFIG, json_text(self.to_dict(), indent=2, default=str))


VIEW_KEYS = ("view", "window_words", "max_pieces")
# what `migrate` fills in for format 1, and a later format's config.json must hold
MIGRATED_KEYS = ("dropout", "head", "pooling", "ensemble", "cache_dtype", *VIEW_KEYS, "module_pairs")
FORMAT_1_ONLY = {"lexical": "the blend is recorded as 'blend'", "normalization": f"the normalisation lives in {NORMALIZATION}"}


def migrate(raw: dict) -> dict:
    """A config.json of any earlier format as the current one (a new dict; `raw` is left alone).
    Every backward-compatible reading lives here, one step per key that older checkpoints lack."""
    record = dict(raw)
    if record.get("format_version", 1) == 1:
        # the heads' settings, before they were recorded: the design's head, its dropout and mean pooling
        record.setdefault("dropout", 0.1)
        record.setdefault("head", DESIGN_HEAD)
        record.setdefault("pooling", "mean")
        # ensembles recorded their size; a single model had no `ensemble` key
        record.setdefault("ensemble", 1)
        # before the cache could hold float16 vectors, stage 0 read float32 ones
        record.setdefault("cache_dtype", "float32")
        # before views (features/views.py), every text was one truncated piece: the truncate view
        if "view" not in record:
            record.update(View().record())
        # before the per-module count of training pairs: unknown, so every head counts as trained
        record.setdefault("module_pairs", None)
        # before the blend's linear part, the `lexical` record: the heads and a TF-IDF part at weight w
        lexical = record.pop("lexical", None)
        if lexical and not record.get("blend"):
            w = float(lexical["weight"])
            record["blend"] = {
                "heads": {"weight": 1 - w, "mean": float(lexical["head_mean"]), "std": float(lexical["head_std"])},
                "linear": {"weight": 0.0, "mean": 0.0, "std": 1.0},
                "tfidf": {"weight": w, "mean": float(lexical["lexical_mean"]), "std": float(lexical["lexical_std"])},
                "files": ["lexical.json", "lexical.safetensors"], "before_linear_part": True,
            }  # fmt: skip
        # evaluate wrote the normalisation into config.json; now it is normalization.json beside it,
        # which `read_record` lets win when both are there (the newer evaluation)
        record.setdefault("normalization", None)
        record["format_version"] = FORMAT_VERSION
    return record


def read_record(folder: str | Path) -> CheckpointRecord:
    """The checkpoint's record: config.json checked (`heads.model.read_config`, `CheckpointError`
    naming the file and key), migrated from its format, with normalization.json when evaluate
    stored one."""
    folder = Path(folder)
    raw = read_config(folder)
    version = raw.get("format_version", 1)
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{folder / CONFIG} is checkpoint format {version}, and this pipeline reads formats up to {FORMAT_VERSION}: "
            "upgrade the pipeline to read it"
        )
    if version > 1:
        for key, instead in FORMAT_1_ONLY.items():
            if key in raw:
                raise damaged(folder / CONFIG, f"{key!r} is a key of checkpoint format 1, not of format {version} ({instead})")
    migrated = migrate(raw)
    missing = [key for key in MIGRATED_KEYS if key not in migrated]
    if missing:  # format 1 lacked them all; a later format writes them all
        raise damaged(folder / CONFIG, f"{missing[0]!r} is missing (checkpoint format {version} records it)")
    record = CheckpointRecord.from_dict(migrated)
    normalization = read_normalization(folder)
    return dataclasses.replace(record, normalization=normalization) if normalization is not None else record


def read_normalization(folder: str | Path) -> dict | None:
    """normalization.json of the checkpoint, or None when evaluate stored none there."""
    path = Path(folder) / NORMALIZATION
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise damaged(path, f"not readable JSON ({error_line(e)})") from None
    if not valid_normalization(stored):
        raise damaged(path, "should be an object of {module: {mean, std}} with numbers (or null)")
    return stored


def write_normalization(folder: str | Path, normalization: dict) -> None:
    """normalization.json, atomically: the per-module reward mean and std `pipeline evaluate`
    measured, which `--normalize` scores with. The training artifacts are left as they are."""
    write_text_atomic(Path(folder) / NORMALIZATION, json_text(normalization, indent=2))


def save_checkpoint(folder: str | Path, heads: nn.Module, record: CheckpointRecord) -> None:
    """`heads` and their record into `folder`, heads.safetensors first and config.json last (it
    names the encoder, so a folder caught between two writes is refused, never misread), each
    atomically. A normalisation left from earlier heads in the folder is removed: it measured those."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / WEIGHTS) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in heads.state_dict().items()}, tmp)
    (folder / NORMALIZATION).unlink(missing_ok=True)
    record.save(folder)
