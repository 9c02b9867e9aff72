"""The reward API: a trained checkpoint behind `score(contexts, module_texts, modules)`, for RL
frameworks, the `pipeline score` / `pipeline serve` / `pipeline evaluate` verbs and your own scripts.

    from pipeline.rewards import load
    scorer = load("ckpt/")                                        # heads + the checkpoint's encoder
    scorer = load("ckpt/", cache_dir="embeddings/", normalize=True)   # also read cached vectors; normalised rewards
    rewards = scorer.score(contexts, module_texts, modules)       # float32 numpy array, one reward per row
    scorer.score_trajectory(context, {"planner": plan, "executor": actions})   # {"planner": 0.41, "executor": -1.2}
    rewards, uncertainty = scorer.score_with_uncertainty(contexts, module_texts, modules)   # two float32 arrays

    from data.trajectory import module_texts_from_trajectory     # module texts cut out of a tagged trajectory

    rewards, shares = scorer.round_rewards(contexts, module_texts, modules)   # checkpoints of the rounds view
    scored = scorer.rewards(contexts, module_texts, modules)   # all of it from one pass: .rewards, .raw, .uncertainty, .round_rewards
    shares[i]          # float32 array: the reward of row i split over its module text's pieces

A checkpoint reads texts through the view it was trained with (features/views.py, recorded in its
config.json): a text's vector is its pieces' vectors pooled by the
heads, and each piece is looked up like any text. **Per-round rewards** (checkpoints of the `rounds`
view): `round_rewards` returns, beside each row's reward, its share per piece of the module text,
in order: piece i is the module text's i-th `[Round N]` block (a round longer than the view's window
is several pieces, and a text of more than `max_pieces` pieces keeps its first and last ones, as
`View.pieces(text, "module")` lists them). A piece's share is its attention weight in the head's
pooling times the row's reward, so the shares of a row sum to its reward (normalised or not, as
`score` returns it). The mean half of the pooling is not attributed otherwise: the shares say where
the head looked, not a causal decomposition.

A text's vector comes from, in this order: an in-memory LRU of the vectors of recent texts
(`memory_size` of them), the embedding cache given as `cache_dir` (read only, unless
`write_cache=True` as for `pipeline evaluate`; its whole namespace is read once, at `warm_up` or the
first lookup, into a key -> row index in memory, memory-mapped from a file in the temp folder
($TMPDIR) when larger than `index_memory_map_above_mb` (by default half the memory available), so
no request scans shards), and the checkpoint's own encoder
(`<checkpoint>/encoder/` after stage 1, else the one its fingerprint names), loaded on first use.
Within one call every distinct text is encoded at most once, so a trajectory's context shared by
all its modules costs one encoder pass. Calls run under no_grad and are serialised by a lock, so
one scorer can be shared by threads.

Heads only mean something on vectors of the encoder they were trained with, so the encoder is the
one the checkpoint's fingerprint names (or `encoder=`, a folder with the same weights), and it is
refused when its fingerprint differs.

Normalised rewards are (r - mean) / std with the per-module mean and std that `pipeline evaluate`
stores in the checkpoint's normalization.json when run on its validation data.

Uncertainty: a checkpoint trained with `--ensemble K` holds K members (heads/ensemble.py); its
reward is their mean, and `score_with_uncertainty` also returns their spread, the population
standard deviation (ddof 0) of the members' rewards, one per row, in the same units as the rewards
(divided by the module's std when normalised). A single-model checkpoint is an ensemble of one:
its uncertainty is 0. `score` and `raw` return the rewards alone, as they always did;
`scorer.members` says how many members there are.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from scipy.special import expit
import torch
from safetensors import SafetensorError

from cache import CacheError, EmbeddingCache, MissingVectors, Namespace, NoNamespace, VectorIndex, memory_map_above
from data.errors import UserError
from features.embedding import encode_into
from features.encoder import ROLES, TextEncoder, pick_device
from features.pairs import PairVectors, text_key, unique_texts, with_text_keys
from features.views import ViewMismatch, cut_texts, piece_features
from heads.ensemble import RewardEnsemble, ensemble_size, load_heads, member_piece_scores, member_scores
from heads.blend import LINEAR_WEIGHTS, PARTS, TFIDF_WEIGHTS, VOCABULARY, Blend, Blended, LinearModel, TfidfModel
from heads.checkpoint import CheckpointRecord
from heads.model import CONFIG, CheckpointError, MultiModuleRewardModel, damaged, error_line, masked_mean
from heads.training import PairTensors
from pipeline.checkpoint import load_checkpoint_encoder

logger = logging.getLogger(__name__)


class ScoringError(UserError):
    """A request the scorer cannot answer: unknown module, texts that are not strings, rows of
    unequal length."""


class UntrainedModule(ScoringError):
    """A row names a module whose head saw no training pairs (or, normalised, a module the
    checkpoint has no mean/std for): its score would be a number that means nothing."""

    def __init__(self, message: str, row: int, module: str):
        super().__init__(message)
        self.row, self.module = row, module


@dataclass
class Rewards:
    """What `RewardScorer.rewards` returns, one entry per row; a slice of rows is a `Rewards` too
    (the server's micro-batcher hands each request its slice)."""

    rewards: np.ndarray  # normalised when the scorer is
    raw: np.ndarray
    uncertainty: np.ndarray  # the members' std (0 for a single model), in the units of `rewards`
    raw_uncertainty: np.ndarray
    round_rewards: list[np.ndarray] | None  # rounds view only: each row's reward split over its rounds

    def __len__(self) -> int:
        return len(self.rewards)

    def __getitem__(self, rows: slice) -> "Rewards":
        shares = None if self.round_rewards is None else self.round_rewards[rows]
        return Rewards(self.rewards[rows], self.raw[rows], self.uncertainty[rows], self.raw_uncertainty[rows], shares)


class RewardScorer:
    """A checkpoint's heads, the cache of its encoder's vectors (optional) and the encoder itself."""

    def __init__(
        self,
        model: MultiModuleRewardModel | RewardEnsemble,
        record: CheckpointRecord,
        folder: Path,
        namespace: Namespace | None = None,
        *,
        encoder: str | None = None,
        device: str = "cpu",
        normalize: bool = False,
        memory_size: int = 20_000,
        blend: Blended | None = None,
        index_memory_map_above_mb: int | str = "auto",
        allow_untrained: bool = False,
    ):
        self.model = model.eval()
        self.record = record
        self.folder = Path(folder)
        self.namespace = namespace
        self.device = device
        self.modules = list(model.modules_order)
        self.normalize = normalize
        self.normalization = checkpoint_normalization(record, self.modules, self.folder) if normalize else None
        # {module: {"train": n, "val": n}} as training recorded it; None for checkpoints from before the record
        self.module_pairs = module_pair_counts(record, self.modules)
        self.allow_untrained = allow_untrained
        self.view = record.view
        self.blend = blend  # the linear and TF-IDF parts blended with the heads, when the checkpoint has them
        self.memory = VectorMemory(memory_size)
        self.index_memory_map_above_mb = index_memory_map_above_mb
        self._index: VectorIndex | None = None
        self._scratch: tempfile.TemporaryDirectory | None = None  # holds the index's memory map, if any
        self._encoder_name = encoder
        self._encoder: TextEncoder | None = None
        self._lock = threading.Lock()
        # what the scorer has done so far, for logs, /health and tests
        self.calls = 0
        self.rows = 0
        self.encoded = 0  # texts run through the encoder
        self.from_cache = 0  # texts read from the embedding cache

    @property
    def members(self) -> int:
        """How many members the checkpoint's ensemble has; 1 for a single model."""
        return ensemble_size(self.model)

    @property
    def trained_modules(self) -> list[str]:
        """The modules whose head saw training pairs (every module of a checkpoint from before
        training recorded its counts), in the checkpoint's order."""
        if self.module_pairs is None:
            return list(self.modules)
        return [m for m in self.modules if self.module_pairs[m]["train"] > 0]

    @property
    def scorable_modules(self) -> list[str]:
        """The modules this scorer answers for: the trained ones (every one with `allow_untrained`),
        and with `normalize` only those the checkpoint has a usable mean and std for."""
        modules = self.modules if self.allow_untrained else self.trained_modules
        return [m for m in modules if not self.normalize or m in self.normalization]

    def training_summary(self) -> str:
        """What each module's head was trained on, in words: 'executor 40 training / 12 validation
        pairs, planner none'."""
        if self.module_pairs is None:
            return f"{', '.join(self.modules)} (this checkpoint predates the per-module record of training pairs)"
        counts = self.module_pairs
        return ", ".join(f"{m} {counts[m]['train']} training / {counts[m]['val']} validation pairs" if counts[m]["train"] else f"{m} none" for m in self.modules)

    def coverage(self) -> str:
        """One line for the verbs that load a scorer: what the heads were trained on and which
        modules are not scored, and why."""
        line = f"heads trained on: {self.training_summary()}"
        untrained = [m for m in self.modules if m not in self.trained_modules]
        if untrained:
            line += f"; {', '.join(untrained)} " + ("scored anyway (allow_untrained: their scores mean nothing)" if self.allow_untrained else "refused (untrained heads)")
        if self.normalize:
            lacking = [m for m in self.modules if m not in self.normalization and (self.allow_untrained or m in self.trained_modules)]
            if lacking:
                line += f"; {', '.join(lacking)} refused with --normalize (no stored mean/std)"
        return line

    def refusal(self, module: str) -> str | None:
        """Why a row of `module` is not scored (one line, naming the module and what the checkpoint
        was trained on, and how to ask for it anyway), or None when it is."""
        if module not in self.modules:
            return f"unknown module {module!r} (this checkpoint has: {', '.join(self.modules)})"
        if not self.allow_untrained and module not in self.trained_modules:
            return (
                f"module {module!r} had no training pairs, so its head is untrained and its score means nothing "
                f"(this checkpoint was trained on: {self.training_summary()}); score a trained module, or allow untrained "
                "modules explicitly (--allow-untrained, serve.allow_untrained: true, REWARD_ALLOW_UNTRAINED=1)"
            )
        if self.normalize and module not in self.normalization:
            return (
                f"module {module!r} has no normalisation (mean/std) in {self.folder}: the data `pipeline evaluate` stored it from "
                f"held no usable pairs of it; score {module!r} without normalisation, or store one with `pipeline evaluate "
                f"{self.folder} VAL.jsonl --cache CACHE --out REPORT` on data that holds {module!r} pairs"
            )
        return None

    @property
    def fingerprint(self) -> dict:
        return self.record.encoder_fingerprint

    def encoder(self) -> TextEncoder:
        """The checkpoint's encoder, loaded on first use with the settings its fingerprint records."""
        if self._encoder is None:
            self._encoder = load_checkpoint_encoder(self.folder, self.fingerprint, self._encoder_name, self.device)
        return self._encoder

    def warm_up(self) -> None:
        """Load the encoder and read the cache's index now (servers do, so the first request is not
        the slow one)."""
        self.encoder()
        if self.namespace is not None:
            self.index()

    def index(self) -> VectorIndex:
        """The cache namespace's key -> vector index, read on first use in one pass over its shards;
        memory-mapped from the temp folder ($TMPDIR; the cache itself is never written) when larger
        than `index_memory_map_above_mb` (MiB, or "auto": `cache.memory_map_above`)."""
        if self._index is None:
            memory_map = None
            if len(self.namespace) * self.namespace.dimension * 4 > memory_map_above(self.index_memory_map_above_mb):
                self._scratch = tempfile.TemporaryDirectory(prefix="reward-index-")
                memory_map = Path(self._scratch.name) / "vectors.npy"
            self._index = self.namespace.index(memory_map)
        return self._index

    # --- texts in, rewards out ---------------------------------------------------------------

    def score(self, contexts: Sequence[str], module_texts: Sequence[str], modules: Sequence[str]) -> np.ndarray:
        """One reward per row: `module_texts[i]` scored by the head of `modules[i]` in `contexts[i]`;
        normalised when the scorer was loaded with `normalize=True`."""
        rewards = self.raw(contexts, module_texts, modules)
        return self.normalized(rewards, modules) if self.normalize else rewards

    def raw(self, contexts: Sequence[str], module_texts: Sequence[str], modules: Sequence[str]) -> np.ndarray:
        """The heads' rewards, never normalised."""
        return self.rewards(contexts, module_texts, modules).raw

    def score_with_uncertainty(self, contexts: Sequence[str], module_texts: Sequence[str], modules: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(rewards, uncertainty), one of each per row: `score`'s rewards and the members' standard
        deviation (0 for a single model), both normalised when the scorer is."""
        scored = self.rewards(contexts, module_texts, modules)
        return scored.rewards, scored.uncertainty

    def raw_with_uncertainty(self, contexts: Sequence[str], module_texts: Sequence[str], modules: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """The heads' rewards and the members' standard deviation, never normalised."""
        scored = self.rewards(contexts, module_texts, modules)
        return scored.raw, scored.raw_uncertainty

    def round_rewards(self, contexts: Sequence[str], module_texts: Sequence[str], modules: Sequence[str]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Each row's reward (as `score` gives it) and its share per piece of the module text
        (`View.pieces(module_text, "module")`, in order): attention weight x reward, summing to the
        reward. Only for checkpoints of the `rounds` view; `ScoringError` for others."""
        if not self.view.attention:
            raise ScoringError(f"per-round rewards need a checkpoint of the rounds view; {self.folder} reads texts with view {self.view.name!r}")
        scored = self.rewards(contexts, module_texts, modules)
        return scored.rewards, scored.round_rewards

    def rewards(self, contexts: Sequence[str], module_texts: Sequence[str], modules: Sequence[str]) -> "Rewards":
        """Everything the scorer says about each row, from one pass of the heads: the reward
        (normalised when the scorer is), the raw reward, the members' spread and, for a checkpoint
        of the rounds view, the reward's share per round of the module text."""
        contexts, module_texts, modules = list(contexts), list(module_texts), list(modules)
        self.check(contexts, module_texts, modules)
        with self._lock:
            self.calls += 1
            self.rows += len(modules)
            members, weights, counts, linear = self._score_texts(contexts, module_texts, modules)
        if self.blend is not None:
            members = self.blend.rewards(members, linear, contexts, module_texts)
        raw, spread = members.mean(axis=0), members.std(axis=0)
        rewards, uncertainty = raw, spread
        if self.normalize:
            rewards, uncertainty = self.normalized(raw, modules), self.normalized_uncertainty(spread, modules)
        shares = [(weights[i, :n] * r).astype(np.float32) for i, (n, r) in enumerate(zip(counts, rewards))] if self.view.attention else None
        return Rewards(rewards, raw, uncertainty, spread, shares)

    def normalized_uncertainty(self, uncertainty: np.ndarray, modules: Sequence[str]) -> np.ndarray:
        """The uncertainty in normalised units: divided by the std of the row's module."""
        normalization = self.normalization or checkpoint_normalization(self.record, self.modules, self.folder)
        return (np.asarray(uncertainty, np.float32) / np.array([normalization[m][1] for m in modules], np.float32)).astype(np.float32)

    @torch.no_grad()
    def _score_texts(self, contexts: list[str], module_texts: list[str], modules: list[str]) -> tuple[np.ndarray, np.ndarray, list[int], np.ndarray | None]:
        """Raw rewards of every member (members, rows), each module-text piece's weight in its
        pooling (rows, most pieces; the members' mean), each module text's number of pieces, and
        the blend's linear part's scores (rows; None without one)."""
        n = len(modules)
        if not n:
            return np.zeros((self.members, 0), np.float32), np.zeros((0, 1), np.float32), [], np.zeros(0)
        texts, roles = contexts + module_texts, ["context"] * n + ["module"] * n
        cut = [self.view.pieces(text, role) for text, role in zip(texts, roles)]
        flat = [piece for pieces in cut for piece in pieces]
        vectors = torch.from_numpy(self.vectors(flat, [role for role, pieces in zip(roles, cut) for _ in pieces]))
        counts = [len(pieces) for pieces in cut]
        offsets = np.concatenate([[0], np.cumsum(counts)])
        data = PairTensors(vectors, torch.from_numpy(offsets), torch.arange(len(flat)), torch.arange(2 * n).reshape(2, n).T, self.model.module_index(modules))
        data = PairTensors(*(t.to(self.device) for t in (data.vectors, data.offsets, data.piece_ids, data.pair_texts, data.module_index)))
        context, module_text = data.pieces(data.pair_texts[:, 0]), data.pieces(data.pair_texts[:, 1])
        if isinstance(self.model, RewardEnsemble):
            scores, weights = self.model.member_pieces(context, module_text, data.module_index)
            weights = weights.mean(dim=0)
        else:
            scores, weights = self.model.score_pieces(context, module_text, data.module_index)
            scores = scores.unsqueeze(0)
        return scores.float().cpu().numpy(), weights.float().cpu().numpy(), counts[n:], self._linear(context, module_text, modules)

    def _linear(self, context: tuple[torch.Tensor, torch.Tensor], module_text: tuple[torch.Tensor, torch.Tensor], modules) -> np.ndarray | None:
        """The blend's linear part's scores of rows given as pieces (padded, mask): it reads each
        text's mean piece vector."""
        if self.blend is None or self.blend.linear is None:
            return None
        mean = lambda pieces: masked_mean(*pieces).float().cpu().numpy()  # noqa: E731
        return self.blend.linear_scores(mean(context), mean(module_text), modules)

    def normalized(self, rewards: np.ndarray, modules: Sequence[str]) -> np.ndarray:
        """(r - mean) / std per row, with the mean and std of the row's module."""
        normalization = self.normalization or checkpoint_normalization(self.record, self.modules, self.folder)
        mean = np.array([normalization[m][0] for m in modules], np.float32)
        std = np.array([normalization[m][1] for m in modules], np.float32)
        return ((np.asarray(rewards, np.float32) - mean) / std).astype(np.float32)

    def score_trajectory(self, context: str, module_texts: Mapping[str, str]) -> dict[str, float]:
        """Every given module's reward for one trajectory, in one call: `{module: reward}`."""
        modules = list(module_texts)
        rewards = self.score([context] * len(modules), [module_texts[m] for m in modules], modules)
        return {m: float(r) for m, r in zip(modules, rewards)}

    def check(self, contexts: list, module_texts: list, modules: list) -> None:
        """Raise `ScoringError` unless the three are equally long, texts are strings and every
        module has a head."""
        if not len(contexts) == len(module_texts) == len(modules):
            raise ScoringError(f"contexts, module_texts and modules must be equally long, got {len(contexts)}, {len(module_texts)}, {len(modules)}")
        for name, values in (("contexts", contexts), ("module_texts", module_texts), ("modules", modules)):
            wrong = next((i for i, v in enumerate(values) if not isinstance(v, str)), None)
            if wrong is not None:
                raise ScoringError(f"{name}[{wrong}] must be a string, got {type(values[wrong]).__name__}")
        unknown = sorted(set(modules) - set(self.modules))
        if unknown:
            raise ScoringError(f"no head for module(s) {', '.join(map(repr, unknown))}; this checkpoint has {', '.join(self.modules)}")
        scorable = set(self.scorable_modules)
        refused = next((i for i, m in enumerate(modules) if m not in scorable), None)
        if refused is not None:
            raise UntrainedModule(self.refusal(modules[refused]), refused, modules[refused])

    def vectors(self, texts: Sequence[str], roles: Sequence[str]) -> np.ndarray:
        """(len(texts), dimension) float32, row i the vector of `texts[i]` in role `roles[i]`: from
        memory, else the cache (one lookup for all), else the encoder; each distinct text once."""
        keys = [text_key(role, text) for text, role in zip(texts, roles)]
        wanted = dict(zip(keys, zip(roles, texts)))  # distinct (role, text), by key
        found = {key: vector for key in wanted if (vector := self.memory.get(key)) is not None}
        missing = [key for key in wanted if key not in found]
        if missing and self.namespace is not None:
            cached = self._read_cache(missing)
            self.from_cache += len(cached)
            found.update(cached)
            missing = [key for key in missing if key not in cached]
        for role in ROLES:
            encode = [key for key in missing if wanted[key][0] == role]
            if encode:
                vectors, _ = self.encoder().encode([wanted[key][1] for key in encode], role)
                self.encoded += len(encode)
                found.update(zip(encode, vectors))
        for key in wanted:
            self.memory.put(key, found[key])
        return np.stack([found[key] for key in keys])

    def _read_cache(self, keys: list[str]) -> dict[str, np.ndarray]:
        found, vectors = self.index().get(keys)
        return dict(zip((key for key, hit in zip(keys, found) if hit), vectors))

    # --- vectors in, rewards out: pair tables, for evaluation ---------------------------------

    def score_vectors(self, context: np.ndarray, module_text: np.ndarray, modules: np.ndarray | list[str], batch_size: int = 4096) -> np.ndarray:
        """One reward per row, each scored by the head of its module (the members' mean): the heads
        alone, without the blend's parts (its TF-IDF part reads texts, not vectors)."""
        return self.member_scores(context, module_text, modules, batch_size).mean(axis=0)

    @torch.no_grad()
    def member_scores(self, context: np.ndarray, module_text: np.ndarray, modules: np.ndarray | list[str], batch_size: int = 4096) -> np.ndarray:
        """(members, rows): every member's reward for every row; (1, rows) for a single model."""
        index = self.model.module_index(list(modules))
        scores = []
        for rows in torch.arange(len(index)).split(batch_size):
            c = torch.from_numpy(np.ascontiguousarray(context[rows.numpy()], np.float32)).to(self.device)
            m = torch.from_numpy(np.ascontiguousarray(module_text[rows.numpy()], np.float32)).to(self.device)
            scores.append(member_scores(self.model, c, m, index[rows].to(self.device)).float().cpu())
        return torch.cat(scores, dim=1).numpy() if scores else np.zeros((self.members, 0), np.float32)

    def pair_vectors(self, pairs: pl.DataFrame, embed_missing: bool = True, progress: bool = False) -> tuple[PairVectors, int]:
        """The four vectors of every pair, each text's pieces pooled by their mean, with the piece
        features the heads read attached (`.pieces`); and how many texts (pieces) had to be
        embedded into the cache first (with `embed_missing`; else `MissingVectors`)."""
        if self.namespace is None:
            raise CacheError("scoring pair tables needs an embedding cache: load the scorer with cache_dir=")
        pairs = with_text_keys(pairs)  # hashed once, for the first try, the missing texts and the retry
        try:
            return piece_features(self.namespace, pairs, self.view).pair_vectors(), 0
        except MissingVectors:
            if not embed_missing:
                raise
        texts = cut_texts(unique_texts(pairs), self.view).table
        missing = texts.filter(pl.col("key").is_in(self.namespace.missing(texts["key"].to_list())))
        logger.warning("embedding %d texts that %s has no vectors for", missing.height, self.namespace.root.parent)
        with self.namespace.writer():
            encode_into(self.namespace, self.encoder(), missing, 4096, progress)
        self.namespace.reload()
        self._index = None  # read again, with the new vectors, on the next lookup
        return piece_features(self.namespace, pairs, self.view).pair_vectors(), missing.height

    def score_pair_vectors(self, vectors: PairVectors, pairs: pl.DataFrame | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(r_pos, r_neg) per pair (the members' mean)."""
        positive, negative = self.member_pair_scores(vectors, pairs)
        return positive.mean(axis=0), negative.mean(axis=0)

    def member_pair_scores(self, vectors: PairVectors, pairs: pl.DataFrame | None = None, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """(r_pos, r_neg) per member and pair, each (members, pairs): the heads' scores from the
        pairs' pieces (when they carry them), blended with the blend's parts when the checkpoint has
        them: the linear part of the pooled vectors, the TF-IDF part of the pairs' texts (then
        `pairs`, the table `vectors` came from, is needed)."""
        positive, negative = self.head_pair_scores(vectors, batch_size)
        if self.blend is None:
            return positive, negative
        if pairs is None and self.blend.tfidf is not None:
            raise ScoringError(f"{self.folder} blends its heads with a TF-IDF model, which reads the texts: pass the pair table beside its vectors")
        linear = [self.blend.linear_scores(vectors.positive_context, vectors.positive_module_text, vectors.target_module),
                  self.blend.linear_scores(vectors.negative_context, vectors.negative_module_text, vectors.target_module)]  # fmt: skip
        texts = lambda side: (pairs[f"{side}_context"], pairs[f"{side}_module_text"]) if pairs is not None else ([], [])  # noqa: E731
        return (
            self.blend.rewards(positive, linear[0], *texts("positive")),
            self.blend.rewards(negative, linear[1], *texts("negative")),
        )

    @torch.no_grad()
    def head_pair_scores(self, vectors: PairVectors, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """(r_pos, r_neg) per member and pair of the heads alone, without the blend's parts."""
        if vectors.pieces is not None:
            self.model.eval()
            data = PairTensors.from_pieces(vectors.pieces, self.model, self.device)
            sides = ([], [])
            for rows in torch.arange(len(data), device=self.device).split(batch_size):
                batch = data.rows(rows)
                for k, side in enumerate(sides):
                    context, module_text = batch.pieces(batch.pair_texts[:, 2 * k]), batch.pieces(batch.pair_texts[:, 2 * k + 1])
                    side.append(member_piece_scores(self.model, context, module_text, batch.module_index).float().cpu())
            if not sides[0]:
                return np.zeros((self.members, 0), np.float32), np.zeros((self.members, 0), np.float32)
            return tuple(torch.cat(side, dim=1).numpy() for side in sides)
        return (
            self.member_scores(vectors.positive_context, vectors.positive_module_text, vectors.target_module),
            self.member_scores(vectors.negative_context, vectors.negative_module_text, vectors.target_module),
        )


def load(
    checkpoint: str | Path,
    cache_dir: str | Path | None = None,
    *,
    normalize: bool = False,
    device: str = "auto",
    encoder: str | None = None,
    memory_size: int = 20_000,
    write_cache: bool = False,
    index_memory_map_above_mb: int | str = "auto",
    allow_untrained: bool = False,
) -> RewardScorer:
    """A `RewardScorer` for the checkpoint folder. `cache_dir`: an embedding cache to read vectors
    from (it must hold the checkpoint's encoder namespace, unless `write_cache`, which creates it
    and lets `pair_vectors` embed what it lacks); `encoder`: a local folder of the checkpoint's
    encoder when the name it recorded does not load here; `memory_size`: how many recent text
    vectors to keep in memory (0: none); `index_memory_map_above_mb`: a cache namespace larger than
    this (MiB; "auto": half the memory available) is indexed through a memory map rather than read
    into RAM; `allow_untrained`: score modules whose head saw no training pairs too (refused by
    default, `UntrainedModule`)."""
    folder = Path(checkpoint)
    device = pick_device(device)
    model, record = load_heads(folder, device=device)
    try:
        record.view.check_vectors(record.encoder_fingerprint, f"the encoder {folder} records")
    except ViewMismatch as e:
        raise CheckpointError(str(e)) from None
    namespace = None
    if cache_dir is not None:
        cache = EmbeddingCache(cache_dir)
        try:
            namespace = cache.namespace(record.encoder_fingerprint, dtype=record.cache_dtype, create=write_cache)
        except NoNamespace:
            raise CacheError(
                f"{cache_dir} holds no vectors of {folder}'s encoder {record.encoder_fingerprint.get('encoder')!r}; it holds:\n"
                f"{cache.describe()}\nLeave the cache out (texts are then encoded in memory), or embed into it first with "
                f"`pipeline embed FILE... --cache {cache_dir}` and that encoder."
            ) from None
    return RewardScorer(
        model, record, folder, namespace, encoder=encoder, device=device, normalize=normalize, memory_size=memory_size,
        index_memory_map_above_mb=index_memory_map_above_mb, blend=load_blend(folder, record), allow_untrained=allow_untrained,
    )  # fmt: skip


def load_blend(folder: Path, record: CheckpointRecord) -> Blended | None:
    """The parts the checkpoint's reward blends with its heads (heads/blend.py), or None when its
    record names none. A part that cannot be read is one `CheckpointError` naming its files."""
    if not record.blend:
        return None
    try:
        blend = Blend.from_record(record.blend)
    except (KeyError, TypeError, ValueError) as e:
        raise damaged(folder / CONFIG, f"its blend is not what train-heads writes ({type(e).__name__}: {e})") from None
    parts = {}
    for name, what, files, part in (("linear", "linear", [LINEAR_WEIGHTS], LinearModel), ("tfidf", "TF-IDF", [VOCABULARY, TFIDF_WEIGHTS], TfidfModel)):
        if blend.weights[PARTS.index(name)]:
            try:
                parts[name] = part.load(folder)
            except (OSError, ValueError, KeyError, TypeError, SafetensorError) as e:
                raise CheckpointError(
                    f"{folder} blends its heads with a {what} part, but its {' and '.join(files)} could not be read "
                    f"({error_line(e)}); copy the checkpoint folder whole, or retrain it"
                ) from None
    return Blended(blend, parts.get("linear"), parts.get("tfidf"))


def checkpoint_normalization(record: CheckpointRecord, modules: Sequence[str], folder: Path) -> dict[str, tuple[float, float]]:
    """{module: (mean, std)} from a checkpoint's normalisation, for the modules it has a usable mean
    and std for (a module evaluate saw fewer than 2 responses of, with zero spread or rewards that
    were not finite has none: only rows of that module are refused, by `RewardScorer.check`);
    `CheckpointError` when it has no normalisation at all."""
    stored = record.normalization
    if not stored:
        raise CheckpointError(
            f"{folder} has no reward normalisation (per-module mean and std). Run "
            f"`pipeline evaluate {folder} VAL.jsonl --cache CACHE --out REPORT` on its validation data, which stores it, "
            "or score without normalisation."
        )
    usable = lambda m: isinstance(stored.get(m), dict) and None not in (stored[m].get("mean"), stored[m].get("std")) and stored[m]["std"] > 0  # noqa: E731
    return {m: (float(stored[m]["mean"]), float(stored[m]["std"])) for m in modules if usable(m)}


def module_pair_counts(record: CheckpointRecord, modules: Sequence[str]) -> dict[str, dict[str, int]] | None:
    """{module: {"train": n, "val": n}}: how many training and validation pairs each module's head
    saw, as train-heads and finetune record it (`module_pairs`); None for a checkpoint from before."""
    recorded = record.module_pairs
    if recorded is None:
        return None
    return {m: {"train": int(recorded.get(m, {}).get("train", 0)), "val": int(recorded.get(m, {}).get("val", 0))} for m in modules}


def sigmoid(rewards: np.ndarray) -> np.ndarray:
    """Rewards squashed into (0, 1): what OpenRLHF reads as `scores`."""
    return expit(np.asarray(rewards, np.float64)).astype(np.float32)


class VectorMemory:
    """The vectors of the `size` most recently used texts (an LRU keyed by text key)."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> np.ndarray | None:
        vector = self._items.get(key)
        if vector is not None:
            self._items.move_to_end(key)
        return vector

    def put(self, key: str, vector: np.ndarray) -> None:
        if self.size <= 0:
            return
        self._items[key] = vector
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)
