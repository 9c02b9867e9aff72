"""The encode-and-write loop of stage 0: texts the vector store lacks, through the frozen encoder,
into the store shard by shard. Used by `pipeline embed` and by scoring a checkpoint on texts its
cache has not seen.

    truncated = encode_into(namespace, encoder, texts, shard_size=4096)   # texts: `unique_texts` rows
"""

from typing import Protocol

import numpy as np
import polars as pl
from tqdm import tqdm

from features.encoder import ROLES, TextEncoder


class VectorSink(Protocol):
    """Where `encode_into` writes: the embedding cache's `cache.Namespace`, or anything that stores
    a shard of (key, vector) rows."""

    def write_shard(self, keys: list[str], vectors: np.ndarray) -> object: ...


def encode_into(sink: VectorSink, encoder: TextEncoder, texts: pl.DataFrame, shard_size: int, progress: bool = False) -> dict[str, int]:
    """Encode `texts` (key, role, text, chars) role by role, longest first so that batches hold
    texts of similar length, and write a shard every `shard_size` vectors. Returns how many texts of
    each role were cut to the encoder's token limit."""
    truncated = dict.fromkeys(ROLES, 0)
    bar = tqdm(total=texts.height, unit="text", desc="embed", disable=not progress, dynamic_ncols=True)
    step = encoder.batch_size * 8  # progress granularity; ST sorts by length within each call too
    for role in ROLES:
        todo = texts.filter(pl.col("role") == role).sort("chars", descending=True)
        for start in range(0, todo.height, shard_size):
            chunk = todo.slice(start, shard_size)
            parts = []
            for offset in range(0, chunk.height, step):
                vectors, n_truncated = encoder.encode(chunk["text"].slice(offset, step).to_list(), role)
                parts.append(vectors)
                truncated[role] += n_truncated
                bar.update(len(vectors))
            sink.write_shard(chunk["key"].to_list(), np.concatenate(parts))
    bar.close()
    return truncated
