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
The recipe, as `finetune` runs it: `setup`, then `train` (each epoch `_train_epoch`, then
`_validate_epoch`, whose best is saved by `_save_best`), then `_save_last`.
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

import polars as pl
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm import tqdm

from data.errors import UserError
from data.files import atomic_dir, check_output_folder, json_text, write_text_atomic
from data.guards import check_writable_folder, output_lock
from data.splits import load_training_and_validation, module_pairs
from features.encoder import TextEncoder, pick_device
from features.pairs import pair_table_hash, pair_text_keys, with_text_keys
from features.views import View, encode_piece_features
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
from heads.training import EarlyStopping, PairTensors, evaluate_pairs, optimizer_steps, warmup_linear_schedule, warmup_steps_for
from pipeline.checkpoint import library_versions, load_checkpoint_encoder
from pipeline.config import Config


@dataclass
class FinetuneResult:
    best_epoch: int
    epochs_run: int
    validation: dict
    history: list[dict]
    precision: str


@dataclass
class FinetuneSetup:
    """What `setup` hands the training loop: the pairs, the encoder with the heads on the device,
    the optimiser and its schedule, and what the checkpoint records of the run."""

    config: Config
    train: pl.DataFrame
    columns: PairColumns  # the training pairs' texts, which batches are cut from
    val: pl.DataFrame
    view: View
    encoder: TextEncoder
    heads: MultiModuleRewardModel
    model: EncoderWithHeads
    parallel: torch.nn.Module  # the model, wrapped in DistributedDataParallel under torchrun
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    total_steps: int
    device: str
    precision: str
    rank: int
    world_size: int
    record: CheckpointRecord  # what config.json says of the run besides the best epoch and its metrics


def finetune(
    *,
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
    out = Path(out)
    try:
        with output_lock(out, "finetune") if rank == 0 else nullcontext():
            _check_out(out, resume, overwrite)
            run = setup(files=files, init=init, config=config, val_file=val_file, encoder_name=encoder_name, max_steps=max_steps, rank=rank, world_size=world_size)
            state = {"epoch": 1, "batches_done": 0, "step": 0, "history": [], "epoch_losses": [], **EarlyStopping(config.stage_1.patience).state()}
            if resume:
                state = load_state(out / "resume", run.model, run.optimizer, run.scheduler, run.scaler, run.device)
            started = time.perf_counter()
            train(run, state, out, progress=progress and rank == 0)
            if rank == 0:
                _save_last(out, config, state["history"], time.perf_counter() - started)
            _barrier(world_size)
    finally:
        if world_size > 1:
            dist.destroy_process_group()
    best = state["history"][state["best_epoch"] - 1]["val"] if state["best_epoch"] else {}
    return FinetuneResult(state["best_epoch"], len(state["history"]), best, state["history"], run.precision)


def _check_out(out: Path, resume: bool, overwrite: bool) -> None:
    """OUT is written step by step from the first save on, so it is checked before anything runs."""
    if resume and not (out / "resume" / "progress.json").is_file():
        raise UserError(f"nothing to resume: {out / 'resume'} holds no training state (start without --resume)")
    if not resume and not overwrite:
        if (out / "resume").exists():
            raise UserError(f"{out} holds an unfinished run: continue it with --resume, start it over with --overwrite, or choose another --out")
        check_output_folder(out, (CONFIG, WEIGHTS), "checkpoint", overwrite)


def setup(
    *, files: Sequence[Path], init: Path, config: Config, val_file: Path | None, encoder_name: str | None, max_steps: int | None, rank: int, world_size: int
) -> FinetuneSetup:
    """The pairs, the init checkpoint's heads and encoder (in its view) on the device, AdamW with
    the encoder's and the heads' learning rates, warmup then linear decay, and the grad scaler."""
    stage, modules, data = config.stage_1, config.data.modules, config.data
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
    # the encoder fingerprint is the init's until _save_best saves the fine-tuned encoder and fingerprints it
    record = CheckpointRecord.of(
        heads, stage=1, encoder_fingerprint=init_record.encoder_fingerprint, cache_namespace=None, cache_dtype=init_record.cache_dtype, view=view,
        module_pairs=_module_pairs(train, val, modules, init_record), training_config=config.to_dict(), train_files=[str(f) for f in files],
        val_file=str(val_file) if val_file else None, train_data_sha256=pair_table_hash(train, pair_text_keys(train)),
        val_data_sha256=pair_table_hash(val, pair_text_keys(val)),
        provenance={"init_checkpoint": str(init), "init_encoder_fingerprint": init_record.encoder_fingerprint, "precision": precision, "world_size": world_size},
    )  # fmt: skip
    return FinetuneSetup(
        config, train, PairColumns(train), val, view, encoder, heads, model, parallel, optimizer, scheduler, grad_scaler(device, precision),
        total_steps, device, precision, rank, world_size, record,
    )  # fmt: skip


def train(run: FinetuneSetup, state: dict, out: Path, *, progress: bool) -> None:
    """Epochs until `stage_1.epochs`, the step budget or early stopping ends them: each trained
    (from `state`'s place in it, after a resume), validated, its best kept in OUT, its state saved."""
    bar = tqdm(total=run.total_steps, initial=state["step"], desc="finetune", unit="step", disable=not progress, dynamic_ncols=True)
    while state["epoch"] <= run.config.stage_1.epochs:
        _train_epoch(run, state, out, bar)
        # the epoch is complete: validate with the vectors `pipeline evaluate` would compute
        if _validate_epoch(run, state, out) or state["step"] >= run.total_steps:
            state["epoch"] = run.config.stage_1.epochs + 1  # early stop, or the step budget is spent
        else:
            _save_resume(out, run, state)
    bar.close()


def _train_epoch(run: FinetuneSetup, state: dict, out: Path, bar: tqdm) -> None:
    """The batches of `state`'s epoch not yet trained on, an optimiser step every
    `grad_accumulation` of them; the resume state saved every `save_every_steps` steps."""
    stage, loss_config, columns = run.config.stage_1, run.config.loss, run.columns
    batches = epoch_batches(run.train.height, stage.batch_size, state["epoch"], run.config.training.seed, run.rank, run.world_size)
    start = state["batches_done"]  # after a resume mid-epoch, the batches not yet trained on
    loader = DataLoader(range(run.train.height), batch_sampler=batches[start:], collate_fn=lambda rows: TextBatch.of(columns, rows, run.model.heads, run.view))
    for i, batch in enumerate(loader, start=start):
        batch = batch.to(run.device)
        last_of_step = (i + 1) % stage.grad_accumulation == 0 or i + 1 == len(batches)
        with run.parallel.no_sync() if run.world_size > 1 and not last_of_step else nullcontext():
            with autocast(run.device, run.precision):
                positive, negative = run.parallel(batch)
            loss = bradley_terry_loss(positive, negative, loss_config.margin, loss_config.margin_weight)
            run.scaler.scale(loss / stage.grad_accumulation).backward()
        state["batches_done"] = i + 1
        if not last_of_step:
            continue
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.config.training.grad_clip)
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.scheduler.step()
        run.optimizer.zero_grad(set_to_none=True)
        state["step"] += 1
        state["epoch_losses"].append(_mean_over_ranks(loss.detach(), run.world_size))
        bar.update(1)
        bar.set_postfix(loss=f"{state['epoch_losses'][-1]:.4f}")
        if state["step"] >= run.total_steps:
            break  # --max-steps: this epoch ends here, validated like any other
        if stage.save_every_steps and state["step"] % stage.save_every_steps == 0:
            _save_resume(out, run, state)


def _validate_epoch(run: FinetuneSetup, state: dict, out: Path) -> bool:
    """The finished epoch validated, recorded in `state`, and saved to OUT when it is the best so
    far; True when early stopping ends the run."""
    epoch, heads, loss_config = state["epoch"], run.heads, run.config.loss
    val_data = PairTensors.from_pieces(encode_piece_features(run.encoder, run.val, run.view), heads, run.device)
    validation = evaluate_pairs(heads, val_data, loss_config.margin, loss_config.margin_weight)
    run.model.train()  # encode() put the encoder in eval mode, and evaluate_pairs the heads
    row = {"epoch": epoch, "train_loss": sum(state["epoch_losses"]) / max(1, len(state["epoch_losses"])), "step_losses": state["epoch_losses"],
           "lr": run.scheduler.get_last_lr(), "val": validation}  # fmt: skip
    state["history"].append(row)
    stopping = EarlyStopping(run.config.stage_1.patience, state["best_loss"], state["best_epoch"], state["since_best"])
    if stopping.update(epoch, validation["loss"]) and run.rank == 0:
        _save_best(out, run.encoder, heads, {"best_epoch": epoch, "metrics": {"train_loss": row["train_loss"], "val": validation}}, run.record)
    state.update(**stopping.state(), epoch=epoch + 1, batches_done=0, epoch_losses=[])
    return stopping.should_stop


def _save_last(out: Path, config: Config, history: list[dict], seconds: float) -> None:
    """The run is over: its metrics and config beside the best epoch's checkpoint, and the resume
    state gone (the checkpoint is complete)."""
    write_text_atomic(out / "metrics.jsonl", "".join(json_text(r) + "\n" for r in history))
    config.save(out / "config.yaml")
    saved = read_record(out)
    dataclasses.replace(saved, provenance={**saved.provenance, "seconds": seconds, "epochs_run": len(history)}).save(out)
    shutil.rmtree(out / "resume", ignore_errors=True)


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


def _save_resume(out: Path, run: FinetuneSetup, state: dict) -> None:
    if run.rank == 0:
        with atomic_dir(out / "resume") as folder:
            save_state(folder, run.model, run.optimizer, run.scheduler, run.scaler, copy.deepcopy(state))
    _barrier(run.world_size)


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
