"""Cheap scorers the heads must beat, each giving one score per response like a head does.

    length_scores(pairs)                         # longer module text scores higher
    cosine_scores(vectors)                       # cosine(e_ctx, e_mod)
    LogisticBaseline.fit(train_vectors).scores(vectors)   # scikit-learn, one model per module
    TfidfBaseline.fit(train_pairs).scores(pairs)          # text only: no encoder, no vectors

The logistic regression reads the heads' own input features, concat(e_ctx, e_mod, e_ctx*e_mod),
and is fitted on pair differences phi(pos) - phi(neg) in both orders, without intercept, so its
linear score w . phi ranks single responses: a linear head trained on the same data.

The TF-IDF baseline is fitted the same way on words instead of vectors: phi is the TF-IDF of the
context beside the TF-IDF of the module text (word 1-2-grams), one model for all modules.
"""

from collections.abc import Sequence

import numpy as np
import polars as pl
from sklearn.linear_model import LogisticRegression

from features.pairs import PairVectors
from heads.lexical import TfidfModel


def length_scores(pairs: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Characters of each side's module text."""
    return (
        pairs["positive_module_text"].str.len_chars().to_numpy().astype(np.float64),
        pairs["negative_module_text"].str.len_chars().to_numpy().astype(np.float64),
    )


def cosine_scores(vectors: PairVectors) -> tuple[np.ndarray, np.ndarray]:
    return (
        _cosine(vectors.positive_context, vectors.positive_module_text),
        _cosine(vectors.negative_context, vectors.negative_module_text),
    )


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(norms, 1e-12)


def _features(context: np.ndarray, module_text: np.ndarray) -> np.ndarray:
    return np.concatenate([context, module_text, context * module_text], axis=1, dtype=np.float32)


class LogisticBaseline:
    def __init__(self, weights: dict[str, np.ndarray]):
        self.weights = weights  # per module, over the 3d features

    @classmethod
    def fit(cls, vectors: PairVectors, modules: Sequence[str], C: float = 1.0, seed: int = 0) -> "LogisticBaseline":
        weights = {}
        for module in modules:
            rows = vectors.target_module == module
            if not rows.any():
                continue
            difference = _features(vectors.positive_context[rows], vectors.positive_module_text[rows]) - _features(
                vectors.negative_context[rows], vectors.negative_module_text[rows]
            )
            x = np.concatenate([difference, -difference])
            y = np.concatenate([np.ones(len(difference)), np.zeros(len(difference))])
            model = LogisticRegression(C=C, fit_intercept=False, max_iter=2000, random_state=seed).fit(x, y)
            weights[module] = model.coef_[0].astype(np.float32)
        return cls(weights)

    def scores(self, vectors: PairVectors) -> tuple[np.ndarray, np.ndarray]:
        """w . phi per side; NaN for pairs of a module it was never fitted on."""
        positive = np.full(len(vectors.target_module), np.nan)
        negative = np.full(len(vectors.target_module), np.nan)
        for module, w in self.weights.items():
            rows = vectors.target_module == module
            positive[rows] = _features(vectors.positive_context[rows], vectors.positive_module_text[rows]) @ w
            negative[rows] = _features(vectors.negative_context[rows], vectors.negative_module_text[rows]) @ w
        return positive, negative


# the TF-IDF baseline is the lexical part a checkpoint may carry beside its heads (heads/lexical.py)
TfidfBaseline = TfidfModel
