"""From validated pairs to the texts the encoder sees and the vectors the heads consume.

Each pair references four texts: the positive and negative trajectory contexts ("context" role)
and module texts ("module" role). Contexts repeat across the modules of a task, so the unique
texts are far fewer than the references; a vector store (the embedding cache) keeps each once,
under `text_key(role, text)`.
"""

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import polars as pl
import pyarrow as pa


class VectorSource(Protocol):
    """What `pair_vectors` reads from: the embedding cache's `cache.Namespace`, or anything else that
    returns the float32 vectors of text keys in order (raising when some have none); the keys come
    as a list of str or an Arrow string array."""

    dimension: int

    def fetch(self, keys, out: np.ndarray | None = None) -> np.ndarray: ...


def text_key(role: str, text: str) -> str:
    """The key of a text in a role ("context" or "module"): the same text embedded with and
    without the context prompt is two vectors, so the role is part of the key."""
    return hashlib.blake2b(f"{role}\0{text}".encode(), digest_size=16).hexdigest()


ROLE_COLUMNS = {
    "context": ("positive_context", "negative_context"),
    "module": ("positive_module_text", "negative_module_text"),
}
TEXT_COLUMN_ROLES = {column: role for role, columns in ROLE_COLUMNS.items() for column in columns}


def with_text_keys(pairs: pl.DataFrame) -> pl.DataFrame:
    """`pairs` with the cache key of each of its four texts as columns `<text column>_key`
    (`data.schema.TEXT_KEY_COLUMNS`), each distinct (role, text) hashed once. Call it once per run
    after loading: `unique_texts`, `pair_text_keys` and everything built on them read these columns
    instead of hashing again. A table that has them already comes back as it is."""
    if all(f"{column}_key" in pairs.columns for column in TEXT_COLUMN_ROLES):
        return pairs
    keyed = []
    # polars groups the next role's texts in a thread (without the GIL) while Python hashes these
    with ThreadPoolExecutor(1) as pool:
        grouped = [pool.submit(_group_texts, pairs, columns) for columns in ROLE_COLUMNS.values()]
        for (role, columns), groups in zip(ROLE_COLUMNS.items(), grouped):
            group_of_row, texts = groups.result()
            row_keys = pl.Series("key", text_keys(role, texts), dtype=pl.String).gather(group_of_row)
            keyed += [row_keys.slice(i * pairs.height, pairs.height).alias(f"{column}_key") for i, column in enumerate(columns)]
    return pairs.with_columns(keyed)


def _group_texts(pairs: pl.DataFrame, columns: tuple[str, ...]) -> tuple[np.ndarray, pl.Series]:
    """The distinct texts of `columns` stacked, and the index into them of each stacked row."""
    rows = pl.concat([pairs[c] for c in columns]).alias("text").to_frame().with_row_index("row")
    groups = rows.group_by("text").agg("row")
    group_of_row = np.empty(rows.height, np.int64)
    members = groups.select(group=pl.int_range(pl.len(), dtype=pl.Int64), row="row").explode("row")
    group_of_row[members["row"].to_numpy()] = members["group"].to_numpy()
    return group_of_row, groups["text"]


def text_keys(role: str, texts: pl.Series, chunk: int = 4096) -> list[str]:
    """`text_key(role, text)` of each text, hashed from the UTF-8 bytes Arrow holds, a chunk of
    texts at a time: no Python string per text and no copy to encode it (faster than `text_key`
    per text: docs/results/speed.md). A thread per core gained nothing measurable on 2 shared cores (hashlib
    lets go of the GIL only for inputs over 2 KB), so it runs on one."""
    prefix = hashlib.blake2b(f"{role}\0".encode(), digest_size=16)
    keys = []
    for start in range(0, len(texts), chunk):
        arrow = texts.slice(start, chunk).to_arrow().cast(pa.large_string())
        offsets = np.frombuffer(arrow.buffers()[1], np.int64)[arrow.offset : arrow.offset + len(arrow) + 1].tolist()
        data = memoryview(arrow.buffers()[2] or b"")
        for begin, end in zip(offsets, offsets[1:]):
            digest = prefix.copy()
            digest.update(data[begin:end])
            keys.append(digest.hexdigest())
    return keys


def unique_texts(pairs: pl.DataFrame) -> pl.DataFrame:
    """One row per distinct (role, text) that `pairs` references: columns key, role, text, chars
    (the keys of `with_text_keys`, computed now when `pairs` does not carry them)."""
    pairs = with_text_keys(pairs)
    frames = [
        pl.concat([pairs.select(key=f"{c}_key", text=c) for c in columns]).unique(subset="key", maintain_order=True).with_columns(role=pl.lit(role))
        for role, columns in ROLE_COLUMNS.items()
    ]
    return pl.concat(frames).select("key", "role", "text", chars=pl.col("text").str.len_chars())


def pair_text_keys(pairs: pl.DataFrame) -> pl.DataFrame:
    """The cache key of each of a pair's four texts: columns `<text column>_key`, row-aligned
    (`with_text_keys`: read from `pairs` when it carries them, hashed now otherwise)."""
    return with_text_keys(pairs).select(f"{column}_key" for column in TEXT_COLUMN_ROLES)


@dataclass
class PairVectors:
    """The four vectors of every pair, row-aligned with the pair table."""

    positive_context: np.ndarray
    positive_module_text: np.ndarray
    negative_context: np.ndarray
    negative_module_text: np.ndarray
    target_module: np.ndarray  # the module name of each pair
    text_keys: pl.DataFrame | None = None  # `pair_text_keys` of the pairs, when read from a cache
    pieces: object | None = None  # features.views.PieceFeatures these were pooled from, if any


def pair_vectors(source: VectorSource, pairs: pl.DataFrame, memory_map: Path | None = None, chunk: int = 50_000) -> PairVectors:
    """Each pair with its four cached vectors. The unique texts of all pairs are fetched from
    `source` in one read (one pass over the cache), then gathered per column `chunk` pairs at a
    time; raises what `source.fetch` raises when some texts were never embedded
    (`cache.MissingVectors` for the cache). With `memory_map` (a folder) the unique vectors and the
    four matrices are written there as .npy files and come back memory-mapped, so data larger than
    RAM costs only one chunk of memory."""
    keys = pair_text_keys(pairs)
    names = [c.removesuffix("_key") for c in keys.columns]
    shape = (pairs.height, source.dimension)
    if memory_map is not None:
        memory_map.mkdir(parents=True, exist_ok=True)
        columns = {name: np.lib.format.open_memmap(memory_map / f"{name}.npy", mode="w+", dtype=np.float32, shape=shape) for name in names}
    else:
        columns = {name: np.empty(shape, np.float32) for name in names}
    unique, inverse = np.unique(np.concatenate([keys[c].to_numpy() for c in keys.columns]), return_inverse=True)
    inverse = inverse.reshape(len(names), pairs.height)
    if memory_map is None:
        vectors = source.fetch(unique.tolist())
    else:
        vectors = source.fetch(unique.tolist(), out=np.lib.format.open_memmap(memory_map / "unique.npy", mode="w+", dtype=np.float32, shape=(len(unique), source.dimension)))
    for start in range(0, pairs.height, chunk):
        for name, index in zip(names, inverse[:, start : start + chunk]):
            columns[name][start : start + len(index)] = vectors[index]
    if memory_map is not None:
        for matrix in columns.values():
            matrix.flush()
        del vectors
        (memory_map / "unique.npy").unlink()
        columns = {name: np.load(memory_map / f"{name}.npy", mmap_mode="c") for name in names}
    return PairVectors(**columns, target_module=pairs["target_module"].to_numpy(), text_keys=keys)


def pair_table_hash(pairs: pl.DataFrame, keys: pl.DataFrame) -> str:
    """Identifies a pair table by its pair ids, modules and the keys of its four texts
    (`pair_text_keys`, already computed to read the vectors), in order."""
    digest = hashlib.sha256()
    for row in zip(pairs["pair_id"], pairs["target_module"], *(keys[c] for c in keys.columns)):
        digest.update("\t".join(row).encode() + b"\n")
    return digest.hexdigest()
