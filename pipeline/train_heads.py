"""Stage 0b recipe: train one reward head per module on cached vectors only.

    pipeline train-heads splits/train.jsonl --val splits/val.jsonl --cache embeddings/ --out ckpt/   # reads the cache's only encoder
    pipeline train-heads ... --encoder minilm      # or names one, when the cache holds vectors of several
    pipeline train-heads more.jsonl --cache embeddings/ --out ckpt2/ --resume ckpt/     # continue on new data

Reads the vectors of the pairs' texts (of their pieces, under the `features.view` that cuts texts
into pieces) from the cache once into one matrix, each pair four text ids into it; the encoder
never runs (unless `--embed-missing` is asked for). Validates every epoch, stops early, keeps the best epoch, and
writes the checkpoint folder atomically: heads.safetensors, config.json, metrics.jsonl.
"""

import copy
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from cache import CacheError, EmbeddingCache, MissingVectors, Namespace
from data.errors import UserError
from data.files import atomic_dir, check_output_folder
from data.splits import load_training_and_validation
from features.encoder import TextEncoder, pick_device
from features.pairs import pair_table_hash
from features.views import View, ViewMismatch, check_same_view, piece_features
from heads.model import CONFIG, WEIGHTS, CheckpointError, MultiModuleRewardModel
from heads.training import PairTensors, evaluate_pairs, optimizer_steps, train_epoch, warmup_linear_schedule, warmup_steps_for
from pipeline.checkpoint import library_versions
from pipeline.config import Config
from pipeline.embed import embed_pairs


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
    say: Callable[[str], object] = print,
    overwrite: bool = False,
) -> TrainResult:
    check_output_folder(out, (CONFIG, WEIGHTS), "checkpoint", overwrite)  # before training, not after
    modules, data = config.data.modules, config.data
    train, val = load_training_and_validation(files, val_file, modules, data.val_fraction, data.split_seed, data.group_by)

    view = View.from_config(config.features, config.model)
    previous = MultiModuleRewardModel.load(resume) if resume else None
    if previous is not None:
        try:
            check_same_view(view, View.from_checkpoint(previous[1]), f"the checkpoint {resume}")
        except ViewMismatch as e:
            raise CheckpointError(str(e)) from None
    every_file = [*files, *([val_file] if val_file else [])]
    try:
        namespace, note = select_namespace(cache_dir, config, namespace_id, previous[1] if previous else None)
    except CacheError:
        # --embed-missing embeds with the configured encoder, which is only a guess of the user's
        # when no encoder was named and the cache already holds others: then the listing stands
        guessing = "model.encoder" not in config.explicit and EmbeddingCache(cache_dir).namespaces()
        if not embed_missing or namespace_id is not None or previous is not None or guessing:
            raise
        report = embed_pairs(every_file, cache_dir, config, progress=progress)
        namespace, note = EmbeddingCache(cache_dir).select(namespace_id=report.namespace), f"embedded {report.new} texts into {cache_dir}"
    if note:
        say(note)
    view.check_vectors(namespace.fingerprint, f"the vectors of namespace {namespace.id} in {cache_dir}")
    # Piece features larger than stage_0.memory_map_above_mb go to .npy files beside the cache and
    # are read memory-mapped; the folder goes when training ends (or when this object is collected).
    scratch = tempfile.TemporaryDirectory(dir=cache_dir, prefix=".pair-features-")
    vectors = {}
    for name, pairs in (("train", train), ("val", val)):
        # a pessimistic guess of the piece matrix's size: every text distinct, max_pieces pieces
        pieces = 4 * pairs.height * (1 if view.name in ("truncate", "head_tail") else view.max_pieces)
        large = pieces * namespace.dimension * 4 > config.stage_0.memory_map_above_mb * 2**20
        memory_map = Path(scratch.name) / name if large else None
        try:
            vectors[name] = piece_features(namespace, pairs, view, memory_map)
        except MissingVectors as missing:
            if not embed_missing:
                raise CacheError(_missing_message(missing, cache_dir, namespace, every_file)) from None
            # the namespace's own encoder and settings, whichever the config names
            encoder = TextEncoder.load_matching(namespace.fingerprint, device=config.training.device, batch_size=config.model.batch_size)
            embed_pairs(every_file, cache_dir, config.override({"cache.dtype": namespace.dtype}), encoder=encoder, progress=progress)
            vectors[name] = piece_features(namespace.reload(), pairs, view, memory_map)

    device = pick_device(config.training.device)
    torch.manual_seed(config.training.seed)
    if previous is not None:
        model, _ = previous
        if model.modules_order != list(modules):
            raise CheckpointError(f"{resume} has heads for {model.modules_order}, but the config's modules are {list(modules)}")
    else:
        model = MultiModuleRewardModel(namespace.dimension, modules, config.model.dropout, config.model.head, "attention" if view.attention else "mean")
    model.to(device)
    train_data = PairTensors.from_pieces(vectors["train"], model, device)
    val_data = PairTensors.from_pieces(vectors["val"], model, device)

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
        **view.record(),
        "training_config": config.to_dict(),
        "train_files": [str(f) for f in files],
        "val_file": str(val_file) if val_file else None,
        "train_data_sha256": pair_table_hash(train, vectors["train"].text_keys),
        "val_data_sha256": pair_table_hash(val, vectors["val"].text_keys),
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


def select_namespace(cache_dir: Path, config: Config, namespace_id: str | None, checkpoint: dict | None) -> tuple[Namespace, str]:
    """The cache namespace to read, and a note on how it was chosen when the user did not name it:
    the one a resumed checkpoint was trained on (a mismatch is refused), `--namespace`, the only one
    of the encoder the user named (flag or config file), or, with no encoder named, the only one the
    cache holds."""
    cache = EmbeddingCache(cache_dir)
    if checkpoint is not None:
        wanted = checkpoint["encoder_fingerprint"]
        matching = [ns for ns in cache.namespaces() if ns.fingerprint == wanted and ns.dtype == checkpoint.get("cache_dtype", ns.dtype)]
        if not matching:
            raise CheckpointError(
                f"the checkpoint's heads were trained on vectors of encoder {wanted.get('encoder')!r} (namespace "
                f"{checkpoint.get('cache_namespace')}), and {cache_dir} holds no vectors of that encoder; it holds:\n{cache.describe()}\n"
                "Heads only score vectors of the encoder they were trained on: embed with that encoder, or train new heads."
            )
        return matching[0], ""
    named = "model.encoder" in config.explicit
    if namespace_id is None:
        # head_tail vectors and the others' live in namespaces of their own: the view tells them apart
        view = View.from_config(config.features, config.model)
        fitting = [ns for ns in cache.namespaces() if (not named or ns.fingerprint.get("encoder") == config.model.encoder) and _fits(view, ns)]
        if len(fitting) == 1 and len(cache.namespaces()) > 1:
            return fitting[0], "" if named else f"training on the only vectors of view {view.name} in {cache_dir}: {fitting[0].describe()} (namespace {fitting[0].id})"
    namespace = cache.select(config.model.encoder if named else None, namespace_id)
    if named or namespace_id is not None:
        return namespace, ""
    return namespace, f"training on the only vectors in {cache_dir}: {namespace.describe()} (namespace {namespace.id})"


def _fits(view: View, namespace: Namespace) -> bool:
    try:
        view.check_vectors(namespace.fingerprint, namespace.id)
    except ViewMismatch:
        return False
    return True


def _missing_message(missing: MissingVectors, cache_dir: Path, namespace: Namespace, files: Sequence[Path]) -> str:
    every_file = " ".join(str(f) for f in files)
    return (
        f"{len(missing.missing)} of the {missing.total} texts these pairs reference have no vector in {cache_dir} "
        f"(namespace {namespace.id}, encoder {namespace.fingerprint.get('encoder')!r}). Embed them first:\n"
        f"  pipeline embed {every_file} --cache {cache_dir} --encoder {namespace.fingerprint.get('encoder')}\n"
        "or rerun with --embed-missing."
    )


def _start_wandb(config: Config):
    try:
        import wandb
    except ImportError:
        raise UserError("--use-wandb needs the wandb package: pip install wandb (training never requires it)") from None
    return wandb.init(project="module-reward-models", config=config.to_dict(), mode=os.environ.get("WANDB_MODE", "offline"))
