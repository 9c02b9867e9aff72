"""Scoring pair tables for evaluation: a checkpoint's reward of both sides of every pair, read from
its encoder's cached vectors (what `pipeline evaluate` reports on, and bench/ measures).

    scorer = load("ckpt/", "embeddings/", write_cache=True)        # pipeline.rewards
    vectors, embedded = cached_pair_vectors(scorer, pairs)           # embeds the texts the cache lacks first
    positive, negative = pair_scores(scorer, vectors, pairs)         # two heads.reward_model.RewardOutput
    positive.reward, positive.members, positive.parts["tfidf"]

The scores are the reward model's (heads/reward_model.py), those `RewardScorer.rewards` gives for
the same texts: the heads read each text's pieces, the linear part of a blend the pooled vectors
`pair_vectors` reads (the mean of each text's pieces), its TF-IDF part the pair table's texts.
"""

import logging

import polars as pl

from cache import CacheError, MissingVectors
from features.embedding import encode_into
from features.pairs import PairVectors, unique_texts, with_text_keys
from features.views import cut_texts, piece_features
from heads.reward_model import RewardOutput
from heads.training import PairTensors
from pipeline.rewards import RewardScorer, ScoringError

logger = logging.getLogger(__name__)


def cached_pair_vectors(scorer: RewardScorer, pairs: pl.DataFrame, embed_missing: bool = True, progress: bool = False) -> tuple[PairVectors, int]:
    """The four vectors of every pair, each text's pieces pooled by their mean, with the piece
    features the heads read attached (`.pieces`); and how many texts (pieces) had to be embedded
    into the scorer's cache first (with `embed_missing`; else `MissingVectors`)."""
    namespace, view = scorer.namespace, scorer.view
    if namespace is None:
        raise CacheError("scoring pair tables needs an embedding cache: load the scorer with cache_dir=")
    pairs = with_text_keys(pairs)  # hashed once, for the first try, the missing texts and the retry
    try:
        return piece_features(namespace, pairs, view).pair_vectors(), 0
    except MissingVectors:
        if not embed_missing:
            raise
    texts = cut_texts(unique_texts(pairs), view).table
    missing = texts.filter(pl.col("key").is_in(namespace.missing(texts["key"].to_list())))
    logger.warning("embedding %d texts that %s has no vectors for", missing.height, namespace.root.parent)
    with namespace.writer():
        encode_into(namespace, scorer.encoder(), missing, 4096, progress)
    scorer.reread_cache()
    return piece_features(namespace, pairs, view).pair_vectors(), missing.height


def pair_scores(scorer: RewardScorer, vectors: PairVectors, pairs: pl.DataFrame | None = None, batch_size: int = 4096) -> tuple[RewardOutput, RewardOutput]:
    """The reward model's output for the positive and the negative side of every pair, never
    normalised: from the pairs' pieces when `vectors` carries them (else each text its vector),
    the linear part from the pooled vectors, the TF-IDF part from `pairs`, the table `vectors`
    came from (needed when the checkpoint blends one in)."""
    model = scorer.model
    if pairs is None and model.blended is not None and model.blended.tfidf is not None:
        raise ScoringError(f"{scorer.folder} blends its heads with a TF-IDF model, which reads the texts: pass the pair table beside its vectors")
    data = PairTensors.from_vectors(vectors, model.heads, scorer.device)
    scored = []
    for k, side in enumerate(("positive", "negative")):
        texts = (pairs[f"{side}_context"], pairs[f"{side}_module_text"]) if pairs is not None else (None, None)
        pooled = (getattr(vectors, f"{side}_context"), getattr(vectors, f"{side}_module_text"))
        scored.append(model.score(data.side(k), *texts, pooled=pooled, batch_size=batch_size, round_weights=False))
    return scored[0], scored[1]
