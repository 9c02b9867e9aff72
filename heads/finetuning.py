"""Stage 1 pieces: pairs as batches of raw text, the encoder and the heads as one trainable module,
mixed precision, and the resumable training state.

    batches = epoch_batches(len(pairs), batch_size, epoch, seed, rank, world_size)   # DistributedSampler order
    batch = TextBatch.of(columns, rows, model.heads, view)  # each unique piece of the batch's texts once
    with autocast(device, "bf16"):
        r_pos, r_neg = model(batch)                         # EncoderWithHeads: encoder forward + heads
"""

import contextlib
import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DistributedSampler

from data.files import json_text
from features.encoder import TextEncoder
from features.views import View
from heads.model import CheckpointError, MultiModuleRewardModel, error_line
from heads.training import gather_pieces

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(precision: str, device: str) -> str:
    """"auto": bf16 on GPUs that have it (Ampere and newer), fp16 (with a GradScaler) on older
    CUDA GPUs, and on CPU bf16 only where the CPU computes it natively (AMX or AVX-512 BF16):
    elsewhere emulated bf16 is slower than fp32, so fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("amx_bf16", "avx512_bf16"))


def autocast(device: str, precision: str):
    """torch.autocast for bf16/fp16; nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=_DTYPES[precision])


def grad_scaler(device: str, precision: str) -> torch.amp.GradScaler:
    """Loss scaling for fp16 (its gradients underflow without it); a no-op scaler otherwise."""
    return torch.amp.GradScaler(torch.device(device).type, enabled=precision == "fp16")


class PairColumns:
    """The text columns of a pair table as Python lists: batches are gathered by row index, so a
    batch costs its own texts, never a copy of the table."""

    def __init__(self, pairs: pl.DataFrame):
        self.positive_context = pairs["positive_context"].to_list()
        self.negative_context = pairs["negative_context"].to_list()
        self.positive_module_text = pairs["positive_module_text"].to_list()
        self.negative_module_text = pairs["negative_module_text"].to_list()
        self.target_module = pairs["target_module"].to_list()

    def __len__(self) -> int:
        return len(self.target_module)


@dataclass
class TextBatch:
    """A batch of pairs with each distinct text once: contexts repeat across a task's modules (and
    a pair's two sides may share one), so the pairs index into the batch's distinct texts. Under a
    view that cuts texts into pieces (features/views.py) the encoder runs on each distinct piece
    once (`contexts`, `module_texts`), and text t of a role is pieces
    `<role>_piece_ids[<role>_offsets[t]:<role>_offsets[t + 1]]`, as in stage 0."""

    contexts: list[str]
    module_texts: list[str]
    positive_context: torch.Tensor
    negative_context: torch.Tensor
    positive_module_text: torch.Tensor
    negative_module_text: torch.Tensor
    module_index: torch.Tensor
    context_offsets: torch.Tensor
    context_piece_ids: torch.Tensor
    module_offsets: torch.Tensor
    module_piece_ids: torch.Tensor

    @classmethod
    def of(cls, columns: PairColumns, rows: list[int], heads: MultiModuleRewardModel, view: View | None = None) -> "TextBatch":
        view = view or View()
        contexts, context_index = _unique([columns.positive_context[i] for i in rows] + [columns.negative_context[i] for i in rows])
        modules, module_index = _unique([columns.positive_module_text[i] for i in rows] + [columns.negative_module_text[i] for i in rows])
        context_pieces, context_offsets, context_ids = _pieces(contexts, "context", view)
        module_pieces, module_offsets, module_ids = _pieces(modules, "module", view)
        n = len(rows)
        return cls(
            context_pieces, module_pieces, context_index[:n], context_index[n:], module_index[:n], module_index[n:],
            heads.module_index([columns.target_module[i] for i in rows]), context_offsets, context_ids, module_offsets, module_ids,
        )  # fmt: skip

    def __len__(self) -> int:
        return len(self.module_index)

    def to(self, device: str) -> "TextBatch":
        names = ("positive_context", "negative_context", "positive_module_text", "negative_module_text", "module_index",
                 "context_offsets", "context_piece_ids", "module_offsets", "module_piece_ids")  # fmt: skip
        return TextBatch(self.contexts, self.module_texts, **{name: getattr(self, name).to(device) for name in names})


def _unique(texts: list[str]) -> tuple[list[str], torch.Tensor]:
    first: dict[str, int] = {}
    index = [first.setdefault(t, len(first)) for t in texts]
    return list(first), torch.tensor(index, dtype=torch.long)


def _pieces(texts: list[str], role: str, view: View) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """The distinct pieces of `texts`, and each text's piece ids into them (CSR offsets, ids)."""
    cut = [view.pieces(text, role) for text in texts]
    pieces, ids = _unique([piece for text_pieces in cut for piece in text_pieces])
    offsets = torch.tensor([0, *np.cumsum([len(c) for c in cut])], dtype=torch.long)
    return pieces, offsets, ids


def epoch_batches(n_pairs: int, batch_size: int, epoch: int, seed: int, rank: int = 0, world_size: int = 1) -> list[list[int]]:
    """This rank's batches of pair rows for `epoch`, in the order of a seeded DistributedSampler:
    the same shuffle on every rank and for every world size, so that rank r of n holds rows r, r+n,
    ... of it and a global batch of n ranks equals one process's batch of n times the size."""
    sampler = DistributedSampler(range(n_pairs), num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    order = list(sampler)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


class EncoderWithHeads(nn.Module):
    """The encoder (a sentence-transformers model, trained) and the per-module heads as one module,
    so that DistributedDataParallel and the optimiser see every parameter."""

    def __init__(self, encoder: TextEncoder, heads: MultiModuleRewardModel):
        super().__init__()
        self.encoder_model = encoder.model
        self.heads = heads
        self.text_encoder = [encoder]  # in a list: the wrapper is not a Module to register twice

    def forward(self, batch: TextBatch) -> tuple[torch.Tensor, torch.Tensor]:
        encoder = self.text_encoder[0]
        contexts = encoder.forward(batch.contexts, "context")
        modules = encoder.forward(batch.module_texts, "module")

        def side(context: torch.Tensor, module_text: torch.Tensor) -> torch.Tensor:
            return self.heads.score_pieces(
                gather_pieces(contexts, batch.context_offsets, batch.context_piece_ids, context),
                gather_pieces(modules, batch.module_offsets, batch.module_piece_ids, module_text),
                batch.module_index,
            )[0]

        positive = side(batch.positive_context, batch.positive_module_text)
        negative = side(batch.negative_context, batch.negative_module_text)
        return positive.float(), negative.float()


# --- the resumable state: everything a killed run needs to continue as if it had not stopped -----


def save_state(folder: Path, model: EncoderWithHeads, optimizer, scheduler, scaler, progress: dict) -> None:
    """Into `folder` (fresh, e.g. from data.files.atomic_dir): weights as safetensors, optimiser,
    scheduler and scaler state, RNG states, and `progress` (epoch, steps, history, best) as JSON."""
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors")
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
        folder / "training_state.pt",
    )
    (folder / "progress.json").write_text(json_text(progress, indent=2))


PROGRESS_KEYS = ("epoch", "batches_done", "step", "history", "epoch_losses", "best_loss", "best_epoch", "since_best")


def load_state(folder: Path, model: EncoderWithHeads, optimizer, scheduler, scaler, device: str) -> dict:
    """Restore what `save_state` wrote; tensors only (weights_only=True), no pickled code.
    `CheckpointError` naming the file when one is damaged or not of this run's model."""
    try:
        model.load_state_dict(load_file(folder / "model.safetensors", device=str(device)))
    except (OSError, SafetensorError, RuntimeError) as e:
        raise _damaged_state(folder / "model.safetensors", e) from None
    try:
        state = torch.load(folder / "training_state.pt", map_location="cpu", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError) as e:
        raise _damaged_state(folder / "training_state.pt", e) from None
    if state.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    try:
        progress = json.loads((folder / "progress.json").read_bytes().decode("utf-8"))
    except (OSError, ValueError) as e:
        raise _damaged_state(folder / "progress.json", e) from None
    lacking = [key for key in PROGRESS_KEYS if not isinstance(progress, dict) or key not in progress]
    if lacking:
        raise _damaged_state(folder / "progress.json", KeyError(f"no {', '.join(lacking)}"))
    return progress


def _damaged_state(path: Path, error: Exception) -> CheckpointError:
    return CheckpointError(
        f"{path}: the saved state of the unfinished run in {path.parent.parent} cannot be resumed from ({error_line(error)}); "
        "start the run over with --overwrite"
    )
