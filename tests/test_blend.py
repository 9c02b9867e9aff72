"""The reward as a blend (heads/blend.py): the heads, a linear part and a TF-IDF part at weights
chosen on held-out pairs (validation, and training pairs out of fold), saved in the checkpoint and
applied by every scoring path."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from reward_checkpoint import checkpoint_config, record_of
from sklearn.feature_extraction.text import TfidfVectorizer

from data import load_pairs
from features.pairs import PairVectors
from heads.baselines import TfidfBaseline
from heads.checkpoint import migrate
from heads.blend import (
    _VECTORIZER, GRID, LINEAR_WEIGHTS, MAX_PAIRS, ENDED_BLOCKS, PARTS, TFIDF_BLOCKS, TFIDF_WEIGHTS, VOCABULARY, Z_CLEAR, Blend, Blended, LinearModel, PartScores, TfidfModel,
    _clustered_z, blend_sample, blend_weights, choose_weights, describe_reward, episode_end, reward_formula, task_folds,
)  # fmt: skip
from pipeline.cli import main
from pipeline.evaluate_scoring import cached_pair_vectors, pair_scores
from pipeline.rewards import load
from pipeline.train_heads import train_heads

BLEND_FILES = (LINEAR_WEIGHTS, VOCABULARY, TFIDF_WEIGHTS)


@pytest.fixture(scope="module")
def pairs(reward_checkpoint):
    return load_pairs(reward_checkpoint / "train.jsonl"), load_pairs(reward_checkpoint / "val.jsonl")


def random_vectors(n: int, modules: list[str], seed: int = 0) -> PairVectors:
    rng = np.random.default_rng(seed)
    return PairVectors(*(rng.normal(size=(n, 8)).astype(np.float32) for _ in range(4)), target_module=np.array(modules * (n // len(modules))))


def test_saved_parts_score_exactly_as_the_fitted_ones(pairs, tmp_path):
    train, val = pairs
    tfidf = TfidfModel.fit(train, blocks=ENDED_BLOCKS)
    linear = LinearModel.fit(random_vectors(40, ["planner", "executor"]), ["planner", "executor", "memory"])
    Blended(Blend((0.5, 0.25, 0.25)), linear, tfidf).save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(BLEND_FILES)
    loaded_tfidf = TfidfModel.load(tmp_path)
    assert loaded_tfidf.blocks == ENDED_BLOCKS and len(tfidf.weights) == sum(len(v.vocabulary_) for v in tfidf.vectorizers.values())
    for fitted, loaded in zip(tfidf.scores(val), loaded_tfidf.scores(val)):
        np.testing.assert_array_equal(fitted, loaded)
    test = random_vectors(20, ["planner", "executor", "memory", "reflection"], seed=1)
    for fitted, loaded in zip(linear.scores(test), LinearModel.load(tmp_path).scores(test)):
        np.testing.assert_array_equal(fitted, loaded)
        assert np.isnan(fitted[test.target_module == "reflection"]).all()  # never fitted: NaN, the blend reads it as the part's mean
        assert np.isnan(fitted[test.target_module == "memory"]).all() and not np.isnan(fitted[test.target_module == "planner"]).any()


def test_episode_end_is_the_last_round_without_its_header():
    text = "Task: t\n[Round 1]\n<action>ls</action>\n[Round 2]\n<action>cat [Round 3]\n</action>\n<tool results>Error</tool results>"
    assert episode_end(text) == "<action>cat [Round 3]\n</action>\n<tool results>Error</tool results>"  # a header starts a line
    assert episode_end("no rounds here") == "no rounds here"
    assert episode_end("[Round 12]\n") == ""


def test_the_tfidf_part_reads_the_episode_end_and_the_baseline_does_not(pairs):
    train, val = pairs
    plain, part = TfidfModel.fit(train), TfidfModel.fit(train, blocks=ENDED_BLOCKS)
    assert plain.blocks == TFIDF_BLOCKS and part.blocks == TFIDF_BLOCKS + ("context_end",)
    endings = [episode_end(text) for text in (*train["positive_context"], *train["negative_context"])]
    assert part.vectorizers["context_end"].vocabulary_ == TfidfVectorizer(**_VECTORIZER).fit(endings).vocabulary_
    assert endings != list(train["positive_context"]) + list(train["negative_context"])  # the fixture's contexts have rounds
    # a new last round moves the part's score through its ending too, not only through the whole text
    longer = val.with_columns(positive_context=val["positive_context"] + "\n[Round 99]\n" + val["negative_module_text"])
    ending_moved = part.scores(longer)[0] - part.scores(val)[0]
    plain_moved = plain.scores(longer)[0] - plain.scores(val)[0]
    assert not np.allclose(ending_moved, plain_moved)


def test_a_difference_is_clear_by_tasks_not_by_pairs():
    assert _clustered_z(np.ones(4), np.array(["a"] * 4)) == 1.0  # one task four times: one observation
    assert _clustered_z(np.ones(4), np.array(["a", "b", "c", "d"])) == 2.0 > Z_CLEAR  # four tasks
    assert _clustered_z(np.array([1, -1, 0, 0]), np.array(["a", "a", "b", "b"])) == 0.0
    assert _clustered_z(np.array([1, 1, -1]), np.array(["a", "b", "c"])) == pytest.approx(1 / np.sqrt(3))


def test_the_weights_are_the_grid_point_of_highest_held_out_accuracy_and_ties_prefer_the_heads():
    rng = np.random.default_rng(0)
    noise = lambda: (rng.normal(size=200), rng.normal(size=200))  # noqa: E731
    perfect = (np.full(200, 5.0) + rng.normal(0, 0.1, 200), rng.normal(0, 0.1, 200))
    weights, rows = choose_weights(PartScores(perfect, noise(), noise()), [True, True, True])
    assert weights == (1.0, 0.0, 0.0) and rows[0]["pairwise_accuracy"] == 1.0 and len(rows) == len(GRID) == 66

    flat = (np.zeros(200), np.zeros(200))  # heads that tell no pair apart (a tie counts wrong)
    weights, rows = choose_weights(PartScores(flat, noise(), perfect), [True, True, True])
    best = max(row["pairwise_accuracy"] for row in rows)
    chosen = next(k for k, row in enumerate(rows) if tuple(row["weights"].values()) == weights)
    assert rows[chosen]["pairwise_accuracy"] == best == 1.0 and weights[2] > 0
    assert all(row["pairwise_accuracy"] < best for row in rows[:chosen])  # the first best in GRID order
    assert list(rows[0]["weights"]) == list(PARTS) and all(abs(sum(row["weights"].values()) - 1) < 1e-9 for row in rows)

    weights, rows = choose_weights(PartScores(flat, noise(), perfect), [True, True, False])  # TF-IDF with no spread
    assert weights[2] == 0 and all(row["weights"]["tfidf"] == 0 for row in rows)
    weights, rows = choose_weights(PartScores(flat, flat, flat), [False, False, False])  # nothing to blend: the heads alone
    assert weights == (1.0, 0.0, 0.0) and len(rows) == 1


def test_blending_standardises_each_part_and_scales_the_members_spread():
    blend = Blend((0.5, 0.25, 0.25), means=(1.0, 0.0, -1.0), stds=(2.0, 1.0, 4.0))
    heads, linear, tfidf = np.array([3.0, 1.0]), np.array([2.0, 0.0]), np.array([3.0, -1.0])
    np.testing.assert_allclose(blend(heads, linear, tfidf), [0.5 * 1.0 + 0.25 * 2.0 + 0.25 * 1.0, 0.0], atol=1e-6)
    assert np.isnan(blend(np.array([np.nan]), np.array([0.0]), np.array([0.0]))).all()  # a damaged vector is no reward
    unseen = Blended(blend, LinearModel({"planner": np.ones(3, np.float32)}))  # a module without training pairs scores the part's mean
    np.testing.assert_allclose(unseen.linear_scores(np.ones((2, 1)), np.ones((2, 1)), ["planner", "memory"]), [3.0, 0.0])
    members = np.array([[3.0, 1.0], [5.0, 1.0]])  # (members, rows): the same other parts for each member
    np.testing.assert_allclose(blend(members, linear, tfidf).std(axis=0), members.std(axis=0) * 0.5 / 2.0, atol=1e-6)
    # a checkpoint from before the linear part: TF-IDF at weight w beside the heads
    old = Blend.from_record(migrate({"lexical": {"weight": 0.3, "head_mean": 1.0, "head_std": 2.0, "lexical_mean": -1.0, "lexical_std": 4.0, "files": []}})["blend"])
    assert old == Blend((0.7, 0.0, 0.3), (1.0, 0.0, -1.0), (2.0, 1.0, 4.0))
    assert Blend.from_record(blend.record()) == blend


def test_task_folds_keep_each_task_in_one_fold_and_use_every_fold():
    groups = np.array([f"task-{k % 13}" for k in range(100)])
    fold = task_folds(groups, 5, seed=0)
    assert set(fold.tolist()) == set(range(5))
    for task in np.unique(groups):
        assert len(set(fold[groups == task].tolist())) == 1
    np.testing.assert_array_equal(fold, task_folds(groups, 5, seed=0))


def choice_record(weights, tfidf_blocks=TFIDF_BLOCKS, training_pairs=800) -> dict:
    """A `blend_choice` as train-heads records it (the keys the description reads)."""
    return {
        "training_pairs": training_pairs, "held_out_pairs": {"validation": 100, "out_of_fold": 800, "folds": 5},
        "chosen": {"weights": dict(zip(PARTS, weights)), "pairwise_accuracy": 0.78, "val_pairwise_accuracy": 0.76},
        "tfidf_blocks": list(tfidf_blocks), "parts_alone": {"heads": 0.66, "linear": 0.62, "tfidf": 0.77},
    }  # fmt: skip


def test_the_reward_is_described_in_words_for_every_kind_of_checkpoint():
    held_out = "on the 900 held-out pairs the weights were chosen on: heads alone 0.660, linear alone 0.620, TF-IDF alone 0.770, reward 0.780"
    # the heads left out: why, and every part's held-out accuracy beside the reward's
    config = {"blend": Blend((0.0, 0.5, 0.5)).record(), "blend_choice": choice_record((0.0, 0.5, 0.5))}
    assert describe_reward(record_of(config)) == (
        "reward = 0.5 × linear + 0.5 × TF-IDF; the heads weigh 0: trained on 800 pairs, every blend that gave them weight did "
        f"worse on held-out pairs; {held_out}"
    )
    assert reward_formula(record_of(config)) == "0.5 × linear + 0.5 × TF-IDF" and blend_weights(record_of(config)) == {"heads": 0.0, "linear": 0.5, "tfidf": 0.5}
    # all three parts, the TF-IDF part reading the episode's end
    config = {"blend": Blend((0.4, 0.3, 0.3)).record(), "blend_choice": choice_record((0.4, 0.3, 0.3), ENDED_BLOCKS)}
    assert describe_reward(record_of(config)) == f"reward = 0.4 × heads + 0.3 × linear + 0.3 × TF-IDF (TF-IDF reads the episode's end too); {held_out}"
    # a part of weight 0; above MAX_PAIRS the linear part is not fitted, so its accuracy alone means nothing
    config = {"blend": Blend((0.6, 0.0, 0.4)).record(), "blend_choice": choice_record((0.6, 0.0, 0.4), training_pairs=MAX_PAIRS + 1)}
    assert describe_reward(record_of(config)) == (
        "reward = 0.6 × heads + 0.4 × TF-IDF; the linear part weighs 0 (not fitted above 20,000 training pairs); "
        "on the 900 held-out pairs the weights were chosen on: heads alone 0.660, TF-IDF alone 0.770, reward 0.780"
    )
    # the heads alone won on the held-out pairs: no blend record, but the choice says why
    config = {"blend_choice": choice_record((1.0, 0.0, 0.0))}
    assert describe_reward(record_of(config)) == f"reward = the heads alone: no blend with the linear or TF-IDF part did better on held-out pairs; {held_out}"
    assert reward_formula(record_of(config)) == "the heads alone" and blend_weights(record_of(config)) is None
    # no blend at all, and why when the checkpoint says
    assert describe_reward(record_of({})) == "reward = the heads alone (no blend)"
    assert describe_reward(record_of({"training_config": {"model": {"blend": "off"}}})) == "reward = the heads alone (no blend: model.blend is off)"
    assert describe_reward(record_of({"stage": 1})) == "reward = the heads alone (a stage 1 checkpoint: its encoder changed the heads' scale, so no blend)"
    # a blend without its choice (made by hand), and the `lexical` record of checkpoints from before the linear part
    assert describe_reward(record_of({"blend": Blend((0.5, 0.0, 0.5)).record()})) == "reward = 0.5 × heads + 0.5 × TF-IDF; the linear part weighs 0"
    old = {"lexical": {"weight": 0.3, "head_mean": 1.0, "head_std": 2.0, "lexical_mean": -1.0, "lexical_std": 4.0, "files": []}}
    assert describe_reward(record_of(old)) == "reward = 0.7 × heads + 0.3 × TF-IDF; no linear part (a checkpoint from before it)"
    assert blend_weights(record_of(old)) == {"heads": 0.7, "linear": 0.0, "tfidf": 0.3}


@pytest.mark.slow  # train-heads or evaluate end to end
def test_train_heads_blends_the_parts_with_heads_that_learned_nothing_and_every_scoring_path_applies_it(reward_checkpoint, tmp_path):
    root = reward_checkpoint
    # a learning rate that leaves the heads at their random start: the other parts must carry the
    # ranking; the argmax rule, whose choice this test checks point by point in the grid's table
    config = checkpoint_config().override({"stage_0.lr": 1e-9, "stage_0.epochs": 1, "model.blend_rule": "argmax"})
    result = train_heads(files=[root / "train.jsonl"], cache_dir=root / "cache", out=tmp_path / "ckpt", config=config, val_file=root / "val.jsonl", progress=False)
    folder = tmp_path / "ckpt"
    saved = json.loads((folder / "config.json").read_text())
    choice = saved["blend_choice"]
    train, val = load_pairs(root / "train.jsonl"), load_pairs(root / "val.jsonl")
    # held out: the validation pairs and every training pair, scored by parts fitted without its task
    assert choice["held_out_pairs"] == {"validation": val.height, "out_of_fold": train.height, "folds": 5} and choice["training_pairs"] == train.height
    # what train-heads says the reward is: the weights it chose, each part's held-out accuracy beside the reward's
    assert result.reward == describe_reward(record_of(saved)) and result.reward.startswith(f"reward = {reward_formula(record_of(saved))}")
    assert f"heads alone {choice['parts_alone']['heads']:.3f}" in result.reward and f"reward {choice['chosen']['pairwise_accuracy']:.3f}" in result.reward
    assert saved["blend"]["heads"]["weight"] < 1 and all((folder / name).is_file() for name in saved["blend"]["files"])
    table = [json.loads(line) for line in (folder / "blend.jsonl").read_text().splitlines()]
    # every grid point with each TF-IDF choice; the ended one is kept only when clearly better
    assert len(table) == 2 * 66 and [c["blocks"] for c in choice["tfidf_choices"]] == [list(TFIDF_BLOCKS), list(ENDED_BLOCKS)]
    kept = ENDED_BLOCKS if choice["tfidf_z"] > Z_CLEAR else TFIDF_BLOCKS
    assert choice["tfidf_blocks"] == list(kept) and TfidfModel.load(folder).blocks == kept
    assert choice["chosen"]["pairwise_accuracy"] == max(row["pairwise_accuracy"] for row in table if row["tfidf_blocks"] == list(kept))
    assert choice["chosen"]["pairwise_accuracy"] > table[0]["pairwise_accuracy"]  # better than the heads alone

    scorer = load(folder, root / "cache", device="cpu")
    texts = val["positive_context"].to_list(), val["positive_module_text"].to_list(), val["target_module"].to_list()
    blended = scorer.blend
    heads_alone = scorer.rewards(*texts).parts["heads"]
    linear = blended.linear_scores(scorer.vectors(texts[0], ["context"] * val.height), scorer.vectors(texts[1], ["module"] * val.height), texts[2])
    tfidf = blended.tfidf.score_texts(texts[0], texts[1]) if blended.tfidf else None
    expected = blended.blend(heads_alone, linear, tfidf)
    np.testing.assert_allclose(scorer.score(*texts), expected, atol=1e-5)
    positive, _ = pair_scores(scorer, cached_pair_vectors(scorer, val)[0], val)  # evaluation's path
    np.testing.assert_allclose(positive.reward, expected, atol=1e-5)

    report = tmp_path / "report"
    result = CliRunner().invoke(main, ["evaluate", str(folder), str(root / "val.jsonl"), "--cache", str(root / "cache"), "--out", str(report)])
    assert result.exit_code == 0, result.output
    overall = json.loads((report / "report.json").read_text())["overall"]
    assert overall["pairwise_accuracy"] == pytest.approx(choice["chosen"]["val_pairwise_accuracy"])

    # the TF-IDF baseline is a plain TF-IDF: the part alone when it is one, else fitted on the training pairs
    assert saved["blend"]["tfidf"]["weight"] > 0
    plain = TfidfBaseline.fit(train).scores(val)
    assert overall["baselines"]["tfidf"]["pairwise_accuracy"] == pytest.approx(float(np.mean(plain[0] > plain[1])))

    # the linear baseline is the checkpoint's own part, not a refit: it needs no training files
    (folder / "config.json").write_text(json.dumps({**saved, "train_files": [str(tmp_path / "moved.jsonl")]}))
    result = CliRunner().invoke(main, ["evaluate", str(folder), str(root / "val.jsonl"), "--cache", str(root / "cache"), "--out", str(tmp_path / "report2")])
    assert result.exit_code == 0, result.output
    report2 = json.loads((tmp_path / "report2" / "report.json").read_text())
    baselines = report2["overall"]["baselines"]
    if saved["blend"]["linear"]["weight"] > 0:
        assert baselines["logistic_regression"]["pairwise_accuracy"] == pytest.approx(choice["parts_alone_validation"]["linear"])
    if kept == ENDED_BLOCKS:
        assert "tfidf" not in baselines and "no TF-IDF baseline: the checkpoint's training files are not readable here" in " ".join(report2["notes"])
    else:
        assert baselines["tfidf"]["pairwise_accuracy"] == pytest.approx(choice["parts_alone_validation"]["tfidf"])


def test_blend_off_trains_heads_alone(reward_checkpoint, tmp_path):
    root = reward_checkpoint
    config = checkpoint_config().override({"model.blend": "off"})
    result = train_heads(files=[root / "train.jsonl"], cache_dir=root / "cache", out=tmp_path / "ckpt", config=config, val_file=root / "val.jsonl", progress=False)
    assert result.reward == "reward = the heads alone (no blend: model.blend is off)"
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert "blend" not in saved and "blend_choice" not in saved
    assert not any((tmp_path / "ckpt" / name).exists() for name in (*BLEND_FILES, "blend.jsonl"))
    assert load(tmp_path / "ckpt", device="cpu").blend is None


@pytest.mark.slow  # train-heads or evaluate end to end
def test_with_an_ended_tfidf_part_evaluate_fits_a_plain_tfidf_baseline(reward_checkpoint, pairs, tmp_path):
    root, (train, val) = reward_checkpoint, pairs
    folder = tmp_path / "ckpt"
    shutil.copytree(root / "plain", folder)
    saved = {key: value for key, value in json.loads((folder / "config.json").read_text()).items() if key not in ("blend", "lexical")}
    part = TfidfModel.fit(train, blocks=ENDED_BLOCKS)
    blended = Blended(Blend((0.5, 0.0, 0.5), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)), None, part)
    blended.save(folder)
    (folder / "config.json").write_text(json.dumps({**saved, "blend": blended.record()}))
    result = CliRunner().invoke(main, ["evaluate", str(folder), str(root / "val.jsonl"), "--cache", str(root / "cache"), "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    plain, ended = TfidfBaseline.fit(train).scores(val), part.scores(val)
    assert report["overall"]["baselines"]["tfidf"]["pairwise_accuracy"] == pytest.approx(float(np.mean(plain[0] > plain[1])))
    assert float(np.mean(plain[0] > plain[1])) != float(np.mean(ended[0] > ended[1]))  # so the line above tells them apart
    assert any("the TF-IDF baseline is a plain one" in note for note in report["notes"])


@pytest.mark.parametrize("damaged", [LINEAR_WEIGHTS, TFIDF_WEIGHTS])
def test_a_damaged_blend_file_is_a_clear_error_naming_the_checkpoint(reward_checkpoint, pairs, tmp_path, damaged):
    train, val = pairs
    folder = tmp_path / "ckpt"
    shutil.copytree(reward_checkpoint / "plain", folder)
    saved = {key: value for key, value in json.loads((folder / "config.json").read_text()).items() if key not in ("blend", "lexical")}
    blended = Blended(Blend((0.5, 0.25, 0.25)), LinearModel.fit(random_vectors(40, ["planner", "executor"]), ["planner", "executor"]), TfidfModel.fit(train))
    blended.save(folder)
    (folder / "config.json").write_text(json.dumps({**saved, "blend": blended.record()}))
    assert load(folder, device="cpu").blend is not None

    weights = folder / damaged
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    records = tmp_path / "in.jsonl"
    records.write_text(json.dumps({"context": val["positive_context"][0], "modules": {val["target_module"][0]: val["positive_module_text"][0]}}) + "\n")
    result = CliRunner().invoke(main, ["score", str(folder), str(records), "--out", str(tmp_path / "out.jsonl")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert str(folder) in result.output and damaged in result.output
    assert not (tmp_path / "out.jsonl").exists()


def test_a_checkpoint_from_before_the_linear_part_scores_with_its_tfidf_part(reward_checkpoint, pairs, tmp_path):
    train, val = pairs
    folder = tmp_path / "ckpt"
    shutil.copytree(reward_checkpoint / "plain", folder)
    saved = {key: value for key, value in json.loads((folder / "config.json").read_text()).items() if key not in ("blend", "lexical")}
    tfidf = TfidfModel.fit(train)
    tfidf.save(folder)
    vocabulary = json.loads((folder / VOCABULARY).read_text())
    del vocabulary["blocks"]  # as saved before the blocks were recorded
    (folder / VOCABULARY).write_text(json.dumps(vocabulary))
    record = {"weight": 0.4, "head_mean": 0.0, "head_std": 1.0, "lexical_mean": 0.0, "lexical_std": 2.0, "files": [VOCABULARY, TFIDF_WEIGHTS]}
    saved.pop("format_version")  # format 1, which had the `lexical` record
    (folder / "config.json").write_text(json.dumps({**saved, "lexical": record}))
    scorer = load(folder, device="cpu")
    texts = val["positive_context"].to_list(), val["positive_module_text"].to_list(), val["target_module"].to_list()
    heads_alone = scorer.rewards(*texts).parts["heads"]
    np.testing.assert_allclose(scorer.score(*texts), 0.6 * heads_alone + 0.4 * tfidf.score_texts(texts[0], texts[1]) / 2.0, atol=1e-5)


def test_the_parts_read_a_seeded_sample_of_a_large_split_and_know_its_size(pairs):
    train, _ = pairs
    sample = blend_sample(train, seed=3, max_pairs=10)
    assert len(sample.rows) == sample.pairs.height == 10 and sample.total == train.height  # above the cap: validation alone chooses
    assert (np.diff(sample.rows) > 0).all() and sample.groups.tolist() == train["task"].to_numpy()[sample.rows].tolist()
    assert sample.pairs["positive_context"].to_list() == train["positive_context"].to_numpy()[sample.rows].tolist()
    np.testing.assert_array_equal(sample.rows, blend_sample(train, seed=3, max_pairs=10).rows)
    whole = blend_sample(train)
    assert whole.total == whole.pairs.height == train.height and whole.total <= MAX_PAIRS  # out of fold when fit_blend gets fit_fold


def test_above_max_pairs_the_blend_has_no_linear_part_and_no_out_of_fold_pairs(reward_checkpoint, tmp_path):
    """A split larger than the parts' sample: the heads have the data they are built for, so the
    weights are chosen on validation alone and the linear part (pooled vectors and features of
    the sample, more memory than the matrix at 100k pairs) is left out."""
    from dataclasses import replace

    from cache import EmbeddingCache
    from features.pairs import with_text_keys
    from features.views import View
    from heads.blend import fit_blend
    from heads.model import MultiModuleRewardModel
    from heads.training import PairTensors
    from pipeline.train_heads import read_features

    config = checkpoint_config()
    train, val = (with_text_keys(load_pairs(reward_checkpoint / f"{name}.jsonl")) for name in ("train", "val"))
    namespace = EmbeddingCache(reward_checkpoint / "cache").select("minilm")
    features = read_features(namespace, train, val, View.from_config(config.features, config.model), 4096, tmp_path)
    heads = MultiModuleRewardModel(namespace.dimension, config.data.modules)
    data = {name: PairTensors.from_pieces(features[name], heads) for name in ("train", "val")}
    large = replace(blend_sample(train), total=MAX_PAIRS + 1)
    folds_fitted = []
    blended, summary = fit_blend(heads, large, blend_sample(val), data["train"], data["val"], config.data.modules, lambda rows: folds_fitted.append(rows) or heads,
                                 rule=config.model.blend_rule)  # fmt: skip
    assert folds_fitted == [] and summary["held_out_pairs"] == {"validation": val.height, "out_of_fold": 0, "folds": 0}
    assert all(row["weights"]["linear"] == 0 for row in summary["table"]) and len(summary["table"]) == 2 * 11  # per TF-IDF choice
    assert blended is None or blended.linear is None


def test_each_rule_weighs_the_parts_as_it_says():
    """The blend rules on made-up held-out scores: the TF-IDF part ranks every pair right, the
    heads two in three, the linear part none."""
    from heads.blend import HEADS_PAY_OFF, RULES, SHRINK_TASKS, PartScores, rule_weights
    from heads.metrics import pairwise_accuracy

    n = 300
    right, wrong = (np.ones(n), np.zeros(n)), (np.zeros(n), np.ones(n))
    heads = (np.where(np.arange(n) % 3 == 0, 0.0, 1.0), np.where(np.arange(n) % 3 == 0, 1.0, 0.0))
    scores = PartScores(heads=heads, linear=wrong, tfidf=right)
    groups = np.arange(n) // 3  # 100 tasks
    chosen = {rule: rule_weights(rule, scores, groups, [True, True, True])[0] for rule in RULES}
    assert chosen["best_part"] == (0.0, 0.0, 1.0)
    assert chosen["equal"] == (0.34, 0.33, 0.33)  # to 0.01, summing to 1
    best = chosen["argmax"]
    assert pairwise_accuracy(*scores.blended(best)) == 1.0 and best[1] == 0.0
    keep = 100 / (100 + SHRINK_TASKS)  # half of the argmax's own weights at 100 held-out tasks
    assert chosen["shrink"] == pytest.approx(tuple(keep * b + (1 - keep) / 3 for b in best), abs=0.01) and sum(chosen["shrink"]) == pytest.approx(1.0)
    assert chosen["stack"][1] == 0.0 and chosen["stack"][2] > chosen["stack"][0] > 0 and sum(chosen["stack"]) == pytest.approx(1.0)
    # an unusable part (no linear part fitted) gets no weight under any rule
    for rule in RULES:
        assert rule_weights(rule, scores, groups, [True, False, True])[0][1] == 0.0
    # nor do the heads when they are left out (the learning curve's reward without heads); with
    # no part usable at all, the heads alone
    assert {rule: rule_weights(rule, scores, groups, [False, True, True])[0][0] for rule in RULES} == dict.fromkeys(RULES, 0.0)
    assert rule_weights("shrink", scores, groups, [False, False, True])[0] == (0.0, 0.0, 1.0)
    assert rule_weights("equal", scores, groups, [False, False, False])[0] == (1.0, 0.0, 0.0)
    # trained on fewer pairs than the heads pay off at, `shrink` moves toward the other parts only
    few, many = (rule_weights("shrink", scores, groups, [True, True, True], pairs)[0] for pairs in (HEADS_PAY_OFF - 1, HEADS_PAY_OFF))
    assert many == chosen["shrink"] and few == pytest.approx(tuple(keep * b + (1 - keep) * e for b, e in zip(best, (0, 0.5, 0.5))), abs=0.01)
    assert rule_weights("shrink", scores, groups, [True, False, False], 10)[0] == (1.0, 0.0, 0.0)  # the heads alone are left
    with pytest.raises(ValueError, match="unknown blend rule 'vote'"):
        rule_weights("vote", scores, groups, [True, True, True])
