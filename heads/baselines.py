"""Cheap scorers the heads must beat, each giving one score per response like a head does.

    length_scores(pairs)                         # longer module text scores higher
    cosine_scores(vectors)                       # cosine(e_ctx, e_mod)
    LogisticBaseline.fit(train_vectors).scores(vectors)   # scikit-learn, one model per module
    TfidfBaseline.fit(train_pairs).scores(pairs)          # text only: no encoder, no vectors
    SourcePrior.fit(train_pairs).scores(pairs)            # who wrote the run, not what it says

The logistic regression reads the heads' own input features, concat(e_ctx, e_mod, e_ctx*e_mod),
and is fitted on pair differences phi(pos) - phi(neg) in both orders, without intercept, so its
linear score w . phi ranks single responses: a linear head trained on the same data.

The TF-IDF baseline is fitted the same way on words instead of vectors: phi is the TF-IDF of the
context beside the TF-IDF of the module text (word 1-2-grams), one model for all modules.
"""

from dataclasses import dataclass

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


SIDE_SOURCES = ("positive_source", "negative_source")


@dataclass
class SourcePrior:
    """Each response scored by how often its source won in the training pairs: the share of the
    training pairs holding that source on a side in which it was the positive side, smoothed as
    (won + 1) / (pairs + 2), so a source never seen scores 0.5. Pairs mined from runs (`pipeline
    pairs`) carry each side's source (the model and strategy that wrote the run, on InterCode):
    this is what a scorer gets by recognising who wrote a run instead of judging it, and an RL
    policy is one author, so a reward should be judged beside it and with it taken out."""

    rates: dict[str, float]

    @staticmethod
    def applies(pairs: pl.DataFrame) -> bool:
        return all(column in pairs.columns for column in SIDE_SOURCES)

    @classmethod
    def fit(cls, pairs: pl.DataFrame) -> "SourcePrior":
        sides = pl.concat(
            [pairs.select(source=pl.col(column).cast(pl.String), won=pl.lit(won)) for column, won in zip(SIDE_SOURCES, (1, 0))]
        ).drop_nulls("source")
        counts = sides.group_by("source").agg(won=pl.col("won").sum(), pairs=pl.len())
        return cls({row["source"]: (row["won"] + 1) / (row["pairs"] + 2) for row in counts.iter_rows(named=True)})

    def scores(self, pairs: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        positive, negative = (
            pairs[column].cast(pl.String).replace_strict(self.rates, default=0.5, return_dtype=pl.Float64).fill_null(0.5).to_numpy() for column in SIDE_SOURCES
        )
        return positive, negative
