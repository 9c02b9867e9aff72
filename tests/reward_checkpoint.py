"""A small real checkpoint for the evaluation, scoring and serving tests, made by the real recipes
(MiniLM at 32 tokens, 2 epochs): about 6 s on 2 CPU cores.

    root, config = train_checkpoint(tmp_path)   # root / "checkpoint": stage 0 heads, not yet evaluated
    root = make_checkpoint(tmp_path)
    root / "checkpoint"          # with per-module normalisation, stored by `pipeline evaluate` on its validation data
    root / "plain"               # the same heads before that: no normalisation
    root / "cache"               # vectors of train and val texts; root / "unseen.jsonl" has texts it lacks
"""

import shutil
from pathlib import Path

from data import pairs_from_records, write_pairs
from data.synth import generate_pairs
from heads.checkpoint import CheckpointRecord, migrate
from pipeline.config import Config, load_config
from pipeline.embed import embed_pairs, load_encoder
from pipeline.evaluate import evaluate
from pipeline.train_heads import train_heads

MODULES = ["reflection", "planner", "executor", "memory"]


def checkpoint_config() -> Config:
    """The config the checkpoint is made with."""
    return load_config(
        overrides={
            "model.encoder": "minilm", "model.max_context_tokens": 32, "model.max_module_tokens": 32,
            "stage_0.epochs": 2, "stage_0.batch_size": 16, "training.device": "cpu", "evaluation.bootstrap_samples": 200,
        }
    )  # fmt: skip


def record_of(keys: dict) -> CheckpointRecord:
    """The record of a checkpoint whose config.json (of any format) holds `keys`, the keys it
    needs and lacks those of a small stage 0 model."""
    return CheckpointRecord.from_dict(migrate({"dimension": 8, "modules": MODULES, "encoder_fingerprint": {}, **keys}))


def train_checkpoint(root: Path) -> tuple[Path, Config]:
    records = generate_pairs(120, seed=5)
    for name, part in (("train", records[:80]), ("val", records[80:100]), ("unseen", records[100:])):
        write_pairs(pairs_from_records(part), root / f"{name}.jsonl")
    config = checkpoint_config()
    embed_pairs([root / "train.jsonl", root / "val.jsonl"], root / "cache", config, encoder=load_encoder(config), progress=False)
    train_heads(files=[root / "train.jsonl"], cache_dir=root / "cache", out=root / "checkpoint", config=config, val_file=root / "val.jsonl", progress=False)
    return root, config


def make_checkpoint(root: Path) -> Path:
    root, config = train_checkpoint(root)
    shutil.copytree(root / "checkpoint", root / "plain")
    result = evaluate(root / "checkpoint", [root / "val.jsonl"], root / "cache", root / "report", config, progress=False)
    assert result.normalization_stored
    return root
