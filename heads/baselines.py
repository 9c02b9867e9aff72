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

import numpy as np
import polars as pl

from features.pairs import PairVectors
from heads.blend import LinearModel, TfidfModel


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


# the logistic-regression and TF-IDF baselines are the linear and TF-IDF parts a checkpoint's
# reward may blend with its heads (heads/blend.py): the same code, fitted the same way
LogisticBaseline = LinearModel
TfidfBaseline = TfidfModel
