"""The reward of every checkpoint kind, through every scoring path, equals what it was before the
reward model became one object (heads/reward_model.py): rewards, parts, uncertainty, per-round
rewards, normalised and not, from texts (the reward API), from vectors and from pair tables (what
`pipeline evaluate` scores).

The checkpoints are small and made here, without training (random heads of dimension 8 and
hash-seeded text vectors): single and ensemble, unblended and blended (linear and TF-IDF, TF-IDF of
the episode's end, the `lexical` record of checkpoints from before the linear part), and each view.
tests/fixtures/reward_scores.json holds the scores the code gave before; rewrite it only when a
change of scores is intended:

    PYTHONPATH=. python tests/test_reward_model.py      # writes tests/fixtures/reward_scores.json
"""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from data import pairs_from_records
from data.synth import generate_pairs
from features.pairs import text_key
from features.views import View, piece_features
from heads.blend import ENDED_BLOCKS, TFIDF_BLOCKS, Blend, Blended, LinearModel, TfidfModel
from heads.checkpoint import CheckpointRecord, migrate, save_checkpoint, write_normalization
from heads.ensemble import RewardEnsemble
from heads.model import MultiModuleRewardModel
from pipeline.evaluate_scoring import pair_scores
from pipeline.rewards import ScoringError, load

GOLDEN = Path(__file__).parent / "fixtures" / "reward_scores.json"
MODULES = ["reflection", "planner", "executor", "memory"]
DIM = 8
WINDOWS = {"context": 12, "module": 12}
# name: (members, view, blend): "linear+tfidf", "linear" (fitted on three modules of four), "ended" (TF-IDF of the episode's end too), "lexical" (the old record)
KINDS = {
    "single-truncate": (1, "truncate", None),
    "ensemble-truncate-blended": (3, "truncate", "linear+tfidf"),
    "single-chunks-linear": (1, "chunks", "linear"),
    "single-head_tail-lexical": (1, "head_tail", "lexical"),
    "single-rounds": (1, "rounds", None),
    "ensemble-rounds-ended": (2, "rounds", "ended"),
}


def pairs():
    return pairs_from_records(generate_pairs(16, seed=7))


def vector(key: str) -> np.ndarray:
    """A text's vector, seeded by its key: the same text always has the same one."""
    return np.random.default_rng(int(hashlib.sha256(key.encode()).hexdigest()[:12], 16)).standard_normal(DIM).astype(np.float32)


class HashedVectors:
    """A vector source (features.pairs.VectorSource) of `vector`."""

    dimension = DIM

    def fetch(self, keys, out=None):
        return np.stack([vector(str(key)) for key in keys]) if len(keys) else np.zeros((0, DIM), np.float32)


def make_checkpoint(folder: Path, members: int, view_name: str, blend: str | None, seed: int) -> Path:
    torch.manual_seed(seed)
    view = View(view_name, dict(WINDOWS), 6)
    pooling = "attention" if view.attention else "mean"
    heads = [MultiModuleRewardModel(DIM, MODULES, 0.1, "16", pooling) for _ in range(members)]
    with torch.no_grad():
        for model in heads:
            for parameter in model.parameters():
                parameter.normal_(0, 0.5)  # an attention query of zeros would weigh every piece alike
    side = "head_tail" if view_name == "head_tail" else "left"
    config = {
        "encoder_fingerprint": {"encoder": "hashed", "max_context_tokens": 32, "max_module_tokens": 32, "context_prompt": "", "truncation_side": side, "normalize": False, "dimension": DIM},
        **view.record(),
        "module_pairs": {m: {"train": 5, "val": 2} for m in MODULES},
        "normalization": {m: {"mean": 0.1 * i - 0.2, "std": 1.0 + 0.5 * i} for i, m in enumerate(MODULES)},
    }
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    if blend in ("linear+tfidf", "linear"):
        linear = LinearModel({m: rng.standard_normal(3 * DIM).astype(np.float32) for m in MODULES[:3]})
        tfidf = TfidfModel.fit(pairs()) if blend == "linear+tfidf" else None
        weights = (0.5, 0.3, 0.2) if tfidf is not None else (0.6, 0.4, 0.0)
        blended = Blended(Blend(weights, (0.1, -0.2, 0.3), (1.5, 2.0, 0.7)), linear, tfidf)
        blended.save(folder)
        config["blend"] = blended.record()
    elif blend == "ended":
        blended = Blended(Blend((0.7, 0.0, 0.3), (0.2, 0.0, -0.1), (1.2, 1.0, 0.9)), None, TfidfModel.fit(pairs(), blocks=ENDED_BLOCKS))
        blended.save(folder)
        config["blend"] = blended.record()
    elif blend == "lexical":
        TfidfModel.fit(pairs(), blocks=TFIDF_BLOCKS).save(folder)
        config["lexical"] = {"weight": 0.4, "head_mean": 0.3, "head_std": 1.3, "lexical_mean": -0.2, "lexical_std": 0.8}
    # written as training writes it: the record (format 1's `lexical` blend migrated), then the
    # normalisation beside it, as evaluate stores it
    model = heads[0] if members == 1 else RewardEnsemble(heads)
    record = CheckpointRecord.from_dict(migrate({**CheckpointRecord.of(model, encoder_fingerprint={}).to_dict(), "format_version": 1, **config}))
    save_checkpoint(folder, model, record)
    write_normalization(folder, record.normalization)
    return folder


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("kinds")
    return {name: make_checkpoint(root / name, *kind, seed=i) for i, (name, kind) in enumerate(KINDS.items())}


def scorer_of(folder: Path, normalize: bool):
    """The checkpoint's scorer, every piece vector of the test pairs in its memory (no encoder)."""
    scorer = load(folder, device="cpu", normalize=normalize)
    table = pairs()
    for side in ("positive", "negative"):
        for role, column in (("context", f"{side}_context"), ("module", f"{side}_module_text")):
            for text in table[column]:
                for piece in scorer.view.pieces(text, role):
                    scorer.memory.put(text_key(role, piece), vector(text_key(role, piece)))
    return scorer


def listed(value):
    if isinstance(value, np.ndarray):
        return value.astype(np.float64).tolist()
    if isinstance(value, (list, tuple)):
        return [listed(v) for v in value]
    if isinstance(value, dict):
        return {k: listed(v) for k, v in value.items()}
    return value


def scores_of(folder: Path, normalize: bool) -> dict:
    """Every path's scores of the test pairs."""
    scorer = scorer_of(folder, normalize)
    table = pairs()
    contexts, texts, modules = table["positive_context"].to_list(), table["positive_module_text"].to_list(), table["target_module"].to_list()
    scored = scorer.rewards(contexts, texts, modules)
    found = {
        "reward": scored.rewards, "raw": scored.raw, "uncertainty": scored.uncertainty, "raw_uncertainty": scored.raw_uncertainty,
        "round_rewards": scored.round_rewards, "score": scorer.score(contexts, texts, modules),
        "trajectory": scorer.score_trajectory(contexts[0], {m: t for m, t in zip(modules[:4], texts[:4])}),
        "heads": scored.parts["heads"],
    }  # fmt: skip
    if not normalize:
        vectors = piece_features(HashedVectors(), table, scorer.view).pair_vectors()
        positive, negative = pair_scores(scorer, vectors, table)
        found.update(
            pair_members=[positive.members, negative.members], pair_reward=[positive.reward, negative.reward],
            pair_parts={name: [positive.parts[name], negative.parts[name]] for name in positive.parts},
        )  # fmt: skip
        if not scorer.view.attention:
            by_vectors = scorer.score_vectors(vectors.positive_context, vectors.positive_module_text, modules, contexts, texts)
            found["vectors_heads"] = by_vectors.parts["heads"]
            # the vectors' reward is the blend, as evaluation's pair scores give it
            np.testing.assert_allclose(by_vectors.raw, positive.reward, rtol=1e-6, atol=1e-6)
    return listed(found)


def today(checkpoints: dict[str, Path]) -> dict:
    return {name: {str(normalize): scores_of(folder, normalize) for normalize in (False, True)} for name, folder in checkpoints.items()}


def assert_same(found, expected, where: str) -> None:
    if isinstance(expected, dict):
        assert set(found) == set(expected), f"{where}: {sorted(found)} != {sorted(expected)}"
        for key in expected:
            assert_same(found[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list) and expected and isinstance(expected[0], list):
        assert len(found) == len(expected), where
        for i, (f, e) in enumerate(zip(found, expected)):
            assert_same(f, e, f"{where}[{i}]")
    elif expected is None:
        assert found is None, where
    else:
        np.testing.assert_allclose(np.asarray(found, np.float64), np.asarray(expected, np.float64), rtol=1e-6, atol=1e-6, err_msg=where)


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_scoring_path_gives_the_scores_of_before(checkpoints, kind):
    expected = json.loads(GOLDEN.read_text())[kind]
    for normalize in (False, True):
        assert_same(scores_of(checkpoints[kind], normalize), expected[str(normalize)], f"{kind} normalize={normalize}")


def test_no_rows_score_to_empty_arrays(checkpoints):
    for kind, folder in checkpoints.items():
        scored = scorer_of(folder, normalize=True).rewards([], [], [])
        assert scored.rewards.shape == scored.uncertainty.shape == (0,) and all(part.shape == (0,) for part in scored.parts.values()), kind
        assert scored.round_rewards == ([] if KINDS[kind][1] == "rounds" else None), kind


def test_vectors_score_the_blend_which_needs_the_texts_of_a_tfidf_part_and_rounds_read_pieces(checkpoints):
    vectors = np.ones((1, DIM), np.float32)
    with pytest.raises(ScoringError, match="reads the texts"):
        scorer_of(checkpoints["ensemble-truncate-blended"], False).score_vectors(vectors, vectors, ["planner"])
    with pytest.raises(ScoringError, match="rounds view"):
        scorer_of(checkpoints["single-rounds"], False).score_vectors(vectors, vectors, ["planner"])


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as root:
        made = {name: make_checkpoint(Path(root) / name, *kind, seed=i) for i, (name, kind) in enumerate(KINDS.items())}
        GOLDEN.write_text(json.dumps(today(made)) + "\n")
    print(f"wrote {GOLDEN}", file=sys.stderr)
