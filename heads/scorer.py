"""A trained checkpoint, ready to score: its heads, the cache of its encoder's vectors, and the
encoder itself (loaded only when a text has no cached vector yet).

    scorer = RewardScorer.load("ckpt/", cache_dir="cache/")
    vectors = scorer.pair_vectors(pairs)                  # cached vectors; missing texts embedded first
    positive, negative = scorer.score_pair_vectors(vectors)

Heads only mean something on vectors of the encoder they were trained with, so the encoder is the
one the checkpoint's fingerprint names (or `encoder=`, a folder with the same weights), and it is
refused when its fingerprint differs.
"""

import logging
from pathlib import Path

import numpy as np
import polars as pl
import torch

from cache import CacheError, EmbeddingCache, MissingVectors, Namespace
from features.encoder import TextEncoder, pick_device
from features.pairs import PairVectors, pair_vectors, unique_texts
from heads.model import MultiModuleRewardModel

logger = logging.getLogger(__name__)

# What decides the vectors besides the name the encoder was asked for by.
_SAME_VECTORS = ("weights", "pooling", "padding_side", "context_prompt", "max_context_tokens", "max_module_tokens", "truncation_side", "normalize", "dimension")


def load_checkpoint_encoder(folder: str | Path, fingerprint: dict, name: str | None = None, device: str = "auto") -> TextEncoder:
    """The encoder whose vectors a checkpoint's heads were trained on: `name` when given, else the
    checkpoint's own fine-tuned `encoder/` folder (stage 1), else the model its fingerprint names;
    loaded with the fingerprint's prompt, token limits and truncation, and refused (CacheError)
    when its vectors would differ from the ones the heads know."""
    own = Path(folder) / "encoder"
    name = name or (str(own) if own.is_dir() else fingerprint["encoder"])
    fp = fingerprint
    encoder = TextEncoder.load(
        name, device=device, max_context_tokens=fp["max_context_tokens"], max_module_tokens=fp["max_module_tokens"],
        context_prompt=fp["context_prompt"], truncation_side=fp["truncation_side"], normalize=fp["normalize"],
    )  # fmt: skip
    theirs = encoder.fingerprint()
    differ = [k for k in _SAME_VECTORS if theirs.get(k) != fp.get(k)]
    if differ:
        detail = ", ".join(f"{k}: checkpoint {fp.get(k)!r}, encoder {theirs.get(k)!r}" for k in differ)
        raise CacheError(
            f"encoder {name!r} does not make the vectors {folder}'s heads were trained on ({detail}). "
            "Point --encoder at the model the checkpoint was trained with."
        )
    return encoder


class RewardScorer:
    def __init__(self, model: MultiModuleRewardModel, config: dict, namespace: Namespace, folder: Path, encoder: str | None = None, device: str = "cpu"):
        self.model = model.eval()
        self.config = config
        self.namespace = namespace
        self.folder = Path(folder)
        self.device = device
        self.modules = list(model.modules_order)
        self._encoder_name = encoder
        self._encoder: TextEncoder | None = None

    @classmethod
    def load(cls, checkpoint: str | Path, cache_dir: str | Path, encoder: str | None = None, device: str = "auto") -> "RewardScorer":
        device = pick_device(device)
        try:
            model, config = MultiModuleRewardModel.load(checkpoint, device=device)
        except FileNotFoundError as e:
            raise CacheError(str(e)) from None
        fingerprint = config["encoder_fingerprint"]
        namespace = EmbeddingCache(cache_dir).namespace(fingerprint, dtype=config.get("cache_dtype", "float32"), create=True)
        return cls(model, config, namespace, Path(checkpoint), encoder, device)

    @property
    def fingerprint(self) -> dict:
        return self.config["encoder_fingerprint"]

    def encoder(self) -> TextEncoder:
        """The checkpoint's encoder, loaded on first use with the settings its fingerprint records."""
        if self._encoder is None:
            self._encoder = load_checkpoint_encoder(self.folder, self.fingerprint, self._encoder_name, self.device)
        return self._encoder

    def embed_missing(self, texts: pl.DataFrame, progress: bool = False) -> int:
        """Embed the texts (`unique_texts` rows) the cache lacks into the checkpoint's namespace;
        returns how many there were."""
        from pipeline.embed import encode_into  # the embed recipe's loop, reused as is

        missing = texts.filter(pl.col("key").is_in(self.namespace.missing(texts["key"].to_list())))
        if missing.height:
            logger.warning("embedding %d texts that %s has no vectors for", missing.height, self.namespace.root.parent)
            with self.namespace.writer():
                encode_into(self.namespace, self.encoder(), missing, 4096, progress)
            self.namespace.reload()
        return missing.height

    def pair_vectors(self, pairs: pl.DataFrame, embed_missing: bool = True, progress: bool = False) -> tuple[PairVectors, int]:
        """The four vectors of every pair, and how many texts had to be embedded first."""
        try:
            return pair_vectors(self.namespace, pairs), 0
        except MissingVectors:
            if not embed_missing:
                raise
        embedded = self.embed_missing(unique_texts(pairs), progress)
        return pair_vectors(self.namespace, pairs), embedded

    @torch.no_grad()
    def score_vectors(self, context: np.ndarray, module_text: np.ndarray, modules: np.ndarray | list[str], batch_size: int = 4096) -> np.ndarray:
        """One reward per row, each scored by the head of its module."""
        index = self.model.module_index(list(modules))
        scores = []
        for rows in torch.arange(len(index)).split(batch_size):
            c = torch.from_numpy(np.ascontiguousarray(context[rows.numpy()], np.float32)).to(self.device)
            m = torch.from_numpy(np.ascontiguousarray(module_text[rows.numpy()], np.float32)).to(self.device)
            scores.append(self.model(c, m, index[rows].to(self.device)).float().cpu())
        return torch.cat(scores).numpy() if scores else np.zeros(0, np.float32)

    def score_pair_vectors(self, vectors: PairVectors) -> tuple[np.ndarray, np.ndarray]:
        """(r_pos, r_neg) per pair."""
        return (
            self.score_vectors(vectors.positive_context, vectors.positive_module_text, vectors.target_module),
            self.score_vectors(vectors.negative_context, vectors.negative_module_text, vectors.target_module),
        )
