"""Stage 1 recipe: fine-tune the encoder and the heads together on raw text.

    pipeline finetune splits/train.jsonl --val splits/val.jsonl --init checkpoint/ --out finetuned/
    pipeline finetune ... --out finetuned/ --resume                 # continue a killed run where it stopped
    torchrun --nproc_per_node=4 -m pipeline.cli finetune ...        # DistributedDataParallel, one GPU per process

The heads start from a stage 0 checkpoint (`--init`) and the encoder is the one that checkpoint's
vectors came from, run exactly as `pipeline embed` runs it (prompt, cut, padding side, pooling),
but with gradients. Pairs stream from the pair table through a DataLoader in batches of raw text
(rows drawn by a seeded DistributedSampler); each unique text of a batch is encoded once. AdamW with two parameter groups (encoder 1e-5, heads 1e-4), warmup, gradient accumulation,
clipping, bf16/fp16 autocast, optional gradient checkpointing. Every epoch validates on the
task-grouped validation set with the vectors `pipeline evaluate` would compute, stops early, and
keeps the best epoch in OUT:

    OUT/encoder/            the fine-tuned encoder, a sentence-transformers folder
    OUT/heads.safetensors   the heads
    OUT/config.json         written last: the new encoder fingerprint, data hashes, metrics
    OUT/metrics.jsonl       one line per epoch; OUT/config.yaml the resolved config
    OUT/resume/             the latest weights, optimiser, scheduler, scaler and RNG state, saved at
                            the end of each epoch and every `stage_1.save_every_steps` steps, until the run ends

Only rank 0 writes; every rank validates the whole validation set, so all take the same decisions.
"""

import copy
import dataclasses
import math
import os
import shutil
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm import tqdm

from data.errors import UserError
from data.files import atomic_dir, check_output_folder, json_text, write_text_atomic
from data.guards import check_writable_folder, output_lock
from data.splits import load_training_and_validation, module_pairs
from features.encoder import pick_device
from features.pairs import pair_table_hash, pair_text_keys, with_text_keys
from features.views import encode_piece_features
from heads.checkpoint import CheckpointRecord, read_record, save_checkpoint
from heads.finetuning import (
    EncoderWithHeads,
    PairColumns,
    TextBatch,
    autocast,
    epoch_batches,
    grad_scaler,
    load_state,
    resolve_precision,
    save_state,
)
from heads.model import CONFIG, WEIGHTS, CheckpointError, MultiModuleRewardModel, bradley_terry_loss
from heads.training import PairTensors, evaluate_pairs, optimizer_steps, warmup_linear_schedule, warmup_steps_for
from pipeline.checkpoint import library_versions, load_checkpoint_encoder
from pipeline.config import Config


@dataclass
class FinetuneResult:
    best_epoch: int
    epochs_run: int
    validation: dict
    history: list[dict]
    precision: str


def finetune(
    files: Sequence[Path],
    init: Path,
    out: Path,
    config: Config,
    val_file: Path | None = None,
    encoder_name: str | None = None,
    resume: bool = False,
    max_steps: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> FinetuneResult:
    """`overwrite`: write into OUT even when it holds other files or an unfinished run; files of
    the names listed in this module's docstring are replaced, others stay."""
    # a folder this run cannot write is refused before the encoder loads, and one that another run
    # is writing (its lock, held by rank 0 until the run ends) at once (data/guards.py)
    check_writable_folder(out, "--out", inputs=[*files, val_file, init])
    rank, world_size = _start_distributed(config.training.device)
    try:
        with output_lock(out, "finetune") if rank == 0 else nullcontext():
            return _finetune(files, init, Path(out), config, val_file, encoder_name, resume, max_steps, overwrite, progress and rank == 0, rank, world_size)
    finally:
        if world_size > 1:
            dist.destroy_process_group()


def _finetune(files, init, out, config, val_file, encoder_name, resume, max_steps, overwrite, progress, rank, world_size) -> FinetuneResult:
    # OUT is written step by step from the first save on, so it is checked before anything runs
    if resume and not (out / "resume" / "progress.json").is_file():
        raise UserError(f"nothing to resume: {out / 'resume'} holds no training state (start without --resume)")
    if not resume and not overwrite:
        if (out / "resume").exists():
            raise UserError(f"{out} holds an unfinished run: continue it with --resume, start it over with --overwrite, or choose another --out")
        check_output_folder(out, (CONFIG, WEIGHTS), "checkpoint", overwrite)
    stage, modules = config.stage_1, config.data.modules
    data = config.data
    train, val = load_training_and_validation(files, val_file, modules, data.val_fraction, data.split_seed, data.group_by)
    train, val = with_text_keys(train), with_text_keys(val)  # not hashed again at every validation

    device = pick_device(config.training.device)
    precision = resolve_precision(stage.precision, device)
    heads, init_record = MultiModuleRewardModel.load(init)
    if heads.modules_order != list(modules):
        raise CheckpointError(f"{init} has heads for {heads.modules_order}, but the config's modules are {list(modules)}")
    # the heads pool pieces of the view they were trained on: stage 1 feeds the encoder the same pieces
    view = init_record.view
    if "features.view" in config.explicit and config.features.view != view.name:
        raise CheckpointError(f"{init} was trained on view {view.name!r}, but the config asks for view {config.features.view!r}; stage 1 keeps the view of its init checkpoint")
    encoder = load_checkpoint_encoder(init, init_record.encoder_fingerprint, encoder_name, device)
    encoder.model.float()  # fp32 master weights; autocast does the low-precision compute
    if stage.gradient_checkpointing:
        encoder.gradient_checkpointing(True)
    torch.manual_seed(config.training.seed)
    model = EncoderWithHeads(encoder, heads).to(device)
    model.train()
    parallel = model
    if world_size > 1:
        local = [torch.device(device).index] if device.startswith("cuda") else None
        # heads of modules absent from a batch get no gradient: DDP must not wait for them
        parallel = torch.nn.parallel.DistributedDataParallel(model, device_ids=local, find_unused_parameters=True)

    optimizer = torch.optim.AdamW(
        [{"params": model.encoder_model.parameters(), "lr": stage.encoder_lr}, {"params": model.heads.parameters(), "lr": stage.heads_lr}],
        weight_decay=config.training.weight_decay,
    )
    per_epoch = optimizer_steps(math.ceil(train.height / world_size), stage.batch_size, stage.grad_accumulation)  # a rank's share
    total_steps = per_epoch * stage.epochs if max_steps is None else min(max_steps, per_epoch * stage.epochs)
    scheduler = warmup_linear_schedule(optimizer, warmup_steps_for(total_steps, stage.warmup_steps, config.training.max_warmup_fraction), total_steps)
    scaler = grad_scaler(device, precision)

    state = {"epoch": 1, "batches_done": 0, "step": 0, "history": [], "epoch_losses": [], "best_loss": None, "best_epoch": 0, "since_best": 0}
    if resume:
        state = load_state(out / "resume", model, optimizer, scheduler, scaler, device)

    columns = PairColumns(train)
    loss_config = config.loss
    # the encoder fingerprint is the init's until _save_best saves the fine-tuned encoder and fingerprints it
    checkpoint_record = CheckpointRecord.of(
        heads, stage=1, encoder_fingerprint=init_record.encoder_fingerprint, cache_namespace=None, cache_dtype=init_record.cache_dtype, view=view,
        module_pairs=_module_pairs(train, val, modules, init_record), training_config=config.to_dict(), train_files=[str(f) for f in files],
        val_file=str(val_file) if val_file else None, train_data_sha256=pair_table_hash(train, pair_text_keys(train)),
        val_data_sha256=pair_table_hash(val, pair_text_keys(val)),
        provenance={"init_checkpoint": str(init), "init_encoder_fingerprint": init_record.encoder_fingerprint, "precision": precision, "world_size": world_size},
    )  # fmt: skip
    bar = tqdm(total=total_steps, initial=state["step"], desc="finetune", unit="step", disable=not progress, dynamic_ncols=True)
    started = time.perf_counter()
    while state["epoch"] <= stage.epochs:
        epoch = state["epoch"]
        batches = epoch_batches(train.height, stage.batch_size, epoch, config.training.seed, rank, world_size)
        start = state["batches_done"]  # after a resume mid-epoch, the batches not yet trained on
        loader = DataLoader(range(train.height), batch_sampler=batches[start:], collate_fn=lambda rows: TextBatch.of(columns, rows, model.heads, view))
        for i, batch in enumerate(loader, start=start):
            batch = batch.to(device)
            last_of_step = (i + 1) % stage.grad_accumulation == 0 or i + 1 == len(batches)
            with parallel.no_sync() if world_size > 1 and not last_of_step else nullcontext():
                with autocast(device, precision):
                    positive, negative = parallel(batch)
                loss = bradley_terry_loss(positive, negative, loss_config.margin, loss_config.margin_weight)
                scaler.scale(loss / stage.grad_accumulation).backward()
            state["batches_done"] = i + 1
            if not last_of_step:
                continue
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.training.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"] += 1
            state["epoch_losses"].append(_mean_over_ranks(loss.detach(), world_size))
            bar.update(1)
            bar.set_postfix(loss=f"{state['epoch_losses'][-1]:.4f}")
            if state["step"] >= total_steps:
                break  # --max-steps: this epoch ends here, validated like any other
            if stage.save_every_steps and state["step"] % stage.save_every_steps == 0:
                _save_resume(out, model, optimizer, scheduler, scaler, state, rank, world_size)

        # the epoch is complete: validate with the vectors `pipeline evaluate` would compute
        validation = evaluate_pairs(heads, PairTensors.from_pieces(encode_piece_features(encoder, val, view), heads, device), loss_config.margin, loss_config.margin_weight)
        model.train()  # encode() put the encoder in eval mode, and evaluate_pairs the heads
        record = {"epoch": epoch, "train_loss": sum(state["epoch_losses"]) / max(1, len(state["epoch_losses"])), "step_losses": state["epoch_losses"],
                  "lr": scheduler.get_last_lr(), "val": validation}  # fmt: skip
        state["history"].append(record)
        improved = state["best_loss"] is None or validation["loss"] < state["best_loss"]
        if improved:
            state.update(best_loss=validation["loss"], best_epoch=epoch, since_best=0)
            if rank == 0:
                _save_best(out, encoder, heads, {"best_epoch": epoch, "metrics": {"train_loss": record["train_loss"], "val": validation}}, checkpoint_record)
        else:
            state["since_best"] += 1
        state.update(epoch=epoch + 1, batches_done=0, epoch_losses=[])
        if state["since_best"] >= stage.patience or state["step"] >= total_steps:
            state["epoch"] = stage.epochs + 1  # early stop, or the step budget is spent
        else:
            _save_resume(out, model, optimizer, scheduler, scaler, state, rank, world_size)
    bar.close()

    if rank == 0:
        history = state["history"]
        write_text_atomic(out / "metrics.jsonl", "".join(json_text(r) + "\n" for r in history))
        config.save(out / "config.yaml")
        saved = read_record(out)
        dataclasses.replace(saved, provenance={**saved.provenance, "seconds": time.perf_counter() - started, "epochs_run": len(history)}).save(out)
        shutil.rmtree(out / "resume", ignore_errors=True)
    _barrier(world_size)
    best = state["history"][state["best_epoch"] - 1]["val"] if state["best_epoch"] else {}
    return FinetuneResult(state["best_epoch"], len(state["history"]), best, state["history"], precision)


def _module_pairs(train, val, modules, init_record: CheckpointRecord) -> dict[str, dict[str, int]] | None:
    """Each module's pairs in stage 1, its training pairs counted over both stages (a head trained in
    stage 0 stays trained when stage 1 has no pairs of its module). None, like its init, when the
    init checkpoint predates the record: what its heads were trained on is not known."""
    before = init_record.module_pairs
    if before is None:
        return None
    counts = module_pairs(train, val, modules)
    for m in modules:
        counts[m]["train"] += int(before.get(m, {}).get("train", 0))
    return counts


def _save_best(out: Path, encoder, heads: MultiModuleRewardModel, best: dict, record: CheckpointRecord) -> None:
    """The best epoch so far into OUT: encoder folder, then heads and config.json (`save_checkpoint`:
    config.json last, as it names the encoder's fingerprint, so a checkpoint caught between two
    writes is refused, never misread). `best`: its epoch and metrics."""
    out.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out / "encoder") as folder:
        encoder.model.save(str(folder))
        fingerprint = encoder.saved_fingerprint(folder, name=str(out / "encoder"))
    provenance = {**record.provenance, **best, "versions": library_versions()}
    save_checkpoint(out, heads, dataclasses.replace(record, encoder_fingerprint=fingerprint, provenance=provenance))


def _save_resume(out: Path, model, optimizer, scheduler, scaler, state: dict, rank: int, world_size: int) -> None:
    if rank == 0:
        with atomic_dir(out / "resume") as folder:
            save_state(folder, model, optimizer, scheduler, scaler, copy.deepcopy(state))
    _barrier(world_size)


def _start_distributed(device: str) -> tuple[int, int]:
    """(rank, world size): from torchrun's environment, with the process group started (NCCL on
    GPUs, gloo on CPU); (0, 1) without torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if world_size == 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and device != "cpu" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend)
    return dist.get_rank(), world_size


def _mean_over_ranks(value: torch.Tensor, world_size: int) -> float:
    if world_size > 1:
        value = value.clone().float()
        dist.all_reduce(value)
        value /= world_size
    return value.item()


def _barrier(world_size: int) -> None:
    if world_size > 1:
        dist.barrier()
