"""Stage 0b recipe: train one reward head per module on cached vectors only.

    pipeline train-heads splits/train.jsonl --val splits/val.jsonl --cache cache/ --out ckpt/ --encoder minilm
    pipeline train-heads more.jsonl --cache cache/ --out ckpt2/ --resume ckpt/     # continue on new data

Reads the pair-feature view from the cache once into tensors; the encoder never runs (unless
`--embed-missing` is asked for). Validates every epoch, stops early, keeps the best epoch, and
writes the checkpoint folder atomically: heads.safetensors, config.json, metrics.jsonl.
"""

import copy
import hashlib
import json
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import torch
from tqdm import tqdm

from cache import CacheError, EmbeddingCache, MissingVectors, Namespace
from data import load_pairs
from data.files import atomic_dir
from data.splits import carve_validation
from features.encoder import pick_device
from features.pairs import pair_vectors
from heads.model import MultiModuleRewardModel
from heads.training import PairTensors, evaluate_pairs, optimizer_steps, train_epoch, warmup_linear_schedule, warmup_steps_for
from pipeline import __version__
from pipeline.config import Config


class TrainHeadsError(ValueError):
    pass


@dataclass
class TrainResult:
    best_epoch: int
    epochs_run: int
    validation: dict  # evaluate_pairs of the best epoch
    seconds_per_epoch: float
    history: list[dict]  # per epoch: train_loss, lr, val


def train_heads(
    files: Sequence[Path],
    cache_dir: Path,
    out: Path,
    config: Config,
    val_file: Path | None = None,
    resume: Path | None = None,
    namespace_id: str | None = None,
    embed_missing: bool = False,
    use_wandb: bool = False,
    progress: bool = True,
) -> TrainResult:
    modules = config.data.modules
    train, val = training_and_validation_pairs(files, val_file, config)

    previous = MultiModuleRewardModel.load(resume) if resume else None
    every_file = [*files, *([val_file] if val_file else [])]
    namespace = select_namespace(cache_dir, config, every_file, namespace_id, previous[1] if previous else None, embed_missing)
    # Pair features larger than stage_0.memory_map_above_mb go to .npy files beside the cache and
    # are read memory-mapped; the folder goes when training ends (or when this object is collected).
    scratch = tempfile.TemporaryDirectory(dir=cache_dir, prefix=".pair-features-")
    vectors = {}
    for name, pairs in (("train", train), ("val", val)):
        large = 4 * pairs.height * namespace.dimension * 4 > config.stage_0.memory_map_above_mb * 2**20
        memory_map = Path(scratch.name) / name if large else None
        try:
            vectors[name] = pair_vectors(namespace, pairs, memory_map)
        except MissingVectors as missing:
            if not embed_missing:
                raise CacheError(_missing_message(missing, cache_dir, namespace, every_file)) from None
            from pipeline.embed import embed_pairs

            embed_pairs(every_file, cache_dir, config, progress=progress)
            vectors[name] = pair_vectors(namespace.reload(), pairs, memory_map)

    device = pick_device(config.training.device)
    torch.manual_seed(config.training.seed)
    if previous is not None:
        model, _ = previous
        if model.modules_order != list(modules):
            raise TrainHeadsError(f"{resume} has heads for {model.modules_order}, but the config's modules are {list(modules)}")
    else:
        model = MultiModuleRewardModel(namespace.dimension, modules, config.model.dropout)
    model.to(device)
    train_data = PairTensors.from_vectors(vectors["train"], model, device)
    val_data = PairTensors.from_vectors(vectors["val"], model, device)

    stage, loss_config = config.stage_0, config.loss
    optimizer = torch.optim.AdamW(model.parameters(), lr=stage.lr, betas=(0.9, 0.999), weight_decay=config.training.weight_decay)
    total_steps = optimizer_steps(len(train_data), stage.batch_size, stage.grad_accumulation) * stage.epochs
    scheduler = warmup_linear_schedule(optimizer, warmup_steps_for(total_steps, stage.warmup_steps, config.training.max_warmup_fraction), total_steps)
    generator = torch.Generator().manual_seed(config.training.seed)
    wandb_run = _start_wandb(config) if use_wandb else None

    history = []
    best_state, best_loss, best_epoch, since_best = None, float("inf"), 0, 0
    bar = tqdm(total=total_steps, desc="train-heads", unit="step", disable=not progress, dynamic_ncols=True)
    started = time.perf_counter()
    for epoch in range(1, stage.epochs + 1):
        train_loss = train_epoch(
            model, train_data, optimizer, scheduler,
            batch_size=stage.batch_size, grad_accumulation=stage.grad_accumulation, grad_clip=config.training.grad_clip,
            margin=loss_config.margin, margin_weight=loss_config.margin_weight, generator=generator,
            on_step=lambda loss: (bar.update(1), bar.set_postfix(loss=f"{loss:.4f}")),
        )  # fmt: skip
        validation = evaluate_pairs(model, val_data, loss_config.margin, loss_config.margin_weight)
        record = {"epoch": epoch, "train_loss": train_loss, "lr": scheduler.get_last_lr()[0], "val": validation}
        history.append(record)
        if wandb_run is not None:
            wandb_run.log({"epoch": epoch, "train/loss": train_loss, "val/loss": validation["loss"], "val/pairwise_accuracy": validation["pairwise_accuracy"]})
        if validation["loss"] < best_loss:
            best_state, best_loss, best_epoch, since_best = copy.deepcopy(model.state_dict()), validation["loss"], epoch, 0
        else:
            since_best += 1
            if since_best >= stage.patience:
                break
    bar.close()
    seconds_per_epoch = (time.perf_counter() - started) / len(history)
    if wandb_run is not None:
        wandb_run.finish()

    model.load_state_dict(best_state)
    best = history[best_epoch - 1]["val"]
    checkpoint_config = {
        "stage": 0,
        "encoder_fingerprint": namespace.fingerprint,
        "cache_namespace": namespace.id,
        "cache_dtype": namespace.dtype,
        "training_config": config.to_dict(),
        "train_files": [str(f) for f in files],
        "val_file": str(val_file) if val_file else None,
        "train_data_sha256": data_hash(train, vectors["train"].text_keys),
        "val_data_sha256": data_hash(val, vectors["val"].text_keys),
        "resumed_from": str(resume) if resume else None,
        "best_epoch": best_epoch,
        "metrics": {"train_loss": history[best_epoch - 1]["train_loss"], "val": best},
        "versions": library_versions(),
    }
    with atomic_dir(out) as folder:
        model.to("cpu").save(folder, checkpoint_config)
        (folder / "metrics.jsonl").write_text("".join(json.dumps(record) + "\n" for record in history))
        config.save(folder / "config.yaml")
    scratch.cleanup()
    return TrainResult(best_epoch, len(history), best, seconds_per_epoch, history)


def training_and_validation_pairs(files: Sequence[Path], val_file: Path | None, config: Config) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The pairs of `files` and of `val_file`, or, without one, `files` split by task into training
    and validation pairs (`carve_validation`); an error unless both have pairs."""
    modules = config.data.modules
    train = load_pairs(files, modules)
    if val_file is not None:
        val = load_pairs(val_file, modules)
    else:
        train, val = carve_validation(train, config.data.val_fraction, config.data.split_seed, config.data.group_by)
    if val.height == 0 or train.height == 0:
        raise TrainHeadsError(
            f"{train.height} training and {val.height} validation pairs: both are needed "
            "(give --val, or pairs from more tasks so that a validation set can be carved by task)"
        )
    return train, val


def select_namespace(
    cache_dir: Path, config: Config, files: Sequence[Path], namespace_id: str | None, checkpoint: dict | None, embed_missing: bool
) -> Namespace:
    """The cache namespace to read: the one a resumed checkpoint was trained on (a mismatch is
    refused), `--namespace`, or the only one of the configured encoder."""
    namespaces = EmbeddingCache(cache_dir).namespaces()
    if checkpoint is not None:
        wanted = checkpoint["encoder_fingerprint"]
        matching = [ns for ns in namespaces if ns.fingerprint == wanted and ns.dtype == checkpoint.get("cache_dtype", ns.dtype)]
        if not matching:
            held = ", ".join(f"{ns.id}: {ns.fingerprint.get('encoder')}" for ns in namespaces) or "no namespaces"
            raise CacheError(
                f"the checkpoint's heads were trained on vectors of encoder {wanted.get('encoder')!r} (fingerprint of namespace "
                f"{checkpoint.get('cache_namespace')}), and {cache_dir} holds no vectors of that encoder "
                f"({held}). "
                "Heads only score vectors of the encoder they were trained on: embed with that encoder, or train new heads."
            )
        return matching[0]
    if namespace_id is not None:
        for ns in namespaces:
            if ns.id == namespace_id:
                return ns
        raise CacheError(f"{cache_dir} has no namespace {namespace_id} (it has: {', '.join(ns.id for ns in namespaces) or 'none'})")
    candidates = [ns for ns in namespaces if ns.fingerprint.get("encoder") == config.model.encoder and ns.dtype == config.cache.dtype]
    if len(candidates) > 1:
        listing = "; ".join(f"{ns.id} ({_describe(ns)})" for ns in candidates)
        raise CacheError(f"{cache_dir} holds several namespaces of encoder {config.model.encoder!r}: {listing}. Pick one with --namespace.")
    if candidates:
        return candidates[0]
    if embed_missing:
        from pipeline.embed import embed_pairs

        report = embed_pairs(files, cache_dir, config)
        return next(ns for ns in EmbeddingCache(cache_dir).namespaces() if ns.id == report.namespace)
    raise CacheError(
        f"{cache_dir} has no vectors of encoder {config.model.encoder!r} yet. Embed the pairs first:\n"
        f"  pipeline embed {' '.join(str(f) for f in files)} --cache {cache_dir} --encoder {config.model.encoder}\n"
        "or rerun with --embed-missing."
    )


def _describe(namespace: Namespace) -> str:
    fp = namespace.fingerprint
    return f"context {fp.get('max_context_tokens')} / module {fp.get('max_module_tokens')} tokens, {len(namespace)} vectors"


def _missing_message(missing: MissingVectors, cache_dir: Path, namespace: Namespace, files: Sequence[Path]) -> str:
    every_file = " ".join(str(f) for f in files)
    return (
        f"{len(missing.missing)} of the {missing.total} texts these pairs reference have no vector in {cache_dir} "
        f"(namespace {namespace.id}, encoder {namespace.fingerprint.get('encoder')!r}). Embed them first:\n"
        f"  pipeline embed {every_file} --cache {cache_dir} --encoder {namespace.fingerprint.get('encoder')}\n"
        "or rerun with --embed-missing."
    )


def data_hash(pairs: pl.DataFrame, keys: pl.DataFrame) -> str:
    """Identifies a pair table by its pair ids, modules and the keys of its four texts
    (`pair_text_keys`, already computed to read the vectors), in order."""
    digest = hashlib.sha256()
    for row in zip(pairs["pair_id"], pairs["target_module"], *(keys[c] for c in keys.columns)):
        digest.update("\t".join(row).encode() + b"\n")
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    import duckdb
    import numpy
    import polars
    import pyarrow
    import sentence_transformers

    return {
        "pipeline": __version__, "python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
        "sentence_transformers": sentence_transformers.__version__, "duckdb": duckdb.__version__,
        "polars": polars.__version__, "pyarrow": pyarrow.__version__,
    }  # fmt: skip


def _start_wandb(config: Config):
    try:
        import wandb
    except ImportError:
        raise TrainHeadsError("--use-wandb needs the wandb package: pip install wandb (training never requires it)") from None
    return wandb.init(project="module-reward-models", config=config.to_dict(), mode=os.environ.get("WANDB_MODE", "offline"))
