"""The lexical part of a reward: a TF-IDF logistic regression beside the heads, blended with them
at a weight chosen on validation pairs.

Frozen sentence vectors lose lexical detail that decides many pairs: which command was run, which
error came back. On real runs a TF-IDF logistic regression matches the heads (InterCode) or beats
them (AutoGPT, the hard synthetic data), and the two err on different pairs. So a checkpoint may
carry both, and its reward is

    reward = (1 - w) * (head - head_mean) / head_std + w * (tfidf - tfidf_mean) / tfidf_std

with each part standardised by its scores on the training pairs and `w` the weight of highest
validation pairwise accuracy (a tied pair counts wrong, as everywhere) on a grid from 0 (heads
alone) to 1 (TF-IDF alone); ties between weights keep the smaller one. A checkpoint whose best
weight is 0 carries no lexical part.

    model = TfidfModel.fit(train_pairs)                      # also evaluate's TF-IDF baseline
    model.score_texts(contexts, module_texts)                # one score per row
    lexical, tried = fit_lexical(heads, lexical_sample(train_pairs), lexical_sample(val_pairs), train_tensors, val_tensors)   # or None
    lexical.rewards(head_scores, contexts, module_texts)     # the blended reward, per row
    lexical.save(folder); Lexical.load(folder, config["lexical"])
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch
from safetensors.numpy import load_file, save_file
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from heads.metrics import pairwise_accuracy
from heads.training import PairTensors, pair_scores

VOCABULARY = "lexical.json"
WEIGHTS = "lexical.safetensors"
LEXICAL_FILES = (VOCABULARY, WEIGHTS)
BLEND_GRID = tuple(round(w, 1) for w in np.linspace(0, 1, 11))
_VECTORIZER = {"sublinear_tf": True, "ngram_range": (1, 2), "min_df": 2, "max_features": 50_000}


class TfidfModel:
    """Logistic regression on TF-IDF features of (context, module text), fitted on pair differences.

    One model for all modules: a module indicator would cancel in phi(pos) - phi(neg), and on the
    demo's synthetic data (200 val + test pairs) the shared model ranked better than one model per
    module (0.755 vs 0.720 pairwise accuracy) or both blocks side by side (0.735). C=10: the rows
    are unit-length TF-IDF vectors and C=1 underfits them (0.700 for the shared model).
    """

    def __init__(self, context: TfidfVectorizer, module_text: TfidfVectorizer, weights: np.ndarray):
        self.context = context
        self.module_text = module_text
        self.weights = weights

    @classmethod
    def fit(cls, pairs: pl.DataFrame, C: float = 10.0, seed: int = 0) -> "TfidfModel":
        def vectorizer(column: str) -> TfidfVectorizer:
            texts = pl.concat([pairs[f"positive_{column}"], pairs[f"negative_{column}"]]).to_list()
            return TfidfVectorizer(**_VECTORIZER).fit(texts)

        model = cls(vectorizer("context"), vectorizer("module_text"), np.zeros(0))
        difference = model._features(pairs["positive_context"], pairs["positive_module_text"]) - model._features(
            pairs["negative_context"], pairs["negative_module_text"]
        )
        x = sp.vstack([difference, -difference]).tocsr()
        y = np.concatenate([np.ones(pairs.height), np.zeros(pairs.height)])
        model.weights = LogisticRegression(C=C, fit_intercept=False, max_iter=2000, random_state=seed).fit(x, y).coef_[0]
        return model

    def _features(self, contexts, module_texts) -> sp.csr_matrix:
        return sp.hstack([self.context.transform(list(contexts)), self.module_text.transform(list(module_texts))]).tocsr()

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

    def save(self, folder: Path) -> None:
        """`lexical.json` (each vectorizer's terms in column order) and `lexical.safetensors`
        (their idf and the weights): plain files, no pickles."""
        vocabulary = {name: sorted(v.vocabulary_, key=v.vocabulary_.get) for name, v in (("context", self.context), ("module_text", self.module_text))}
        (folder / VOCABULARY).write_text(json.dumps({"vectorizer": {**_VECTORIZER, "ngram_range": list(_VECTORIZER["ngram_range"])}, **vocabulary}, ensure_ascii=False), encoding="utf-8")
        save_file(
            {"context_idf": self.context.idf_, "module_text_idf": self.module_text.idf_, "weights": np.asarray(self.weights, np.float64)},
            str(folder / WEIGHTS),
        )

    @classmethod
    def load(cls, folder: Path) -> "TfidfModel":
        saved = json.loads((folder / VOCABULARY).read_text(encoding="utf-8"))
        tensors = load_file(str(folder / WEIGHTS))
        settings = {**saved["vectorizer"], "ngram_range": tuple(saved["vectorizer"]["ngram_range"])}

        def vectorizer(name: str) -> TfidfVectorizer:
            v = TfidfVectorizer(**settings)
            v.vocabulary_ = {term: i for i, term in enumerate(saved[name])}
            v.idf_ = tensors[f"{name}_idf"]
            return v

        return cls(vectorizer("context"), vectorizer("module_text"), tensors["weights"])


@dataclass(frozen=True)
class Blend:
    """How a head's score and the TF-IDF score become one reward (the formula above)."""

    weight: float
    head_mean: float
    head_std: float
    lexical_mean: float
    lexical_std: float

    def __call__(self, head: np.ndarray, lexical: np.ndarray) -> np.ndarray:
        blended = (1 - self.weight) * (np.asarray(head, np.float64) - self.head_mean) / self.head_std
        return (blended + self.weight * (np.asarray(lexical, np.float64) - self.lexical_mean) / self.lexical_std).astype(np.float32)


@dataclass
class Lexical:
    """A checkpoint's lexical part: the TF-IDF model and how it blends with the heads."""

    model: TfidfModel
    blend: Blend

    def rewards(self, head_scores: np.ndarray, contexts, module_texts) -> np.ndarray:
        """Blended rewards, shaped like `head_scores` (rows, or members x rows: each member's head
        score blended with the same TF-IDF score, so the members' spread scales by (1 - w) / head_std)."""
        return self.blend(head_scores, self.model.score_texts(contexts, module_texts))

    def record(self) -> dict:
        """What config.json keeps (the files hold the vocabulary and weights)."""
        return {**asdict(self.blend), "files": list(LEXICAL_FILES)}

    def save(self, folder: Path) -> None:
        self.model.save(folder)

    @classmethod
    def load(cls, folder: Path, record: dict) -> "Lexical":
        blend = Blend(**{name: float(record[name]) for name in ("weight", "head_mean", "head_std", "lexical_mean", "lexical_std")})
        return cls(TfidfModel.load(folder), blend)


def choose_lexical(
    model: TfidfModel,
    train_heads: tuple[np.ndarray, np.ndarray],
    val_heads: tuple[np.ndarray, np.ndarray],
    train: pl.DataFrame,
    val: pl.DataFrame,
    grid: tuple[float, ...] = BLEND_GRID,
) -> tuple[Lexical | None, list[dict]]:
    """The blend weight of highest validation pairwise accuracy (ties: the smaller weight), and the
    table of every weight tried. None when heads alone (weight 0) do best, or when either part's
    training scores have no spread to standardise by."""
    head_train = np.concatenate(train_heads)
    lexical_train = np.concatenate(model.scores(train))
    head_std, lexical_std = float(head_train.std()), float(lexical_train.std())
    if not (head_std > 0 and lexical_std > 0):
        return None, []
    lexical_val = model.scores(val)
    rows, best = [], None
    for weight in grid:
        blend = Blend(float(weight), float(head_train.mean()), head_std, float(lexical_train.mean()), lexical_std)
        accuracy = pairwise_accuracy(blend(val_heads[0], lexical_val[0]), blend(val_heads[1], lexical_val[1]))
        rows.append({"weight": float(weight), "val_pairwise_accuracy": accuracy})
        if best is None or accuracy > best[1]:
            best = (blend, accuracy)
    if best[0].weight == 0:
        return None, rows
    return Lexical(model, best[0]), rows


@dataclass
class LexicalSample:
    """At most `max_pairs` pairs of a table (a seeded sample): their rows and their four texts."""

    rows: np.ndarray
    pairs: pl.DataFrame


def lexical_sample(pairs: pl.DataFrame, seed: int = 0, max_pairs: int = 50_000) -> LexicalSample:
    """What the lexical part reads of a pair table: a bounded sample, which bounds the time and
    memory TF-IDF adds at a million pairs (and lets the full table's texts go)."""
    if pairs.height <= max_pairs:
        rows = np.arange(pairs.height)
    else:
        rows = np.sort(np.random.default_rng(seed).choice(pairs.height, max_pairs, replace=False))
    columns = ["positive_context", "positive_module_text", "negative_context", "negative_module_text"]
    return LexicalSample(rows, pairs[rows].select(columns))


def fit_lexical(
    heads, train: LexicalSample, val: LexicalSample, train_data: PairTensors, val_data: PairTensors, seed: int = 0
) -> tuple[Lexical | None, list[dict]]:
    """The TF-IDF model fitted on the sampled training pairs and blended with `heads` (a trained
    model or ensemble) at the weight `choose_lexical` picks on the sampled validation pairs;
    `train_data` and `val_data` are the full pair tensors the samples' rows index."""
    if not (train.pairs.height and val.pairs.height):
        return None, []
    tfidf = TfidfModel.fit(train.pairs, seed=seed)
    as_numpy = lambda scores: tuple(s.float().cpu().numpy() for s in scores)  # noqa: E731
    heads_train = as_numpy(pair_scores(heads, train_data.rows(torch.from_numpy(train.rows).to(train_data.module_index.device))))
    heads_val = as_numpy(pair_scores(heads, val_data.rows(torch.from_numpy(val.rows).to(val_data.module_index.device))))
    return choose_lexical(tfidf, heads_train, heads_val, train.pairs, val.pairs)
