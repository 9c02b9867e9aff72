"""The reward as a blend of three parts trained on the same pairs: the heads, a linear part on the
heads' own features and a TF-IDF part on the words, at weights chosen on held-out pairs.

The MLP heads are built for thousands of pairs: on a few hundred they overfit where a linear model
on the same features does not (AutoGPT's unseen tasks: docs/results/real-runs.md). Frozen
sentence vectors also lose lexical detail that decides many real pairs (which command ran, which
error came back), which a TF-IDF logistic regression keeps; the three err on different pairs. So a
checkpoint's reward is

    reward = w_heads * z(heads) + w_linear * z(linear) + w_tfidf * z(tfidf),   z(s) = (s - mean) / std

each part standardised by its own scores on the training pairs, the weights a point of the simplex
grid of step 0.1 (66 points, summing to 1): the one of highest pairwise accuracy (a tied pair counts
wrong) on held-out pairs. Held out are the validation pairs and, when the training split is small
(at most `MAX_PAIRS`, where a validation split is small too), every training pair scored
by parts trained without its task (K folds by task: "out of fold"), so that a handful of
validation pairs does not decide the weights alone. Ties prefer more weight on the heads, then on
the linear part. Weights (1, 0, 0) keep the heads alone. The TF-IDF part is tried twice, on the
context and module text as evaluate's baseline is, and with the context's last round beside them
(`TfidfModel`); the second is kept only when its best blend is clearly better on the held-out
pairs (z > Z_CLEAR over per-task differences), not by a pair or two. The parts are fitted on at most
`MAX_PAIRS` training pairs (a seeded sample above it), which bounds their time and memory
at a million pairs, where the heads have the data they are built for.

    tfidf = TfidfModel.fit(train_pairs); tfidf.score_texts(contexts, module_texts)    # also evaluate's baseline
    tfidf = TfidfModel.fit(train_pairs, blocks=ENDED_BLOCKS)                          # + the context's last round
    linear = LinearModel.fit(train_vectors, modules); linear.score_vectors(context_vectors, module_vectors, modules)
    blended, summary = fit_blend(heads, blend_sample(train), blend_sample(val), train_tensors, val_tensors, modules, fit_fold, rule="shrink")   # or None: heads alone
    blended.blend(head_scores, blended.linear_scores(ctx, mod, modules), blended.tfidf.score_texts(contexts, module_texts))   # the reward
    blended.save(folder); Blended.load(folder, record.blend)
    describe_reward(record)     # the checkpoint's reward in words: "reward = 0.5 × linear + 0.5 × TF-IDF; the heads weigh 0: ..."
"""

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from features.pairs import PairVectors
from heads.metrics import pairwise_accuracy
from heads.model import CONFIG, CheckpointError, damaged, error_line, masked_mean
from heads.training import PairTensors, pair_scores

if TYPE_CHECKING:
    from heads.checkpoint import CheckpointRecord

PARTS = ("heads", "linear", "tfidf")
VOCABULARY = "lexical.json"  # the TF-IDF part's files
TFIDF_WEIGHTS = "lexical.safetensors"
LINEAR_WEIGHTS = "linear.safetensors"
GRID = tuple((a / 10, b / 10, round(1 - a / 10 - b / 10, 1)) for a in range(10, -1, -1) for b in range(10 - a, -1, -1))  # heads-heavy first
MAX_PAIRS = 20_000
FOLDS = 5
# How the weights are chosen on the held-out pairs (`rule_weights`): the grid point of highest
# accuracy; that point shrunk toward equal weights (the default, model.blend_rule: chosen by
# bench/blend_regret.py, docs/results/blend-regret.md); equal weights; a stacked logistic
# regression; the single best part.
RULES = ("argmax", "shrink", "equal", "stack", "best_part")
SHRINK_TASKS = 100  # `shrink`: equal weights count as this many held-out tasks of evidence
# `shrink`: below this many training pairs the equal weights it moves toward leave the heads out.
# On InterCode's learning curve (bench/learning_curve.py, docs/results/learning-curve.md) the heads
# added nothing to the reward up to 4,000 training pairs and something from 8,000 on.
HEADS_PAY_OFF = 8_000
STACK_C = 0.1  # `stack`: the logistic regression's inverse L2 strength on standardised score differences
_VECTORIZER = {"sublinear_tf": True, "ngram_range": (1, 2), "min_df": 2, "max_features": 50_000}


ROUND_LINE = re.compile(r"^\[Round \d+\]\n", re.MULTILINE)
TFIDF_BLOCKS = ("context", "module_text")  # a plain TF-IDF, evaluate's baseline
ENDED_BLOCKS = TFIDF_BLOCKS + ("context_end",)  # and how the episode ended
TFIDF_CHOICES = (TFIDF_BLOCKS, ENDED_BLOCKS)  # the blend's part: the ended one when clearly better on held-out pairs
Z_CLEAR = 1.96  # "clearly": two-sided 5% on per-task differences


def episode_end(text: str) -> str:
    """What follows a text's last `[Round i]` line (the whole text when it has none): how the
    episode ended, without its round number, which would only repeat its length."""
    last = None
    for last in ROUND_LINE.finditer(text):
        pass
    return text[last.end() :] if last is not None else text


def _block_texts(block: str, contexts, module_texts) -> list[str]:
    if block == "context":
        return list(contexts)
    if block == "module_text":
        return list(module_texts)
    return [episode_end(text) for text in contexts]  # context_end


class TfidfModel:
    """Logistic regression on TF-IDF features of text blocks, fitted on pair differences. The
    blocks: the context and the module text (a plain TF-IDF, evaluate's baseline), and, when it is
    clearly better on held-out pairs (`fit_blend`), for the blend's part also `context_end`, the
    context's last round, where an episode shows how it ended: a TF-IDF of the whole text does not
    know where a word stood ("Error" in round 1 or in the round the episode stopped on). It helped
    on InterCode and not on AutoGPT's few pairs, so it is a choice (docs/results/real-runs.md).

    One model for all modules: a module indicator would cancel in phi(pos) - phi(neg), and the
    shared model ranked better than one per module or both blocks side by side. C=10: the rows are
    unit-length TF-IDF vectors and C=1 underfits them (docs/results/demo-and-synthetic.md).
    """

    def __init__(self, vectorizers: dict[str, TfidfVectorizer], weights: np.ndarray):
        self.vectorizers = vectorizers  # block -> its vectorizer, in column order
        self.weights = weights

    @property
    def blocks(self) -> tuple[str, ...]:
        return tuple(self.vectorizers)

    @classmethod
    def fit(cls, pairs: pl.DataFrame, C: float = 10.0, seed: int = 0, blocks: Sequence[str] = TFIDF_BLOCKS) -> "TfidfModel":
        return cls.fit_scored(pairs, C, seed, blocks)[0]

    @classmethod
    def fit_scored(cls, pairs: pl.DataFrame, C: float = 10.0, seed: int = 0, blocks: Sequence[str] = TFIDF_BLOCKS) -> tuple["TfidfModel", tuple[np.ndarray, np.ndarray]]:
        """The fitted model and its scores of the training pairs' two sides."""
        return cls.fit_each(pairs, [tuple(blocks)], C, seed)[tuple(blocks)]

    @classmethod
    def fit_each(cls, pairs: pl.DataFrame, block_sets: Sequence[tuple[str, ...]], C: float = 10.0, seed: int = 0) -> dict[tuple[str, ...], tuple["TfidfModel", tuple[np.ndarray, np.ndarray]]]:
        """A model per set of blocks, with its scores of the training pairs' two sides. Each block's
        training texts are tokenised once for all the sets (tokenising is most of TF-IDF's time): the
        vectorizers' fit_transform gives the features the regressions are fitted on and the training
        scores are read from."""
        n = pairs.height
        contexts = pl.concat([pairs["positive_context"], pairs["negative_context"]]).to_list()
        module_texts = pl.concat([pairs["positive_module_text"], pairs["negative_module_text"]]).to_list()
        vectorizers, features = {}, {}  # rows: the positive sides, then the negative sides
        for block in dict.fromkeys(block for blocks in block_sets for block in blocks):
            vectorizers[block] = TfidfVectorizer(**_VECTORIZER)
            features[block] = vectorizers[block].fit_transform(_block_texts(block, contexts, module_texts))
        fitted = {}
        for blocks in block_sets:
            x = sp.hstack([features[block] for block in blocks]).tocsr()
            difference = x[:n] - x[n:]
            y = np.concatenate([np.ones(n), np.zeros(n)])
            weights = LogisticRegression(C=C, fit_intercept=False, max_iter=2000, random_state=seed).fit(sp.vstack([difference, -difference]).tocsr(), y).coef_[0]
            scores = x @ weights
            fitted[blocks] = cls({block: vectorizers[block] for block in blocks}, weights), (scores[:n], scores[n:])
        return fitted

    def _features(self, contexts, module_texts) -> sp.csr_matrix:
        return sp.hstack([v.transform(_block_texts(block, contexts, module_texts)) for block, v in self.vectorizers.items()]).tocsr()

    def score_texts(self, contexts, module_texts) -> np.ndarray:
        """w . phi per row (float64)."""
        if not len(contexts):
            return np.zeros(0)
        return self._features(contexts, module_texts) @ self.weights

    def scores(self, pairs: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """w . phi per side of each pair."""
        return (
            self.score_texts(pairs["positive_context"], pairs["positive_module_text"]),
            self.score_texts(pairs["negative_context"], pairs["negative_module_text"]),
        )

    def save(self, folder) -> None:
        """`lexical.json` (the blocks, and each block's terms in column order) and
        `lexical.safetensors` (their idf and the weights): plain files, no pickles."""
        vocabulary = {block: sorted(v.vocabulary_, key=v.vocabulary_.get) for block, v in self.vectorizers.items()}
        settings = {**_VECTORIZER, "ngram_range": list(_VECTORIZER["ngram_range"])}
        (folder / VOCABULARY).write_text(json.dumps({"vectorizer": settings, "blocks": list(self.blocks), **vocabulary}, ensure_ascii=False), encoding="utf-8")
        idf = {f"{block}_idf": v.idf_ for block, v in self.vectorizers.items()}
        save_file({**idf, "weights": np.asarray(self.weights, np.float64)}, str(folder / TFIDF_WEIGHTS))

    @classmethod
    def load(cls, folder) -> "TfidfModel":
        """A checkpoint's part; one saved before `blocks` were recorded has the plain two."""
        saved = json.loads((folder / VOCABULARY).read_text(encoding="utf-8"))
        tensors = load_file(str(folder / TFIDF_WEIGHTS))
        settings = {**saved["vectorizer"], "ngram_range": tuple(saved["vectorizer"]["ngram_range"])}
        vectorizers = {}
        for block in saved.get("blocks", TFIDF_BLOCKS):
            if block not in ENDED_BLOCKS:
                raise ValueError(f"unknown TF-IDF block {block!r}")
            v = vectorizers[block] = TfidfVectorizer(**settings)
            v.vocabulary_ = {term: i for i, term in enumerate(saved[block])}
            v.idf_ = tensors[f"{block}_idf"]
        return cls(vectorizers, tensors["weights"])


def linear_features(context: np.ndarray, module_text: np.ndarray) -> np.ndarray:
    """The heads' own input, concat(e_ctx, e_mod, e_ctx * e_mod), of mean-pooled text vectors."""
    return np.concatenate([context, module_text, context * module_text], axis=1, dtype=np.float32)


class LinearModel:
    """A logistic regression per module on `linear_features`, fitted on pair differences in both
    orders without intercept, so its score w . phi ranks single responses: a linear head, fitted to
    convergence (scikit-learn, L2 with C=1) where a linear head trained by SGD for a few epochs is not."""

    def __init__(self, weights: dict[str, np.ndarray]):
        self.weights = weights  # per module, over the 3d features

    @classmethod
    def fit(cls, vectors: PairVectors, modules: Sequence[str], C: float = 1.0, seed: int = 0) -> "LinearModel":
        weights = {}
        for module in modules:
            rows = vectors.target_module == module
            if not rows.any():
                continue
            difference = linear_features(vectors.positive_context[rows], vectors.positive_module_text[rows]) - linear_features(
                vectors.negative_context[rows], vectors.negative_module_text[rows]
            )
            x = np.concatenate([difference, -difference])
            y = np.concatenate([np.ones(len(difference)), np.zeros(len(difference))])
            model = LogisticRegression(C=C, fit_intercept=False, max_iter=2000, random_state=seed).fit(x, y)
            weights[module] = model.coef_[0].astype(np.float32)
        return cls(weights)

    def score_vectors(self, context: np.ndarray, module_text: np.ndarray, modules, unfitted: float = np.nan) -> np.ndarray:
        """w . phi per row (float64); `unfitted` (NaN: no score) for rows of a module it was never
        fitted on."""
        modules = np.asarray(modules)
        scores = np.full(len(modules), unfitted)
        for module, w in self.weights.items():
            rows = modules == module
            if rows.any():
                scores[rows] = linear_features(np.asarray(context)[rows], np.asarray(module_text)[rows]) @ w
        return scores

    def scores(self, vectors: PairVectors) -> tuple[np.ndarray, np.ndarray]:
        """w . phi per side of each pair."""
        return (
            self.score_vectors(vectors.positive_context, vectors.positive_module_text, vectors.target_module),
            self.score_vectors(vectors.negative_context, vectors.negative_module_text, vectors.target_module),
        )

    def save(self, folder) -> None:
        save_file({module: w for module, w in self.weights.items()}, str(folder / LINEAR_WEIGHTS))

    @classmethod
    def load(cls, folder) -> "LinearModel":
        return cls(dict(load_file(str(folder / LINEAR_WEIGHTS))))


@dataclass(frozen=True)
class Blend:
    """How the parts' scores become one reward (the formula above): a weight, mean and std per part
    (in the order of PARTS)."""

    weights: tuple[float, float, float]
    means: tuple[float, float, float] = (0.0, 0.0, 0.0)
    stds: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __call__(self, heads: np.ndarray, linear: np.ndarray | None = None, tfidf: np.ndarray | None = None) -> np.ndarray:
        """The reward, shaped like `heads` (rows, or members x rows: every member's score blended
        with the same linear and TF-IDF scores, so the members' spread scales by w_heads / std).
        A part of weight 0 may be None. A NaN score stays NaN: a damaged vector must not pass for
        a reward."""
        reward = np.zeros(np.shape(heads), np.float64)
        for scores, weight, mean, std in zip((heads, linear, tfidf), self.weights, self.means, self.stds):
            if weight:
                reward += weight * (np.asarray(scores, np.float64) - mean) / std
        return reward.astype(np.float32)

    def record(self) -> dict:
        return {name: {"weight": w, "mean": m, "std": s} for name, w, m, s in zip(PARTS, self.weights, self.means, self.stds)}

    @classmethod
    def from_record(cls, record: dict) -> "Blend":
        """From `record()` (heads/checkpoint.py migrates the `lexical` record of older checkpoints to it)."""
        parts = [record[name] for name in PARTS]
        return cls(*(tuple(float(part[field]) for part in parts) for field in ("weight", "mean", "std")))


@dataclass
class Blended:
    """A checkpoint's parts beside its heads (those of weight > 0) and how they blend."""

    blend: Blend
    linear: LinearModel | None = None
    tfidf: TfidfModel | None = None

    def linear_scores(self, context: np.ndarray, module_text: np.ndarray, modules) -> np.ndarray | None:
        """The linear part's scores of mean-pooled vectors, a module it never saw (no training pair)
        scoring its mean, so that the other parts rank those rows; None without a linear part."""
        if self.linear is None:
            return None
        return self.linear.score_vectors(context, module_text, modules, unfitted=self.blend.means[1])

    def files(self) -> list[str]:
        return ([LINEAR_WEIGHTS] if self.linear is not None else []) + ([VOCABULARY, TFIDF_WEIGHTS] if self.tfidf is not None else [])

    def record(self) -> dict:
        """What config.json keeps (the files hold the models)."""
        return {**self.blend.record(), "files": self.files()}

    def save(self, folder) -> None:
        for part in (self.linear, self.tfidf):
            if part is not None:
                part.save(folder)

    @classmethod
    def load(cls, folder: Path, record: dict) -> "Blended":
        """The parts a checkpoint folder's reward blends with its heads, as its record's blend
        (heads/checkpoint.py, which migrates older forms) describes them, those of weight > 0 read
        from their files. A record or a part that cannot be read is
        one `CheckpointError` naming its file."""
        try:
            blend = Blend.from_record(record)
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
        return cls(blend, parts.get("linear"), parts.get("tfidf"))


# --- choosing the weights ----------------------------------------------------------------------


@dataclass
class BlendSample:
    """At most `max_pairs` pairs of a table (a seeded sample): their rows, their four texts and
    their groups (tasks), which the out-of-fold parts are split by."""

    rows: np.ndarray
    pairs: pl.DataFrame
    groups: np.ndarray
    total: int  # pairs in the table sampled


def blend_sample(pairs: pl.DataFrame, group_by: str = "task", seed: int = 0, max_pairs: int = MAX_PAIRS) -> BlendSample:
    """What the parts read of a pair table: a bounded sample, which bounds the time and memory they
    add at a million pairs (and lets the full table's texts go)."""
    if pairs.height <= max_pairs:
        rows = np.arange(pairs.height)
    else:
        rows = np.sort(np.random.default_rng(seed).choice(pairs.height, max_pairs, replace=False))
    columns = ["positive_context", "positive_module_text", "negative_context", "negative_module_text"]
    groups = pairs[group_by] if group_by in pairs.columns else pairs["task"]
    return BlendSample(rows, pairs[rows].select(columns), groups.to_numpy()[rows], pairs.height)


def mean_pooled(data: PairTensors, modules: Sequence[str], batch_size: int = 4096) -> PairVectors:
    """The four mean-pooled text vectors of every pair of `data` (numpy, float32) and its module's
    name (`modules` in the order of `data.module_index`): what the linear part reads."""
    sides = [[] for _ in range(4)]
    for index in torch.arange(len(data), device=data.module_index.device).split(batch_size):
        batch = data.rows(index)
        for j in range(4):
            sides[j].append(masked_mean(*batch.pieces(batch.pair_texts[:, j])).float().cpu().numpy())
    d = data.vectors.shape[1]
    sides = [np.concatenate(s) if s else np.zeros((0, d), np.float32) for s in sides]
    return PairVectors(*sides, target_module=np.asarray(modules)[data.module_index.cpu().numpy()])


@dataclass
class PartScores:
    """Each part's (positive, negative) scores of some pairs, standardised."""

    heads: tuple[np.ndarray, np.ndarray]
    linear: tuple[np.ndarray, np.ndarray]
    tfidf: tuple[np.ndarray, np.ndarray]

    def blended(self, weights) -> tuple[np.ndarray, np.ndarray]:
        blend = Blend(weights)
        return blend(self.heads[0], self.linear[0], self.tfidf[0]), blend(self.heads[1], self.linear[1], self.tfidf[1])

    @staticmethod
    def concat(parts: list["PartScores"]) -> "PartScores":
        return PartScores(*(tuple(np.concatenate([getattr(p, name)[side] for p in parts]) for side in (0, 1)) for name in PARTS))


@dataclass
class Parts:
    """The three parts fitted on some training pairs, with the statistics that standardise them."""

    heads: object  # a model or ensemble
    linear: LinearModel | None  # None above MAX_PAIRS training pairs: then it gets no weight
    tfidf: TfidfModel
    means: tuple[float, float, float]
    stds: tuple[float, float, float]

    @classmethod
    def fit(cls, heads, data: PairTensors, vectors: PairVectors | None, texts: pl.DataFrame, modules: Sequence[str], seed: int) -> list["Parts"]:
        """The parts with each TF-IDF of TFIDF_CHOICES, in that order (the heads and linear part shared)."""
        linear = LinearModel.fit(vectors, modules, seed=seed) if vectors is not None else None
        heads_and_linear = [_head_scores(heads, data), _linear_scores(linear, vectors, texts.height)]
        choices = []
        for tfidf, tfidf_scores in TfidfModel.fit_each(texts, TFIDF_CHOICES, seed=seed).values():
            training = [np.concatenate(sides) for sides in (*heads_and_linear, tfidf_scores)]
            means = tuple(float(np.nanmean(s)) for s in training)
            stds = tuple(float(np.nanstd(s)) for s in training)  # 0 without a linear part: it gets no weight
            choices.append(cls(heads, linear, tfidf, means, stds))
        return choices

    @staticmethod
    def score_each(choices: list["Parts"], data: PairTensors, vectors: PairVectors | None, texts: pl.DataFrame) -> list[PartScores]:
        """Each choice's standardised scores of some pairs; the heads and linear part they share are
        scored once."""
        shared = [_head_scores(choices[0].heads, data), _linear_scores(choices[0].linear, vectors, texts.height)]
        return [choice._standardised([*shared, choice.tfidf.scores(texts)]) for choice in choices]

    def _standardised(self, raw: list[tuple[np.ndarray, np.ndarray]]) -> PartScores:
        return PartScores(*(tuple(np.nan_to_num((s - m) / sd) if sd > 0 else np.zeros_like(s) for s in sides) for sides, m, sd in zip(raw, self.means, self.stds)))


def _linear_scores(linear: LinearModel | None, vectors: PairVectors | None, n: int) -> tuple[np.ndarray, np.ndarray]:
    return linear.scores(vectors) if linear is not None else (np.zeros(n), np.zeros(n))


def _head_scores(heads, data: PairTensors) -> tuple[np.ndarray, np.ndarray]:
    return tuple(s.float().cpu().numpy().astype(np.float64) for s in pair_scores(heads, data))


def choose_weights(held_out: PartScores, usable: Sequence[bool]) -> tuple[tuple[float, float, float], list[dict]]:
    """The grid point of highest pairwise accuracy on `held_out` (ties: the first in GRID, which
    lists more weight on the heads, then on the linear part, first), among those that give no
    weight to an unusable part (`usable`: heads, linear, TF-IDF; with none usable, the heads alone);
    and the accuracy of every point tried."""
    usable = _usable(usable)
    rows, best = [], None
    for weights in GRID:
        if any(w and not ok for w, ok in zip(weights, usable)):
            continue
        accuracy = pairwise_accuracy(*held_out.blended(weights))
        rows.append({"weights": dict(zip(PARTS, weights)), "pairwise_accuracy": accuracy})
        if best is None or accuracy > best[1]:
            best = (weights, accuracy)
    return best[0], rows


def rule_weights(
    rule: str, held_out: PartScores, groups: np.ndarray, usable: Sequence[bool], training_pairs: int | None = None
) -> tuple[tuple[float, float, float], list[dict]]:
    """The blend weights `rule` (one of RULES) picks on the held-out pairs' standardised part scores
    (`groups`: each pair's task), never weighing an unusable part (`usable`: heads, linear, TF-IDF;
    the learning curve weighs the parts without the heads); and the grid's table (every rule
    reports it, so the checkpoint shows what each point would have scored). `training_pairs`:
    what the parts were fitted on, which sets `shrink`'s prior (None: equal over every part)."""
    if rule not in RULES:
        raise ValueError(f"unknown blend rule {rule!r} (expected one of: {', '.join(RULES)})")
    best, table = choose_weights(held_out, usable)
    usable = np.array(_usable(usable), dtype=bool)
    equal = tuple(float(w) for w in usable / usable.sum())
    if rule == "argmax":
        return best, table
    if rule == "equal":
        return _rounded(equal), table
    if rule == "shrink":
        # the argmax moves toward equal weights as the held-out tasks get fewer: with G tasks it
        # keeps G / (G + SHRINK_TASKS) of its own weights; below HEADS_PAY_OFF training pairs the
        # equal weights are those of the other parts, as the heads add nothing there
        prior = usable.copy()
        if training_pairs is not None and training_pairs < HEADS_PAY_OFF and prior[1:].any():
            prior[0] = False
        prior = prior / prior.sum()
        keep = len(np.unique(groups)) / (len(np.unique(groups)) + SHRINK_TASKS)
        return _rounded([keep * b + (1 - keep) * e for b, e in zip(best, prior)]), table
    if rule == "best_part":
        alone = [pairwise_accuracy(*getattr(held_out, name)) if ok else -1.0 for name, ok in zip(PARTS, usable)]
        return tuple(float(i == int(np.argmax(alone))) for i in range(len(PARTS))), table
    # stack: a logistic regression on each pair's standardised score differences (both orders, no
    # intercept), strongly regularised, its weights clipped at 0 and summing to 1
    difference = np.stack([getattr(held_out, name)[0] - getattr(held_out, name)[1] for name in PARTS], axis=1)[:, usable]
    X, y = np.concatenate([difference, -difference]), np.r_[np.ones(len(difference)), np.zeros(len(difference))]
    coef = np.clip(LogisticRegression(C=STACK_C, fit_intercept=False).fit(X, y).coef_[0], 0, None)
    weights = np.zeros(len(PARTS))
    weights[usable] = coef
    return (_rounded(weights / weights.sum()) if weights.sum() > 0 else _rounded(equal)), table


def _usable(usable: Sequence[bool]) -> tuple[bool, bool, bool]:
    """Which parts may be weighed; with none (a constant model and no other part), the heads alone."""
    return tuple(bool(ok) for ok in usable) if any(usable) else (True, False, False)


def _rounded(weights) -> tuple[float, float, float]:
    """Weights to 0.01, still summing to 1 (the rounding's remainder on the largest), so the
    checkpoint's formula reads "0.45 × heads + ...", not six digits."""
    cents = np.round(np.asarray(weights, dtype=np.float64) * 100).astype(int)
    cents[int(np.argmax(cents))] += 100 - cents.sum()
    return tuple(float(c) / 100 for c in cents)


def task_folds(groups: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """A fold per pair: the distinct groups shuffled (seeded) and dealt round-robin."""
    distinct = np.unique(groups)
    np.random.default_rng(seed).shuffle(distinct)
    fold_of = dict(zip(distinct.tolist(), np.arange(len(distinct)) % folds))
    return np.array([fold_of[g] for g in groups.tolist()], dtype=np.int64)


@dataclass
class HeldOut:
    """What the blend's weights are chosen on: for each TF-IDF choice (TFIDF_CHOICES), the parts
    fitted on the training sample and their standardised scores of the held-out pairs (the
    validation pairs, then each fold's training pairs out of fold), and those pairs' groups."""

    finals: list[Parts]
    scores: list[list[PartScores]]  # per choice: [validation, fold 1, fold 2, ...]
    groups: np.ndarray
    out_of_fold: int  # training pairs scored out of fold (0: validation alone)
    folds: int
    training_pairs: int | None  # what the parts were fitted on (all of them, before any sample); None: not known, see rule_weights

    def pooled(self, choice: int) -> PartScores:
        return PartScores.concat(self.scores[choice])


def held_out_scores(
    heads,
    train: BlendSample,
    val: BlendSample,
    train_data: PairTensors,
    val_data: PairTensors,
    modules: Sequence[str],
    fit_fold: Callable[[torch.Tensor], object] | None = None,
    folds: int = FOLDS,
    seed: int = 0,
) -> HeldOut:
    """The parts fitted on the sampled training pairs beside `heads` (a trained model or ensemble),
    scored on the sampled validation pairs, plus the training pairs out of fold when `fit_fold`
    (rows of `train_data` -> heads trained on them alone) is given, there are at most MAX_PAIRS
    training pairs and at least 2 groups."""
    device = train_data.module_index.device
    to_rows = lambda rows: torch.from_numpy(np.asarray(rows, np.int64)).to(device)  # noqa: E731
    train_rows, val_rows = train_data.rows(to_rows(train.rows)), val_data.rows(to_rows(val.rows))
    # the linear part is for few pairs, where the heads overfit; above MAX_PAIRS the heads have the
    # data, and its pooled vectors and features would weigh more than the matrix at 100k pairs
    small = train.total <= MAX_PAIRS
    train_vectors, val_vectors = (mean_pooled(train_rows, modules), mean_pooled(val_rows, modules)) if small else (None, None)
    finals = Parts.fit(heads, train_rows, train_vectors, train.pairs, modules, seed)  # one per TF-IDF choice
    held_out = [[scores] for scores in Parts.score_each(finals, val_rows, val_vectors, val.pairs)]
    groups = [val.groups]
    n_folds = min(folds, len(np.unique(train.groups)))
    if fit_fold is None or not small or n_folds < 2:
        return HeldOut(finals, held_out, val.groups, 0, 0, train.total)
    fold = task_folds(train.groups, n_folds, seed)  # the sample is the whole split
    for k in range(n_folds):
        inside, outside = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        rows_in, rows_out = to_rows(train.rows[inside]), to_rows(train.rows[outside])
        fold_vectors, out_vectors = _select(train_vectors, inside), _select(train_vectors, outside)
        groups.append(train.groups[outside])
        fold_parts = Parts.fit(fit_fold(rows_in), train_data.rows(rows_in), fold_vectors, train.pairs[inside], modules, seed)
        for scores, fold_scores in zip(held_out, Parts.score_each(fold_parts, train_data.rows(rows_out), out_vectors, train.pairs[outside])):
            scores.append(fold_scores)
    return HeldOut(finals, held_out, np.concatenate(groups), train.pairs.height, n_folds, train.total)


def choose_blend(held: HeldOut, rule: str) -> tuple[int, list["_Choice"], float]:
    """The TF-IDF choice and, for each choice, the weights `rule` picks on the pooled held-out
    pairs. The ended TF-IDF replaces the plain one only when its blend is clearly better there, not
    by a pair or two: z of the per-task difference in pairs right above Z_CLEAR."""
    choices = [_Choice.best(final, held.pooled(i), held.groups, rule, held.training_pairs) for i, final in enumerate(held.finals)]
    plain, ended = (_right(*c.pooled.blended(c.weights)) for c in choices)
    z = _clustered_z(ended.astype(np.int64) - plain, held.groups)
    return (1 if z > Z_CLEAR else 0), choices, z


def fit_blend(
    heads,
    train: BlendSample,
    val: BlendSample,
    train_data: PairTensors,
    val_data: PairTensors,
    modules: Sequence[str],
    fit_fold: Callable[[torch.Tensor], object] | None = None,
    folds: int = FOLDS,
    seed: int = 0,
    *,
    rule: str,
) -> tuple[Blended | None, dict]:
    """The parts fitted on the sampled training pairs beside `heads`, blended at the weights `rule`
    (`rule_weights`) picks on the held-out pairs (`held_out_scores`). Returns None for the heads
    alone, and what was tried (the table, the held-out pairs, each part's accuracy)."""
    if not (train.pairs.height and val.pairs.height):
        return None, {}
    held = held_out_scores(heads, train, val, train_data, val_data, modules, fit_fold, folds, seed)
    best, choices, z = choose_blend(held, rule)
    choice, final, validation_scores = choices[best], held.finals[best], held.scores[best][0]
    weights = choice.weights
    summary = {
        "training_pairs": train.total,
        "held_out_pairs": {"validation": val.pairs.height, "out_of_fold": held.out_of_fold, "folds": held.folds},
        "rule": rule,
        "chosen": {"weights": dict(zip(PARTS, weights)), "pairwise_accuracy": choice.accuracy, "val_pairwise_accuracy": pairwise_accuracy(*validation_scores.blended(weights))},
        "tfidf_blocks": list(final.tfidf.blocks),
        "tfidf_choices": [{"blocks": list(f.tfidf.blocks), "pairwise_accuracy": c.accuracy, "alone": pairwise_accuracy(*c.pooled.tfidf)} for f, c in zip(held.finals, choices)],
        "tfidf_z": z,
        "parts_alone": {name: pairwise_accuracy(*getattr(choice.pooled, name)) for name in PARTS},
        "parts_alone_validation": {name: pairwise_accuracy(*getattr(validation_scores, name)) for name in PARTS},
        "table": [{**row, "tfidf_blocks": list(f.tfidf.blocks)} for f, c in zip(held.finals, choices) for row in c.table],
    }
    if weights == (1.0, 0.0, 0.0):
        return None, summary
    blend = Blend(weights, final.means, final.stds)
    return Blended(blend, final.linear if weights[1] else None, final.tfidf if weights[2] else None), summary


@dataclass
class _Choice:
    """One TF-IDF choice's weights on the pooled held-out pairs, as a rule picked them."""

    weights: tuple[float, float, float]
    accuracy: float
    table: list[dict]  # every grid point tried
    pooled: PartScores

    @classmethod
    def best(cls, parts: Parts, pooled: PartScores, groups: np.ndarray, rule: str, training_pairs: int | None) -> "_Choice":
        weights, table = rule_weights(rule, pooled, groups, [sd > 0 for sd in parts.stds], training_pairs)
        return cls(weights, pairwise_accuracy(*pooled.blended(weights)), table, pooled)


def _right(positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
    return positive > negative  # a tie counts wrong, as in pairwise_accuracy


def _clustered_z(difference: np.ndarray, groups: np.ndarray) -> float:
    """z of the total of a per-pair difference, its pairs summed per group first (a task's pairs
    share its runs, so they are not independent): sum_t d_t / sqrt(sum_t d_t^2); 0 when no group
    differs."""
    _, group = np.unique(groups, return_inverse=True)
    per_group = np.bincount(group, weights=difference)
    spread = float(np.sqrt(np.sum(per_group**2)))
    return float(per_group.sum() / spread) if spread > 0 else 0.0


def _select(vectors: PairVectors, rows: np.ndarray) -> PairVectors:
    return PairVectors(
        vectors.positive_context[rows], vectors.positive_module_text[rows], vectors.negative_context[rows],
        vectors.negative_module_text[rows], vectors.target_module[rows],
    )  # fmt: skip


def blend_line(blended: Blended | None, summary: dict) -> str:
    """What the blend chose, for the terminal."""
    if not summary:
        return "blend: heads alone (no validation pairs to choose the weights on)"
    held = summary["held_out_pairs"]
    where = f"{held['validation']} validation pairs" + (f" + {held['out_of_fold']} training pairs out of fold ({held['folds']} folds by task)" if held["out_of_fold"] else "")
    alone = ", ".join(f"{name} alone {accuracy:.3f}" for name, accuracy in summary["parts_alone"].items())
    weights = summary["chosen"]["weights"]
    chosen = "heads alone" if blended is None else "weights " + ", ".join(f"{name} {w:g}" for name, w in weights.items())
    plain, ended = summary["tfidf_choices"]
    tfidf = f"; with the TF-IDF of the episode's end too {ended['pairwise_accuracy']:.3f}, without {plain['pairwise_accuracy']:.3f}, z {summary['tfidf_z']:.2f}: {'kept' if summary['tfidf_blocks'] == list(ENDED_BLOCKS) else 'not kept'}"
    return f"blend: {chosen}, accuracy {summary['chosen']['pairwise_accuracy']:.3f} on {where} ({alone}{tfidf})"


# --- the reward in words -----------------------------------------------------------------------

PART_NAMES = {"heads": "heads", "linear": "linear", "tfidf": "TF-IDF"}


def blend_weights(record: "CheckpointRecord") -> dict[str, float] | None:
    """A checkpoint's blend weights by part (`PARTS`), from its record (heads/checkpoint.py); None
    when its reward is the heads alone."""
    return dict(zip(PARTS, Blend.from_record(record.blend).weights)) if record.blend else None


def reward_formula(record: "CheckpointRecord") -> str:
    """What a checkpoint's reward is made of, short: "0.5 × linear + 0.5 × TF-IDF", "the heads alone"."""
    weights = blend_weights(record)
    if weights is None:
        return "the heads alone"
    return " + ".join(f"{w:g} × {PART_NAMES[name]}" for name, w in weights.items() if w)


def describe_reward(record: "CheckpointRecord") -> str:
    """What a checkpoint's reward is made of, in words, from its record: the parts and their
    weights, why a part weighs 0, and each part's accuracy alone beside the reward's on the
    held-out pairs the weights were chosen on (`blend_choice`, when the checkpoint recorded it).
    The one sentence train-heads, evaluate's report, the demo and /health say:

        reward = 0.5 × linear + 0.5 × TF-IDF; the heads weigh 0: trained on 800 pairs, every blend that
        gave them weight did worse on held-out pairs; on the 900 held-out pairs the weights were chosen
        on: heads alone 0.660, linear alone 0.620, TF-IDF alone 0.770, reward 0.780
    """
    weights = blend_weights(record)
    choice = record.blend_choice
    if weights is None and not choice:
        if record.stage == 1:
            why = "a stage 1 checkpoint: its encoder changed the heads' scale, so no blend"
        elif record.training_config.get("model", {}).get("blend") == "off":
            why = "no blend: model.blend is off"
        else:
            why = "no blend"
        return f"reward = the heads alone ({why})"
    training_pairs = (choice or {}).get("training_pairs")
    linear_fitted = training_pairs is None or training_pairs <= MAX_PAIRS
    if weights is None:
        others = "the linear or TF-IDF part" if linear_fitted else "the TF-IDF part"
        line = f"reward = the heads alone: no blend with {others} did better on held-out pairs"
    else:
        line = f"reward = {reward_formula(record)}"
        if weights["tfidf"] and (choice or {}).get("tfidf_blocks") == list(ENDED_BLOCKS):
            line += " (TF-IDF reads the episode's end too)"
        if not weights["heads"]:
            trained = f"trained on {training_pairs} pairs, " if training_pairs else ""
            line += f"; the heads weigh 0: {trained}every blend that gave them weight did worse on held-out pairs"
        if record.blend.get("before_linear_part"):  # format 1's `lexical` record: TF-IDF was the only part then
            line += "; no linear part (a checkpoint from before it)"
        elif not weights["linear"]:
            line += "; the linear part weighs 0" + ("" if linear_fitted else f" (not fitted above {MAX_PAIRS:,} training pairs)")
        if not weights["tfidf"]:
            line += "; the TF-IDF part weighs 0"
    if choice:
        held = choice["held_out_pairs"]
        alone = [f"{PART_NAMES[name]} alone {accuracy:.3f}" for name, accuracy in choice["parts_alone"].items() if name != "linear" or linear_fitted]
        line += f"; on the {held['validation'] + held['out_of_fold']} held-out pairs the weights were chosen on: {', '.join(alone)}, reward {choice['chosen']['pairwise_accuracy']:.3f}"
    return line
