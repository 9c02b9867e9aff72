"""Views: how a text longer than the encoder's window becomes vectors (config section `features`).

    from features.views import View
    view = View("rounds", window_words={"context": 1024, "module": 256}, max_pieces=32)
    view.pieces(text, "context")            # ["Task: ...\\n", "[Round 1]\\n<action>...", ...]

A view cuts a text into **pieces**, each an ordinary cached text (key `text_key(role, piece)`), so
pieces dedupe across pairs, sides and views like any text, and stage 0 never needs the encoder:

- `truncate`: the text itself, one piece; the encoder keeps the end of it (`model.truncation_side`).
- `head_tail`: the text itself, one piece; the encoder keeps the first third of its token budget
  and the last two thirds (`TextEncoder` truncation side "head_tail", part of the cache namespace).
- `chunks`: consecutive windows of `window_words` words, exact slices of the text; the text's
  vector is the mean of its windows' vectors.
- `rounds`: the text before the first `[Round i]` header (the task line) is one piece, then each
  round block (`data/trajectory.py`, without the newline between blocks); a round longer than `window_words` words is cut into windows,
  and a text without rounds is all windows. The heads pool a text's pieces with a learned attention
  beside their mean (heads/model.py).

A text of more than `max_pieces` pieces keeps its first `max_pieces // 2` and its last
`max_pieces - max_pieces // 2`. Everything here is plain text processing: no tokenizer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import polars as pl

from data.errors import UserError
from data.trajectory import ROUND_HEADER
from features.pairs import PairVectors, VectorSource, pair_text_keys, text_key, unique_texts, with_text_keys

ViewName = Literal["truncate", "head_tail", "chunks", "rounds"]  # the one list of views: config, CLI and checkpoints take it from here
VIEWS: tuple[str, ...] = get_args(ViewName)
ONE_PIECE_VIEWS = ("truncate", "head_tail")
ATTENTION_VIEWS = ("rounds",)  # the views whose heads pool pieces with a learned attention
HEAD_TAIL = "head_tail"  # the view and the encoder truncation side it maps to
_WORD = re.compile(r"\S+\s*")


class ViewMismatch(UserError):
    """Vectors or heads of one view used with another."""


def pieces(text: str, role: str, view: str, window_words: int, max_pieces: int) -> list[str]:
    """The pieces of `text` (in `role`, which only matters through `window_words`) under `view`;
    never empty (an empty text is one empty piece)."""
    if view not in VIEWS:
        raise ValueError(f"view must be one of {', '.join(VIEWS)}, got {view!r}")
    if view in ONE_PIECE_VIEWS or not text:
        return [text]
    if view == "chunks":
        found = windows(text, window_words)
    else:
        found = []
        for block in round_blocks(text):
            found += windows(block, window_words)
    return _keep_ends(found, max_pieces) or [text]


def _keep_ends(items: list, max_pieces: int) -> list:
    """The first max_pieces // 2 and the last max_pieces - max_pieces // 2 of `items`, when longer."""
    if len(items) > max_pieces:
        return items[: max_pieces // 2] + items[len(items) - (max_pieces - max_pieces // 2) :]
    return items


def piece_rounds(text: str, window_words: int, max_pieces: int) -> list[int | None]:
    """Under the rounds view, for each piece of `text` (`pieces(text, role, "rounds", window_words,
    max_pieces)`, in order): the number of the `[Round N]` header of the block it was cut from;
    None for text before the first header (or a text without headers)."""
    labels: list[int | None] = []
    for block in round_blocks(text) if text else []:
        header = ROUND_HEADER.match(block)
        labels += [int(header.group(1)) if header else None] * len(windows(block, window_words))
    return _keep_ends(labels, max_pieces) or [None]


def windows(text: str, window_words: int) -> list[str]:
    """`text` as consecutive slices of `window_words` words each (a word keeps the whitespace after
    it; leading whitespace goes with the first window), so that `"".join(windows(t, n)) == t`."""
    starts = [m.start() for m in _WORD.finditer(text)]
    if len(starts) <= window_words:
        return [text] if text else []
    cuts = [0] + starts[window_words::window_words] + [len(text)]
    return [text[a:b] for a, b in zip(cuts, cuts[1:])]


def round_blocks(text: str) -> list[str]:
    """The text before the first `[Round i]` header (if any), then each round from its header to
    the next, without the one newline that separates blocks: a round reads the same whether it is
    a trajectory's last or not, so it is one cached piece either way, and for the texts that
    `data/trajectory.py` writes `"\n".join(round_blocks(t)) == t`. A text without headers is one block."""
    starts = [m.start() for m in ROUND_HEADER.finditer(text)]
    cuts = sorted({0, *starts, len(text)})
    blocks = [text[a:b] for a, b in zip(cuts, cuts[1:]) if b > a]
    return [block[:-1] if block.endswith("\n") and i + 1 < len(blocks) else block for i, block in enumerate(blocks)]


@dataclass(frozen=True)
class View:
    """A view with its settings resolved: `window_words` per role."""

    name: str = "truncate"
    window_words: dict[str, int] = field(default_factory=lambda: {"context": 1024, "module": 256})
    max_pieces: int = 32

    @classmethod
    def from_config(cls, features, model) -> View:
        """From the config's `features` and `model` sections; window_words 0 is half the role's token limit."""
        auto = {"context": model.max_context_tokens // 2, "module": model.max_module_tokens // 2}
        windows = {role: features.window_words or max(1, n) for role, n in auto.items()}
        return cls(features.view, windows, features.max_pieces)

    def record(self) -> dict:
        """What a checkpoint's config.json records of the view."""
        return {"view": self.name, "window_words": dict(self.window_words), "max_pieces": self.max_pieces}

    @property
    def attention(self) -> bool:
        return self.name in ATTENTION_VIEWS

    def pieces(self, text: str, role: str) -> list[str]:
        return pieces(text, role, self.name, self.window_words[role], self.max_pieces)

    def piece_rounds(self, text: str, role: str) -> list[int | None]:
        """The round number of each of `pieces(text, role)` (rounds view only; `piece_rounds`)."""
        if self.name != "rounds":
            raise ValueError(f"pieces map to rounds only under the rounds view, not {self.name!r}")
        return piece_rounds(text, self.window_words[role], self.max_pieces)

    def describe(self) -> str:
        if self.name in ONE_PIECE_VIEWS:
            return self.name
        return f"{self.name} (windows of {self.window_words['context']} / {self.window_words['module']} words, at most {self.max_pieces} pieces)"

    def check_vectors(self, fingerprint: dict, where: str) -> None:
        """`ViewMismatch` unless vectors of `fingerprint` (an encoder's, as the cache namespace
        records it) are this view's: head_tail vectors come only from a head_tail encoder, the
        other views' never."""
        side = fingerprint.get("truncation_side")
        if (self.name == HEAD_TAIL) != (side == HEAD_TAIL):
            raise ViewMismatch(
                f"view {self.name!r} cannot use {where}: its vectors were cut with truncation side {side!r}"
                f"{'' if self.name == HEAD_TAIL else ', which only the head_tail view uses'}. "
                "Embed with the view you train and score with (`pipeline embed ... --view VIEW`)."
            )


def check_same_view(ours: View, theirs: View, what: str) -> None:
    """`ViewMismatch` naming both views unless they cut texts the same way (window_words and
    max_pieces do not matter to truncate and head_tail, which never cut)."""
    same = ours.name == theirs.name and (ours.name in ONE_PIECE_VIEWS or ours == theirs)
    if not same:
        raise ViewMismatch(f"{what} uses view {theirs.describe()}, but this run uses {ours.describe()}; use the same view (features.view, window_words, max_pieces)")


@dataclass
class TextPieces:
    """Texts cut into pieces, as a CSR layout: text i's pieces are rows
    `piece_ids[offsets[i]:offsets[i + 1]]` of `table` (the distinct pieces: key, role, text, chars)."""

    texts: pl.DataFrame  # key, role, text, chars: `features.pairs.unique_texts`
    table: pl.DataFrame  # the distinct pieces
    offsets: np.ndarray  # int64, len(texts) + 1
    piece_ids: np.ndarray  # int32

    @property
    def references(self) -> int:
        return len(self.piece_ids)


def cut_texts(texts: pl.DataFrame, view: View) -> TextPieces:
    """`texts` (key, role, text rows) cut into pieces under `view`, each distinct piece once."""
    if view.name in ONE_PIECE_VIEWS:  # each text its own piece: no Python loop over millions of texts
        table = texts.select("key", "role", "text").with_columns(chars=pl.col("text").str.len_chars())
        return TextPieces(texts, table, np.arange(texts.height + 1, dtype=np.int64), np.arange(texts.height, dtype=np.int32))
    row_of: dict[str, int] = {}
    keys, roles, piece_texts = [], [], []
    counts, ids = np.zeros(texts.height, np.int64), []
    for i, (role, text) in enumerate(zip(texts["role"], texts["text"])):
        found = view.pieces(text, role)
        counts[i] = len(found)
        for piece in found:
            piece_key = text_key(role, piece)
            row = row_of.get(piece_key)
            if row is None:
                row = row_of[piece_key] = len(keys)
                keys.append(piece_key)
                roles.append(role)
                piece_texts.append(piece)
            ids.append(row)
    table = pl.DataFrame({"key": keys, "role": roles, "text": piece_texts}, schema={"key": pl.String, "role": pl.String, "text": pl.String})
    table = table.with_columns(chars=pl.col("text").str.len_chars())
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return TextPieces(texts, table, offsets, np.asarray(ids, np.int32))


PAIR_COLUMNS = ("positive_context", "positive_module_text", "negative_context", "negative_module_text")


@dataclass
class PieceFeatures:
    """What stage 0 trains on: one matrix of the distinct piece vectors, each text as its piece rows
    (CSR: `piece_ids[offsets[t]:offsets[t + 1]]`), and each pair as the text ids of its four texts
    (`pair_texts`, columns `PAIR_COLUMNS`). Batches gather from these; nothing is copied per pair."""

    vectors: np.ndarray  # (distinct pieces, d) float32, memory-mapped when large
    offsets: np.ndarray  # int64, texts + 1
    piece_ids: np.ndarray  # int32
    pair_texts: np.ndarray  # (pairs, 4) int32
    target_module: np.ndarray
    text_keys: pl.DataFrame  # `pair_text_keys` of the pairs
    view: View

    def select_pairs(self, rows: slice) -> PieceFeatures:
        """The features of `rows` of the pairs, sharing this matrix: splits read from the cache
        together (one read, one matrix) and train and validate on their own pairs."""
        return PieceFeatures(self.vectors, self.offsets, self.piece_ids, self.pair_texts[rows], self.target_module[rows], self.text_keys[rows], self.view)

    def pooled(self, block: int = 65_536) -> np.ndarray:
        """The mean of each text's piece vectors: (texts, d) float32. Summed in float64 one block
        of texts at a time, so the float64 temporaries stay a block's, not twice the whole matrix."""
        counts = np.diff(self.offsets)
        pooled = np.empty((len(counts), self.vectors.shape[1]), np.float32)
        for first in range(0, len(counts), block):
            last = min(first + block, len(counts))
            start, stop = self.offsets[first], self.offsets[last]
            text_of_piece = np.repeat(np.arange(last - first), counts[first:last])
            sums = np.zeros((last - first, self.vectors.shape[1]), np.float64)
            np.add.at(sums, text_of_piece, np.asarray(self.vectors[self.piece_ids[start:stop]], np.float64))
            pooled[first:last] = sums / np.maximum(counts[first:last], 1)[:, None]
        return pooled

    def pair_vectors(self) -> PairVectors:
        """The four mean-pooled text vectors of each pair (what baselines read), with these piece
        features attached as `pieces` so the heads can still pool for themselves."""
        if self.view.name in ONE_PIECE_VIEWS:
            text_vectors = self.vectors[self.piece_ids[self.offsets[:-1]]]
        else:
            text_vectors = self.pooled()
        columns = {name: text_vectors[self.pair_texts[:, j]] for j, name in enumerate(PAIR_COLUMNS)}
        return PairVectors(**columns, target_module=self.target_module, text_keys=self.text_keys, pieces=self)


def pair_pieces(pairs: pl.DataFrame, view: View) -> tuple[TextPieces, np.ndarray, pl.DataFrame]:
    """The pairs' distinct texts cut into pieces, each pair's four text ids (int32, columns
    `PAIR_COLUMNS`) and `pair_text_keys(pairs)`; each distinct text is hashed once (`with_text_keys`),
    or not at all when `pairs` carries its keys."""
    pairs = with_text_keys(pairs)
    texts = unique_texts(pairs)
    cut = cut_texts(texts, view)
    keys = pair_text_keys(pairs)
    # one join of the four columns stacked, not a dict of every key (no Python object per text) nor
    # a join per column: 4.1 -> 2.1 s at 1M pairs; unordered, then sorted back by position
    rows = texts.select("key").with_row_index("row")
    stacked = pl.concat([keys.select(key=f"{name}_key") for name in PAIR_COLUMNS]).with_row_index("at")
    ids = stacked.join(rows, on="key", how="left").sort("at")["row"].to_numpy()
    return cut, np.ascontiguousarray(ids.reshape(len(PAIR_COLUMNS), -1).T, dtype=np.int32), keys


def piece_features(source: VectorSource, pairs: pl.DataFrame, view: View, memory_map: Path | None = None, memory_map_above: int = 0) -> PieceFeatures:
    """The pairs' piece features under `view`, every distinct piece's vector read from `source` in
    one read (raising what `source.fetch` raises when some were never embedded:
    `cache.MissingVectors`). With `memory_map` (a folder), a matrix of more than `memory_map_above`
    bytes streams into a .npy file there, which comes back memory-mapped, so data larger than RAM
    costs one read batch of memory."""
    cut, pair_texts, keys = pair_pieces(pairs, view)
    piece_keys = cut.table["key"].to_arrow()  # not a Python string per key: 2.5M of them at 1M pairs
    shape = (len(piece_keys), source.dimension)
    if memory_map is None or shape[0] * shape[1] * 4 <= memory_map_above:
        vectors = source.fetch(piece_keys) if len(piece_keys) else np.zeros(shape, np.float32)
    else:
        memory_map.mkdir(parents=True, exist_ok=True)
        matrix = np.lib.format.open_memmap(memory_map / "pieces.npy", mode="w+", dtype=np.float32, shape=shape)
        if len(piece_keys):
            source.fetch(piece_keys, out=matrix)
        matrix.flush()
        del matrix
        vectors = np.load(memory_map / "pieces.npy", mmap_mode="c")
    return PieceFeatures(vectors, cut.offsets, cut.piece_ids, pair_texts, pairs["target_module"].to_numpy(), keys, view)


def encode_piece_features(encoder, pairs: pl.DataFrame, view: View) -> PieceFeatures:
    """The pairs' piece features computed now by `encoder` (a features.encoder.TextEncoder), each
    distinct piece once: the cache-free counterpart of `piece_features`, for an encoder in training."""
    cut, pair_texts, keys = pair_pieces(pairs, view)
    vectors = np.zeros((cut.table.height, encoder.dimension), np.float32)
    for role in ("context", "module"):
        rows = np.flatnonzero((cut.table["role"] == role).to_numpy())
        if len(rows):
            vectors[rows] = encoder.encode(cut.table["text"].gather(rows).to_list(), role)[0]
    return PieceFeatures(vectors, cut.offsets, cut.piece_ids, pair_texts, pairs["target_module"].to_numpy(), keys, view)
