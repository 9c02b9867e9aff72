"""The lexical part of a reward (heads/lexical.py): a TF-IDF model blended with the heads at a
weight chosen on validation pairs, saved in the checkpoint and applied by every scoring path."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from reward_checkpoint import checkpoint_config

from data import load_pairs
from heads.lexical import LEXICAL_FILES, Blend, Lexical, TfidfModel, choose_lexical
from pipeline.cli import main
from pipeline.rewards import load
from pipeline.train_heads import train_heads


@pytest.fixture(scope="module")
def pairs(reward_checkpoint):
    return load_pairs(reward_checkpoint / "train.jsonl"), load_pairs(reward_checkpoint / "val.jsonl")


def test_a_saved_tfidf_model_scores_exactly_as_the_fitted_one(pairs, tmp_path):
    train, val = pairs
    model = TfidfModel.fit(train)
    model.save(tmp_path)
    again = TfidfModel.load(tmp_path)
    for fitted, loaded in zip(model.scores(val), again.scores(val)):
        np.testing.assert_array_equal(fitted, loaded)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(LEXICAL_FILES)


def test_the_blend_weight_is_chosen_on_validation_and_heads_that_rank_perfectly_keep_it_at_zero(pairs):
    train, val = pairs
    model = TfidfModel.fit(train)
    rng = np.random.default_rng(0)
    train_heads_scores = (rng.normal(size=train.height), rng.normal(size=train.height))

    perfect = (np.full(val.height, 5.0) + rng.normal(0, 0.1, val.height), rng.normal(0, 0.1, val.height))
    lexical, rows = choose_lexical(model, train_heads_scores, perfect, train, val)
    assert lexical is None and rows[0] == {"weight": 0.0, "val_pairwise_accuracy": 1.0}

    flat = (np.zeros(val.height), np.zeros(val.height))  # heads that tell no pair apart (a tie counts wrong)
    lexical, rows = choose_lexical(model, train_heads_scores, flat, train, val)
    assert [row["weight"] for row in rows] == [round(0.1 * k, 1) for k in range(11)]
    best = max(row["val_pairwise_accuracy"] for row in rows)
    assert lexical is not None and lexical.blend.weight > 0
    chosen = next(row for row in rows if row["weight"] == lexical.blend.weight)
    assert chosen["val_pairwise_accuracy"] == best and best > rows[0]["val_pairwise_accuracy"]
    assert all(row["val_pairwise_accuracy"] < best for row in rows if row["weight"] < lexical.blend.weight)  # ties keep the smaller weight


def test_blending_standardises_each_part_and_scales_the_members_spread():
    blend = Blend(weight=0.25, head_mean=1.0, head_std=2.0, lexical_mean=-1.0, lexical_std=4.0)
    head, lexical = np.array([3.0, 1.0]), np.array([3.0, -1.0])
    np.testing.assert_allclose(blend(head, lexical), [0.75 * 1.0 + 0.25 * 1.0, 0.0], atol=1e-6)
    members = np.array([[3.0, 1.0], [5.0, 1.0]])  # (members, rows): the same TF-IDF score for each member
    blended = blend(members, lexical)
    np.testing.assert_allclose(blended.std(axis=0), members.std(axis=0) * 0.75 / 2.0, atol=1e-6)


def test_train_heads_blends_tfidf_with_heads_that_learned_nothing_and_every_scoring_path_applies_it(reward_checkpoint, tmp_path):
    root = reward_checkpoint
    # a learning rate that leaves the heads at their random start: the TF-IDF part must carry the ranking
    config = checkpoint_config().override({"stage_0.lr": 1e-9, "stage_0.epochs": 1})
    train_heads([root / "train.jsonl"], root / "cache", tmp_path / "ckpt", config, val_file=root / "val.jsonl", progress=False)
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert saved["lexical"]["weight"] > 0 and all((tmp_path / "ckpt" / name).is_file() for name in LEXICAL_FILES)
    chosen = next(row for row in saved["lexical_blend"] if row["weight"] == saved["lexical"]["weight"])
    assert chosen["val_pairwise_accuracy"] > saved["lexical_blend"][0]["val_pairwise_accuracy"]

    scorer = load(tmp_path / "ckpt", root / "cache", device="cpu")
    val = load_pairs(root / "val.jsonl")
    texts = val["positive_context"].to_list(), val["positive_module_text"].to_list(), val["target_module"].to_list()
    lexical, scorer.lexical = scorer.lexical, None
    heads_alone = scorer.score(*texts)
    scorer.lexical = lexical
    expected = lexical.blend(heads_alone, lexical.model.score_texts(texts[0], texts[1]))
    np.testing.assert_allclose(scorer.score(*texts), expected, atol=1e-5)
    positive, _ = scorer.score_pair_vectors(scorer.pair_vectors(val)[0], val)  # evaluation's path
    np.testing.assert_allclose(positive, expected, atol=1e-5)

    report = tmp_path / "report"
    result = CliRunner().invoke(main, ["evaluate", str(tmp_path / "ckpt"), str(root / "val.jsonl"), "--cache", str(root / "cache"), "--out", str(report)])
    assert result.exit_code == 0, result.output
    accuracy = json.loads((report / "report.json").read_text())["overall"]["pairwise_accuracy"]
    assert accuracy == pytest.approx(chosen["val_pairwise_accuracy"])

    # evaluate's TF-IDF baseline is the checkpoint's own lexical part (weight 1), not a refit: it
    # needs no training files
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps({**saved, "train_files": [str(tmp_path / "moved.jsonl")]}))
    result = CliRunner().invoke(main, ["evaluate", str(tmp_path / "ckpt"), str(root / "val.jsonl"), "--cache", str(root / "cache"), "--out", str(tmp_path / "report2")])
    assert result.exit_code == 0, result.output
    overall = json.loads((tmp_path / "report2" / "report.json").read_text())["overall"]
    assert overall["baselines"]["tfidf"]["pairwise_accuracy"] == pytest.approx(saved["lexical_blend"][-1]["val_pairwise_accuracy"])
    assert "logistic_regression" not in overall["baselines"] and "no logistic-regression baseline" in result.output + (tmp_path / "report2" / "report.md").read_text()


def test_lexical_off_trains_heads_alone(reward_checkpoint, tmp_path):
    root = reward_checkpoint
    config = checkpoint_config().override({"model.lexical": "off"})
    train_heads([root / "train.jsonl"], root / "cache", tmp_path / "ckpt", config, val_file=root / "val.jsonl", progress=False)
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert "lexical" not in saved and "lexical_blend" not in saved
    assert not any((tmp_path / "ckpt" / name).exists() for name in LEXICAL_FILES)
    assert load(tmp_path / "ckpt", device="cpu").lexical is None


def test_a_damaged_lexical_file_is_a_clear_error_naming_the_checkpoint(reward_checkpoint, pairs, tmp_path):
    train, val = pairs
    folder = tmp_path / "ckpt"
    shutil.copytree(reward_checkpoint / "plain", folder)
    saved = json.loads((folder / "config.json").read_text())
    for name in LEXICAL_FILES:
        (folder / name).unlink(missing_ok=True)
    lexical = Lexical(TfidfModel.fit(train), Blend(0.5, 0.0, 1.0, 0.0, 1.0))
    lexical.save(folder)
    (folder / "config.json").write_text(json.dumps({**saved, "lexical": lexical.record()}))
    assert load(folder, device="cpu").lexical is not None

    weights = folder / LEXICAL_FILES[1]
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    records = tmp_path / "in.jsonl"
    records.write_text(json.dumps({"context": val["positive_context"][0], "modules": {val["target_module"][0]: val["positive_module_text"][0]}}) + "\n")
    result = CliRunner().invoke(main, ["score", str(folder), str(records), "--out", str(tmp_path / "out.jsonl")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert str(folder) in result.output and "TF-IDF" in result.output and LEXICAL_FILES[1] in result.output
    assert not (tmp_path / "out.jsonl").exists()
