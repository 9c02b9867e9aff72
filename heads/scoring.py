"""Rewards from a trained checkpoint, for RL frameworks, the `pipeline score` / `pipeline serve`
verbs and your own scripts.

    from heads.scoring import load, module_texts_from_trajectory
    scorer = load("ckpt/")                                        # heads + the checkpoint's encoder
    scorer = load("ckpt/", cache_dir="cache/", normalize=True)    # also read cached vectors; normalised rewards
    rewards = scorer.score(contexts, module_texts, modules)       # float32 numpy array, one reward per row
    scorer.score_trajectory(context, {"planner": plan, "executor": actions})   # {"planner": 0.41, "executor": -1.2}
    module_texts_from_trajectory(tagged_text)                     # {"planner": "[Round 1]\\n<plan>...</plan>", ...}

A text's vector comes from, in this order: an in-memory LRU of the vectors of recent texts
(`memory_size` of them), the embedding cache given as `cache_dir` (read only: scoring never writes
to it), and the checkpoint's own encoder (`<checkpoint>/encoder/` after stage 1, else the one its
fingerprint names). Within one call every distinct text is encoded at most once, so a trajectory's
context shared by all its modules costs one encoder pass. Calls run under no_grad and are
serialised by a lock, so one scorer can be shared by threads.

Normalised rewards are (r - mean) / std with the per-module mean and std that `pipeline evaluate`
stores in the checkpoint's config.json when run on its validation data.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from cache import CacheError, EmbeddingCache, MissingVectors, Namespace, text_key
from features.encoder import ROLES
from heads.scorer import RewardScorer


class ScoringError(ValueError):
    """A request the scorer cannot answer: unknown module, texts that are not strings, rows of
    unequal length, normalisation asked of a checkpoint without it."""


class Scorer:
    """A checkpoint's heads and encoder behind `score(contexts, module_texts, modules)`."""

    def __init__(self, heads: RewardScorer, namespace: Namespace | None = None, normalize: bool = False, memory_size: int = 20_000):
        self.heads = heads
        self.namespace = namespace
        self.modules = list(heads.modules)
        self.normalize = normalize
        self.normalization = checkpoint_normalization(heads.config, self.modules, heads.folder) if normalize else None
        self.memory = VectorMemory(memory_size)
        self._lock = threading.Lock()
        # what the scorer has done so far, for logs, /health and tests
        self.calls = 0
        self.rows = 0
        self.encoded = 0  # texts run through the encoder
        self.from_cache = 0  # texts read from the embedding cache

    @property
    def folder(self) -> Path:
        return self.heads.folder

    def warm_up(self) -> None:
        """Load the encoder now (servers do, so the first request is not the slow one)."""
        self.heads.encoder()

    def score(self, contexts: Sequence[str], module_texts: Sequence[str], modules: Sequence[str]) -> np.ndarray:
        """One reward per row: `module_texts[i]` scored by the head of `modules[i]` in `contexts[i]`;
        normalised when the scorer was loaded with `normalize=True`."""
        rewards = self.raw(contexts, module_texts, modules)
        return self.normalized(rewards, modules) if self.normalize else rewards

    def raw(self, contexts: Sequence[str], module_texts: Sequence[str], modules: Sequence[str]) -> np.ndarray:
        """The heads' rewards, never normalised."""
        contexts, module_texts, modules = list(contexts), list(module_texts), list(modules)
        self.check(contexts, module_texts, modules)
        with self._lock:
            self.calls += 1
            self.rows += len(modules)
            if not modules:
                return np.zeros(0, np.float32)
            n = len(modules)
            vectors = self.vectors(contexts + module_texts, ["context"] * n + ["module"] * n)
            return self.heads.score_vectors(vectors[:n], vectors[n:], modules)

    def normalized(self, rewards: np.ndarray, modules: Sequence[str]) -> np.ndarray:
        """(r - mean) / std per row, with the mean and std of the row's module."""
        normalization = self.normalization or checkpoint_normalization(self.heads.config, self.modules, self.folder)
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
                vectors, _ = self.heads.encoder().encode([wanted[key][1] for key in encode], role)
                self.encoded += len(encode)
                found.update(zip(encode, vectors))
        for key in wanted:
            self.memory.put(key, found[key])
        return np.stack([found[key] for key in keys])

    def _read_cache(self, keys: list[str]) -> dict[str, np.ndarray]:
        try:
            return dict(zip(keys, self.namespace.fetch(keys)))
        except MissingVectors as e:
            absent = set(e.missing)
        present = [key for key in keys if key not in absent]
        return dict(zip(present, self.namespace.fetch(present))) if present else {}


def load(
    checkpoint: str | Path,
    cache_dir: str | Path | None = None,
    *,
    normalize: bool = False,
    device: str = "auto",
    encoder: str | None = None,
    memory_size: int = 20_000,
) -> Scorer:
    """A `Scorer` for the checkpoint folder. `cache_dir`: an embedding cache to read vectors from
    (it must hold the checkpoint's encoder namespace); `encoder`: a local folder of the checkpoint's
    encoder when the name it recorded does not load here; `memory_size`: how many recent text
    vectors to keep in memory (0: none)."""
    from features.encoder import pick_device
    from heads.model import MultiModuleRewardModel

    folder = Path(checkpoint)
    device = pick_device(device)
    try:
        model, config = MultiModuleRewardModel.load(folder, device=device)
    except FileNotFoundError as e:
        raise ScoringError(str(e)) from None
    namespace = None
    if cache_dir is not None:
        try:
            namespace = EmbeddingCache(cache_dir).namespace(config["encoder_fingerprint"], dtype=config.get("cache_dtype", "float32"))
        except CacheError:
            raise ScoringError(
                f"{cache_dir} holds no vectors of {folder}'s encoder; leave the cache out (texts are then encoded in memory) "
                f"or embed into it first with `pipeline embed FILE... --cache {cache_dir}` and that encoder"
            ) from None
    return Scorer(RewardScorer(model, config, namespace, folder, encoder, device), namespace, normalize, memory_size)


def checkpoint_normalization(config: dict, modules: Sequence[str], folder: Path) -> dict[str, tuple[float, float]]:
    """{module: (mean, std)} from a checkpoint's config.json; `ScoringError` when it has none."""
    stored = config.get("normalization")
    if not stored:
        raise ScoringError(
            f"{folder} has no reward normalisation (per-module mean and std). Run "
            f"`pipeline evaluate {folder} VAL.jsonl --cache CACHE --out REPORT` on its validation data, which stores it, "
            "or score without normalisation."
        )
    lacking = [m for m in modules if not isinstance(stored.get(m), dict) or not stored[m].get("std", 0) > 0]
    if lacking:
        raise ScoringError(
            f"{folder}'s normalisation has no usable mean/std for module(s) {', '.join(lacking)} (fewer than 2 responses, or zero spread); "
            f"rerun `pipeline evaluate {folder} ... --store-normalization` on data that holds them, or score without normalisation."
        )
    return {m: (float(stored[m]["mean"]), float(stored[m]["std"])) for m in modules}


def sigmoid(rewards: np.ndarray) -> np.ndarray:
    """Rewards squashed into (0, 1): what OpenRLHF reads as `scores`."""
    return (1.0 / (1.0 + np.exp(-np.asarray(rewards, np.float64)))).astype(np.float32)


class VectorMemory:
    """The vectors of the `size` most recently used texts (an LRU keyed by cache key)."""

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


# --- module texts from a tagged trajectory -----------------------------------------------------

_ROUND_HEADER = re.compile(r"^\[Round (\d+)\][ \t]*$", re.MULTILINE)


def module_texts_from_trajectory(trajectory: str, module_fields: Mapping[str, Sequence[str]] | None = None) -> dict[str, str]:
    """Each module's text (`module_k_all_rounds`) in a trajectory written in the tagged style of the
    pair format: `[Round N]` headers, then sections such as `<plan>...</plan>` or `<tool results>...</tool results>`.
    A module's text is its own sections (`module_fields`, default `data.trajectory.DEFAULT_MODULE_FIELDS`),
    under the header of each round it wrote in, as `pipeline pairs` writes it. Modules with no
    section are left out; text before the first header (the task line) is not part of any module;
    a trajectory without headers is read as round 1."""
    from data.trajectory import DEFAULT_MODULE_FIELDS, ROUND_TAGS

    module_fields = DEFAULT_MODULE_FIELDS if module_fields is None else module_fields
    headers = list(_ROUND_HEADER.finditer(trajectory))
    if headers:
        rounds = [(h.group(1), trajectory[h.end() : nxt.start() if nxt else len(trajectory)]) for h, nxt in zip(headers, headers[1:] + [None])]
    else:
        rounds = [("1", trajectory)]
    separator = "\n\n" if "\n\n[Round " in trajectory else "\n"  # the synthetic data leaves a blank line between rounds
    texts = {}
    for module, fields in module_fields.items():
        tags = "|".join(re.escape(ROUND_TAGS[f]) for f in fields if f in ROUND_TAGS)
        if not tags:
            continue
        section = re.compile(f"<({tags})>(.*?)</\\1>", re.DOTALL)
        parts = []
        for number, body in rounds:
            sections = [m.group(0) for m in section.finditer(body) if m.group(2).strip()]
            if sections:
                parts.append(f"[Round {number}]\n" + "\n".join(sections))
        if parts:
            texts[module] = separator.join(parts)
    return texts
