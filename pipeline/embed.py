"""Stage 0a recipe: embed every unique text of the given pairs once into the cache.

    pipeline embed train.jsonl val.jsonl --cache embeddings/ --encoder minilm
    pipeline embed train.jsonl val.jsonl --cache embeddings/ --view rounds     # the pieces of a view

Under a view other than `truncate` (`features.view`, features/views.py) the texts are cut into
pieces first, and each distinct piece is what gets embedded and cached.

On several processes, each embeds a disjoint slice of the missing texts and writes its own shards:

    torchrun --nproc_per_node=2 -m pipeline.cli embed pairs.json --cache embeddings/     # RANK/WORLD_SIZE
    pipeline embed pairs.json --cache embeddings/ --shard 0/2 & pipeline embed ... --shard 1/2

A text belongs to the slice int(key) mod n, whatever else is missing, so ranks that start at
different times still split the work without overlap. Each rank lists its shards in a manifest
fragment of its own (cache/store.py), so ranks on many machines can share one cache folder.
"""

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from cache import EmbeddingCache
from data import load_pairs
from data.errors import ConfigError
from data.guards import check_free_space, check_writable_folder
from features.embedding import encode_into
from features.encoder import TextEncoder
from features.pairs import unique_texts
from features.views import HEAD_TAIL, View, cut_texts
from pipeline.config import Config


@dataclass
class EmbedReport:
    namespace: str
    referenced: int  # texts the pairs reference (4 per pair)
    unique: int  # distinct pieces (distinct texts under the truncate and head_tail views)
    new: int  # encoded by this run (this rank)
    reused: int  # already in the cache
    truncated: dict[str, int]  # per role, among the new texts
    other_ranks: int = 0  # missing texts left to the other ranks of a sharded run
    view: str = "truncate"
    texts: int = 0  # distinct texts, before they are cut into pieces
    pieces: int = 0  # pieces of the distinct texts, before the distinct ones are kept

    def line(self) -> str:
        truncated = ", ".join(f"{role} {n}" for role, n in self.truncated.items())
        if self.view in ("truncate", HEAD_TAIL):
            line = (
                f"{self.new} texts new, {self.reused} reused, {sum(self.truncated.values())} truncated ({truncated}); "
                f"{self.unique} unique of {self.referenced} referenced; namespace {self.namespace}"
            )
        else:
            line = (
                f"{self.new} pieces new, {self.reused} reused, {sum(self.truncated.values())} truncated ({truncated}); view {self.view}: "
                f"{self.texts} unique texts of {self.referenced} referenced, cut into {self.pieces} pieces, {self.unique} distinct; namespace {self.namespace}"
            )
        return line + (f"; {self.other_ranks} left to other ranks" if self.other_ranks else "")


def shard_from_environment(shard: str | None) -> tuple[int, int]:
    """`--shard i/n`, else torchrun's RANK/WORLD_SIZE, else (0, 1)."""
    if shard:
        try:
            index, count = (int(part) for part in shard.split("/"))
        except ValueError:
            raise ConfigError(f"--shard must look like i/n (e.g. 0/2), got {shard!r}") from None
    else:
        index, count = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if not 0 <= index < count:
        raise ConfigError(f"shard index must be in [0, {count}), got {index}")
    return index, count


def load_encoder(config: Config) -> TextEncoder:
    """The configured encoder; under the head_tail view it cuts long texts to their start and end."""
    model = config.model
    return TextEncoder.load(
        model.encoder,
        device=config.training.device,
        max_context_tokens=model.max_context_tokens,
        max_module_tokens=model.max_module_tokens,
        context_prompt=model.context_prompt,
        truncation_side=HEAD_TAIL if config.features.view == HEAD_TAIL else model.truncation_side,
        normalize=model.normalize,
        batch_size=model.batch_size,
    )


def embed_pairs(
    files: Sequence[Path],
    cache_dir: Path,
    config: Config,
    shard: tuple[int, int] = (0, 1),
    encoder: TextEncoder | None = None,
    progress: bool = True,
) -> EmbedReport:
    # a cache this run cannot write is refused before the encoder loads, and one without room for
    # the new vectors before the first is encoded (data/guards.py)
    check_writable_folder(cache_dir, "--cache", replaced=False)
    pairs = load_pairs(files, config.data.modules)
    encoder = encoder or load_encoder(config)
    namespace = EmbeddingCache(cache_dir).namespace(encoder.fingerprint(), dtype=config.cache.dtype, create=True)
    view = View.from_config(config.features, config.model)
    view.check_vectors(encoder.fingerprint(), f"encoder {encoder.name!r}")
    cut = cut_texts(unique_texts(pairs), view)
    texts = cut.table
    with namespace.writer(shard):
        missing = texts.filter(pl.col("key").is_in(namespace.missing(texts["key"].to_list())))
        index, count = shard
        mine = missing.filter(_slice_of(missing["key"], count) == index)
        # vectors at the dtype's width, plus a 64-character key each (Parquet compresses neither much)
        check_free_space(cache_dir, mine.height * (encoder.dimension * np.dtype(config.cache.dtype).itemsize + 64), "--cache")
        truncated = encode_into(namespace, encoder, mine, config.cache.shard_size, progress)
    return EmbedReport(
        namespace=namespace.id,
        referenced=4 * pairs.height,
        unique=texts.height,
        new=mine.height,
        reused=texts.height - missing.height,
        truncated=truncated,
        other_ranks=missing.height - mine.height,
        view=view.name,
        texts=cut.texts.height,
        pieces=cut.references,
    )


def _slice_of(keys: pl.Series, count: int) -> pl.Series:
    # The key is a hex hash: its first 8 hex digits are uniform, so the slices are even.
    return keys.str.slice(0, 8).str.to_integer(base=16) % count
