"""The reward API: a trained checkpoint behind `score(contexts, module_texts, modules)`, for RL
frameworks, the `pipeline score` / `pipeline serve` / `pipeline evaluate` verbs and your own scripts.

    from pipeline.rewards import load
    scorer = load("ckpt/")                                        # heads + the checkpoint's encoder
    scorer = load("ckpt/", cache_dir="embeddings/", normalize=True)   # also read cached vectors; normalised rewards
    rewards = scorer.score(contexts, module_texts, modules)       # float32 numpy array, one reward per row
    scorer.score_trajectory(context, {"planner": plan, "executor": actions})   # {"planner": 0.41, "executor": -1.2}
    scored = scorer.rewards(contexts, module_texts, modules)      # all of it from one pass of the heads:
    scored.rewards, scored.uncertainty    # float32 arrays (normalised when the scorer is), .raw and .raw_uncertainty never
    scored.parts["tfidf"]                 # each part of a blended reward alone (raw): "heads", "linear", "tfidf"
    scored.round_rewards[i]               # rounds view: the reward of row i split over its module text's pieces
    scorer.rewards(contexts, module_texts, modules, round_rewards=True)   # ScoringError unless of the rounds view
    scorer.score_vectors(context_vectors, module_vectors, modules, contexts, module_texts)   # a `Rewards` of cached vectors

    from data.trajectory import module_texts_from_trajectory     # module texts cut out of a tagged trajectory

The reward is the checkpoint's `heads.reward_model.RewardModel` (its members, blend and view): this
module adds where its vectors come from, normalisation and the refusal of rows it cannot score.
Pair tables for evaluation are scored by pipeline/evaluate_scoring.py.

A checkpoint reads texts through the view it was trained with (features/views.py, recorded in its
config.json): a text's vector is its pieces' vectors pooled by the
heads, and each piece is looked up like any text. **Per-round rewards** (checkpoints of the `rounds`
view): `rewards(...).round_rewards` holds, beside each row's reward, its share per piece of the module text,
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
reward is their mean, and `rewards` also returns their spread, the population standard deviation
(ddof 0) of the members' rewards, one per row, in the same units as the rewards (divided by the
module's std when normalised). A single-model checkpoint is an ensemble of one: its uncertainty is
0. `score` returns the rewards alone, as it always did; `scorer.members` says how many members
there are.
"""

from __future__ import annotations

import tempfile
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.special import expit

from cache import CacheError, EmbeddingCache, Namespace, NoNamespace, VectorIndex, memory_map_above
from features.encoder import ROLES, TextEncoder, pick_device
from features.pairs import text_key
from heads.blend import Blended
from heads.checkpoint import CheckpointRecord
from heads.model import CheckpointError
from heads.reward_model import RewardModel, RewardOutput, ScoringError
from heads.training import RowTensors
from pipeline.checkpoint import load_checkpoint_encoder
from pipeline.config import ServeConfig


class UntrainedModule(ScoringError):
    """A row names a module whose head saw no training pairs (or, normalised, a module the
    checkpoint has no mean/std for): its score would be a number that means nothing."""

    def __init__(self, message: str, row: int, module: str):
        super().__init__(message)
        self.row, self.module = row, module

MEMORY_SIZE = ServeConfig.model_fields["memory_size"].default  # the serve section's default, declared once there


@dataclass
class Rewards:
    """What `RewardScorer.rewards` returns, one entry per row; a slice of rows is a `Rewards` too
    (the server's micro-batcher hands each request its slice)."""

    rewards: np.ndarray  # normalised when the scorer is
    raw: np.ndarray
    uncertainty: np.ndarray  # the members' std (0 for a single model), in the units of `rewards`
    raw_uncertainty: np.ndarray
    round_rewards: list[np.ndarray] | None  # rounds view only: each row's reward split over its rounds
    parts: dict[str, np.ndarray] = field(default_factory=dict)  # each part of the reward alone, raw (heads.reward_model.RewardOutput)

    def __len__(self) -> int:
        return len(self.rewards)

    def __getitem__(self, rows: slice) -> "Rewards":
        shares = None if self.round_rewards is None else self.round_rewards[rows]
        parts = {name: scores[rows] for name, scores in self.parts.items()}
        return Rewards(self.rewards[rows], self.raw[rows], self.uncertainty[rows], self.raw_uncertainty[rows], shares, parts)

    @classmethod
    def concatenate(cls, batches: Sequence["Rewards"]) -> "Rewards":
        """The rows of `batches`, in order, as one `Rewards`."""
        shares = None if batches[0].round_rewards is None else [s for batch in batches for s in batch.round_rewards]
        columns = [np.concatenate([getattr(batch, name) for batch in batches]) for name in ("rewards", "raw", "uncertainty", "raw_uncertainty")]
        parts = {name: np.concatenate([batch.parts[name] for batch in batches]) for name in batches[0].parts}
        return cls(*columns, shares, parts)


class RewardScorer:
    """A checkpoint's reward model (heads/reward_model.py), the cache of its encoder's vectors
    (optional) and the encoder itself."""

    def __init__(
        self,
        model: RewardModel,
        record: CheckpointRecord,
        folder: Path,
        namespace: Namespace | None = None,
        *,
        encoder: str | None = None,
        device: str = "cpu",
        normalize: bool = False,
        memory_size: int = MEMORY_SIZE,
        index_memory_map_above_mb: int | str = "auto",
        allow_untrained: bool = False,
    ):
        self.model = model
        self.record = record
        self.folder = Path(folder)
        self.namespace = namespace
        self.device = device
        self.modules = model.modules
        self.normalize = normalize
        self.normalization = checkpoint_normalization(record, self.modules, self.folder) if normalize else None
        # {module: {"train": n, "val": n}} as training recorded it; None for checkpoints from before the record
        self.module_pairs = module_pair_counts(record, self.modules)
        self.allow_untrained = allow_untrained
        self.view = model.view
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
        return self.model.size

    @property
    def blend(self) -> Blended | None:
        """The linear and TF-IDF parts blended with the heads, when the checkpoint has them."""
        return self.model.blended

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
        return self.rewards(contexts, module_texts, modules).rewards

    def rewards(self, contexts: Sequence[str], module_texts: Sequence[str], modules: Sequence[str], *, round_rewards: bool = False) -> Rewards:
        """Everything the scorer says about each row, from one pass of the heads: the reward
        (normalised when the scorer is), the raw reward, the members' spread, each part of a
        blended reward alone and, for a checkpoint of the rounds view, the reward's share per
        piece of the module text (`round_rewards=True`: `ScoringError` for a checkpoint of another
        view, instead of None)."""
        if round_rewards and not self.view.attention:
            raise ScoringError(f"per-round rewards need a checkpoint of the rounds view; {self.folder} reads texts with view {self.view.name!r}")
        contexts, module_texts, modules = list(contexts), list(module_texts), list(modules)
        self._check(contexts, module_texts, modules)
        with self._lock:
            self.calls += 1
            self.rows += len(modules)
            rows = self._rows(contexts, module_texts, modules)
            scored = self.model.score(rows, contexts, module_texts, batch_size=None)
        return self._rewards(scored, modules)

    def score_trajectory(self, context: str, module_texts: Mapping[str, str]) -> dict[str, float]:
        """Every given module's reward for one trajectory, in one call: `{module: reward}`."""
        modules = list(module_texts)
        rewards = self.score([context] * len(modules), [module_texts[m] for m in modules], modules)
        return {m: float(r) for m, r in zip(modules, rewards)}

    def score_vectors(
        self,
        context: np.ndarray,
        module_text: np.ndarray,
        modules: Sequence[str],
        contexts: Sequence[str] | None = None,
        module_texts: Sequence[str] | None = None,
        batch_size: int = 4096,
    ) -> Rewards:
        """`rewards` of rows given as vectors (context, module_text: (rows, d) float32, each text's
        vector, pooled by its pieces' mean under a view that cuts texts), the reward the checkpoint
        blends; a blend with a TF-IDF part reads the texts too (`contexts`, `module_texts`).
        Checkpoints of the rounds view read pieces, not one vector per text: score their texts."""
        modules = list(modules)
        if self.view.attention:
            raise ScoringError(f"{self.folder} reads texts with the rounds view, whose heads pool each text's pieces: score its texts with `rewards`, not one vector per text")
        if not len(context) == len(module_text) == len(modules):
            raise ScoringError(f"context, module_text and modules must be equally long, got {len(context)}, {len(module_text)}, {len(modules)}")
        self._check_modules(modules)
        vectors = np.concatenate([np.asarray(context, np.float32), np.asarray(module_text, np.float32)])
        rows = RowTensors.from_pieces(torch.from_numpy(vectors), [1] * (2 * len(modules)), self.model.module_index(modules)).to(self.device)
        texts = (list(contexts), list(module_texts)) if contexts is not None and module_texts is not None else (None, None)
        return self._rewards(self.model.score(rows, *texts, pooled=(context, module_text), batch_size=batch_size, round_weights=False), modules)

    def _rewards(self, scored: RewardOutput, modules: list[str]) -> Rewards:
        raw, spread = scored.reward, scored.uncertainty
        rewards, uncertainty = raw, spread
        if self.normalize:
            rewards, uncertainty = normalized(raw, modules, self.normalization), normalized_uncertainty(spread, modules, self.normalization)
        return Rewards(rewards, raw, uncertainty, spread, scored.round_rewards(rewards), scored.parts)

    def _rows(self, contexts: list[str], module_texts: list[str], modules: list[str]) -> RowTensors:
        """The rows as the heads read them: every text cut into the view's pieces, each piece's
        vector looked up (`vectors`)."""
        n = len(modules)
        texts, roles = contexts + module_texts, ["context"] * n + ["module"] * n
        cut = [self.view.pieces(text, role) for text, role in zip(texts, roles)]
        flat = [piece for pieces in cut for piece in pieces]
        vectors = self.vectors(flat, [role for role, pieces in zip(roles, cut) for _ in pieces]) if flat else np.zeros((0, self.model.heads.dimension), np.float32)
        return RowTensors.from_pieces(torch.from_numpy(vectors), [len(pieces) for pieces in cut], self.model.module_index(modules)).to(self.device)

    def _check(self, contexts: list, module_texts: list, modules: list) -> None:
        """Raise `ScoringError` unless the three are equally long, texts are strings and every
        module has a head this scorer answers for."""
        if not len(contexts) == len(module_texts) == len(modules):
            raise ScoringError(f"contexts, module_texts and modules must be equally long, got {len(contexts)}, {len(module_texts)}, {len(modules)}")
        for name, values in (("contexts", contexts), ("module_texts", module_texts), ("modules", modules)):
            wrong = next((i for i, v in enumerate(values) if not isinstance(v, str)), None)
            if wrong is not None:
                raise ScoringError(f"{name}[{wrong}] must be a string, got {type(values[wrong]).__name__}")
        self._check_modules(modules)

    def _check_modules(self, modules: list[str]) -> None:
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

    def reread_cache(self) -> None:
        """Read the cache namespace again after vectors were written into it
        (`pipeline.evaluate_scoring.cached_pair_vectors`): its index is read anew on the next lookup."""
        self.namespace.reload()
        self._index = None


def load(
    checkpoint: str | Path,
    cache_dir: str | Path | None = None,
    *,
    normalize: bool = False,
    device: str = "auto",
    encoder: str | None = None,
    memory_size: int = MEMORY_SIZE,
    write_cache: bool = False,
    index_memory_map_above_mb: int | str = "auto",
    allow_untrained: bool = False,
) -> RewardScorer:
    """A `RewardScorer` for the checkpoint folder. `cache_dir`: an embedding cache to read vectors
    from (it must hold the checkpoint's encoder namespace, unless `write_cache`, which creates it
    and lets `pipeline.evaluate_scoring.cached_pair_vectors` embed what it lacks); `encoder`: a
    local folder of the checkpoint's encoder when the name it recorded does not load here;
    `memory_size`: how many recent text vectors to keep in memory (0: none);
    `index_memory_map_above_mb`: a cache namespace larger than this (MiB; "auto": half the memory
    available) is indexed through a memory map rather than read into RAM; `allow_untrained`: score
    modules whose head saw no training pairs too (refused by default, `UntrainedModule`)."""
    folder = Path(checkpoint)
    device = pick_device(device)
    model, record = RewardModel.load(folder, device)
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
        index_memory_map_above_mb=index_memory_map_above_mb, allow_untrained=allow_untrained,
    )  # fmt: skip


def normalized(rewards: np.ndarray, modules: Sequence[str], normalization: dict[str, tuple[float, float]]) -> np.ndarray:
    """(r - mean) / std per row, with the mean and std (`checkpoint_normalization`) of the row's module."""
    mean = np.array([normalization[m][0] for m in modules], np.float32)
    std = np.array([normalization[m][1] for m in modules], np.float32)
    return ((np.asarray(rewards, np.float32) - mean) / std).astype(np.float32)


def normalized_uncertainty(uncertainty: np.ndarray, modules: Sequence[str], normalization: dict[str, tuple[float, float]]) -> np.ndarray:
    """The uncertainty in normalised units: divided by the std of the row's module."""
    return (np.asarray(uncertainty, np.float32) / np.array([normalization[m][1] for m in modules], np.float32)).astype(np.float32)


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
