"""`pipeline evaluate`: metrics against scikit-learn and by hand, task-level bootstrap, baselines,
the report folder, plots, and the normalisation stored in the checkpoint."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from sklearn.metrics import roc_auc_score

from data import load_pairs, write_pairs
from data.autogpt import import_reports
from data.runs import load_runs, write_runs
from heads.baselines import SourcePrior, TfidfBaseline, length_scores
from heads.metrics import (
    accuracy_difference_ci,
    bootstrap_ci,
    calibration,
    length_debiased_accuracy,
    pair_metrics,
    pairwise_accuracy,
    response_auc,
    separation,
    task_mean,
    weighted_auc,
)
from heads.blend import PART_NAMES, blend_weights, describe_reward
from heads.checkpoint import read_record
from heads.report import chance_verdict, reliability_figure
from pipeline.cli import main
from pipeline.evaluate import EvaluationError, evaluate
from reward_checkpoint import checkpoint_config

MODULES = ["reflection", "planner", "executor", "memory"]


# --- metrics -------------------------------------------------------------------------------------


def test_accuracy_and_auc_agree_with_scikit_learn_on_hand_made_scores():
    positive = np.array([0.9, 0.2, 0.5, 0.7, 0.1])
    negative = np.array([0.1, 0.4, 0.5, 0.3, 0.0])
    # pairs 1 and 4 won, 2 lost, 3 is a tie (counts wrong), 5 won
    assert pairwise_accuracy(positive, negative) == pytest.approx(3 / 5)
    expected = roc_auc_score([1] * 5 + [0] * 5, np.concatenate([positive, negative]))
    assert response_auc(positive, negative) == pytest.approx(expected)


def test_weighted_auc_equals_scikit_learn_with_sample_weights_including_ties():
    rng = np.random.default_rng(3)
    scores = np.round(rng.normal(size=400), 1)  # many ties
    labels = rng.integers(0, 2, 400)
    weights = rng.integers(0, 4, (6, 400)).astype(float)
    expected = [roc_auc_score(labels, scores, sample_weight=w) for w in weights]
    np.testing.assert_allclose(weighted_auc(scores, labels, weights), expected, rtol=1e-12)


def test_a_perfect_scorer_gets_one_and_a_reversed_scorer_zero():
    rng = np.random.default_rng(0)
    positive, negative = rng.uniform(1, 2, 50), rng.uniform(-2, -1, 50)
    groups = np.repeat(np.arange(10), 5)
    perfect = pair_metrics(positive, negative, groups, bootstrap_samples=200)
    assert perfect["pairwise_accuracy"] == 1.0 and perfect["auc"] == 1.0
    assert perfect["ci"]["pairwise_accuracy"] == [1.0, 1.0] and perfect["ci"]["auc"] == [1.0, 1.0]
    reversed_ = pair_metrics(negative, positive, groups, bootstrap_samples=200)
    assert reversed_["pairwise_accuracy"] == 0.0 and reversed_["auc"] == 0.0


def test_separation_and_cohens_d_by_hand():
    positive, negative = np.array([3.0, 5.0]), np.array([1.0, 1.0 + 2.0])
    s = separation(positive, negative)
    assert s["mean_difference"] == pytest.approx(2.0) and s["std_difference"] == pytest.approx(0.0)
    # means 4 and 2, both variances 2 (ddof 1): d = 2 / sqrt(2)
    assert s["cohens_d"] == pytest.approx(2 / math.sqrt(2))


def test_calibration_scores_each_pair_in_both_orders():
    # sigma(ln 3) = 0.75: in one order 0.75 with outcome 1, in the other 0.25 with outcome 0 -> ECE 0.25
    c = calibration(np.full(4, math.log(3)), np.zeros(4), bins=10)
    assert c["ece"] == pytest.approx(0.25)
    filled = [b for b in c["bins"] if b["n"]]
    assert [(b["n"], b["frequency"]) for b in filled] == [(4, 0.0), (4, 1.0)]
    assert calibration(np.zeros(6), np.zeros(6))["ece"] == pytest.approx(0.0)  # 0.5 and a coin: calibrated
    assert calibration(np.full(6, 30.0), np.zeros(6))["ece"] == pytest.approx(0.0, abs=1e-9)  # sure and right


def test_bootstrap_resamples_tasks_not_pairs():
    # two tasks of 50 pairs: one all right, one all wrong. Resampling tasks puts all of one task's
    # pairs in or out together, so the interval spans nearly 0 to 1; resampling pairs would give ~0.4-0.6.
    positive = np.concatenate([np.ones(50), np.zeros(50)])
    negative = np.concatenate([np.zeros(50), np.ones(50)])
    by_task = bootstrap_ci(positive, negative, np.repeat(["a", "b"], 50), samples=400)
    by_pair = bootstrap_ci(positive, negative, np.arange(100), samples=400)
    assert by_task["pairwise_accuracy"] == [0.0, 1.0]
    low, high = by_pair["pairwise_accuracy"]
    assert 0.35 < low < 0.5 < high < 0.65


@pytest.mark.parametrize("seed", range(5))
def test_each_interval_contains_its_point_estimate(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 300))
    positive, negative = rng.normal(0.3, 1, n), rng.normal(0, 1, n)
    metrics = pair_metrics(positive, negative, rng.integers(0, max(2, n // 5), n), bootstrap_samples=300, seed=seed)
    for key in ("pairwise_accuracy", "auc"):
        low, high = metrics["ci"][key]
        assert low <= metrics[key] <= high


def test_the_lead_over_a_baseline_is_resampled_in_pairs():
    # b is right on every pair, a in half the tasks: resampled together, a's lead is never positive
    # and the same scorer's lead over itself is exactly 0 on every draw.
    groups = np.repeat(np.arange(20), 5)
    right_a = (groups % 2 == 0).astype(float)
    interval = accuracy_difference_ci(right_a, np.full(100, 0.5), np.full(100, 1.0), np.full(100, 0.5), groups, samples=400)
    assert interval[1] <= 0.0 and interval[0] >= -1.0
    same = accuracy_difference_ci(right_a, np.full(100, 0.5), right_a, np.full(100, 0.5), groups, samples=200)
    assert same == [0.0, 0.0]
    rng = np.random.default_rng(1)
    p_a, p_b = rng.normal(0.5, 1, 100), rng.normal(0.2, 1, 100)
    low, high = accuracy_difference_ci(p_a, np.zeros(100), p_b, np.zeros(100), groups, samples=400)
    assert low <= pairwise_accuracy(p_a, np.zeros(100)) - pairwise_accuracy(p_b, np.zeros(100)) <= high
    assert accuracy_difference_ci(p_a, np.zeros(100), p_b, np.zeros(100), np.zeros(100), samples=400) is None


def test_length_debiased_accuracy_of_a_length_rule_is_exactly_one_half():
    rng = np.random.default_rng(4)
    positive_length, negative_length = rng.integers(10, 200, 60), rng.integers(10, 200, 60)
    positive_length[:5] = negative_length[:5]  # equal lengths: left out
    groups = np.repeat(np.arange(12), 5)
    for rule in (1, -1):  # longer wins, shorter wins
        result = length_debiased_accuracy(rule * positive_length, rule * negative_length, positive_length, negative_length, groups, bootstrap_samples=200)
        assert result["accuracy"] == 0.5 and result["equal_length_pairs"] == 5
        assert {result["longer_won"]["pairwise_accuracy"], result["shorter_won"]["pairwise_accuracy"]} == {0.0, 1.0}
        assert result["ci"] == [0.5, 0.5]


def test_length_debiased_accuracy_by_hand():
    # longer side positive in pairs 0-2 (2 of 3 right), shorter in pairs 3-4 (1 of 2 right), pair 5 equal
    positive = np.array([1.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    negative = np.zeros(6) + 0.5
    result = length_debiased_accuracy(positive, negative, np.array([9, 9, 9, 1, 1, 5]), np.array([1, 1, 1, 9, 9, 5]), bootstrap_samples=0)
    assert result["accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert (result["longer_won"]["n_pairs"], result["shorter_won"]["n_pairs"], result["equal_length_pairs"]) == (3, 2, 1)


def test_length_debiased_accuracy_is_none_with_the_reason_when_one_half_is_empty():
    result = length_debiased_accuracy(np.ones(4), np.zeros(4), np.full(4, 10), np.array([1, 2, 3, 10]), bootstrap_samples=100)
    assert result["accuracy"] is None and result["ci"] is None
    assert "shorter side is the positive one" in result["why_none"] and result["equal_length_pairs"] == 1


def test_task_mean_interval_contains_the_mean():
    result = task_mean(np.array([1.0, 0.0, 0.5, 1.0]), bootstrap_samples=300)
    assert result["mean"] == 0.625 and result["ci"][0] <= 0.625 <= result["ci"][1]
    assert task_mean(np.array([1.0]), bootstrap_samples=300)["ci"] is None


# --- the recipe on a real checkpoint --------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(reward_checkpoint):
    """Heads trained by the real stage-0 recipe on MiniLM vectors (32 tokens, to keep it fast), and
    their config; shared with the scoring and serving tests, so only read it."""
    return reward_checkpoint, checkpoint_config()


def fresh_checkpoint(trained, tmp_path):
    """A copy of the checkpoint as train-heads left it, before any evaluation stored normalisation."""
    root, _ = trained
    shutil.copytree(root / "plain", tmp_path / "checkpoint")
    return tmp_path / "checkpoint"


def test_report_on_validation_matches_training_and_stores_normalization(trained, tmp_path):
    root, config = trained
    checkpoint = fresh_checkpoint(trained, tmp_path)
    result = evaluate(checkpoint, [root / "val.jsonl"], root / "cache", tmp_path / "report", config, progress=False)
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report == json.loads(json.dumps(result.report))

    training = json.loads(checkpoint.joinpath("config.json").read_text())
    # the reward is the heads blended with their parts at the weights train-heads chose (this file among its held-out pairs)
    assert report["overall"]["pairwise_accuracy"] == pytest.approx(training["blend_choice"]["chosen"]["val_pairwise_accuracy"])
    if "blend" not in training:
        assert report["overall"]["pairwise_accuracy"] == pytest.approx(training["metrics"]["val"]["pairwise_accuracy"])
    assert report["n_pairs"] == 20 and sum(report["modules"][m]["n_pairs"] for m in MODULES) == 20
    for part in [report["overall"], *report["modules"].values()]:
        for key in ("pairwise_accuracy", "auc", "separation", "ci", "n_pairs", "calibration", "baselines", "above_baselines"):
            assert key in part
        assert set(part["baselines"]) == {"length", "cosine", "tfidf", "logistic_regression"}
        gap = part["above_baselines"]["length"]["pairwise_accuracy"]
        assert gap == pytest.approx(part["pairwise_accuracy"] - part["baselines"]["length"]["pairwise_accuracy"])
        for name, baseline in part["baselines"].items():  # every baseline's accuracy and the heads' lead over it have intervals
            low, high = baseline["ci"]["pairwise_accuracy"]
            assert low <= baseline["pairwise_accuracy"] <= high, name
            low, high = part["above_baselines"][name]["pairwise_accuracy_ci"]
            assert low <= part["above_baselines"][name]["pairwise_accuracy"] <= high, name

    # what the reward is made of, and each of its parts alone on the same pairs, with its interval: on
    # the checkpoint's validation pairs each scores as it did when train-heads chose the weights
    assert report["reward"] == describe_reward(read_record(checkpoint)) and report["blend"] == blend_weights(read_record(checkpoint))
    assert set(report["overall"]["parts"]) == {name for name, w in report["blend"].items() if w} | {"heads"}
    for name, part in report["overall"]["parts"].items():
        assert part["weight"] == report["blend"][name] and part["n_pairs"] == 20
        assert part["pairwise_accuracy"] == pytest.approx(training["blend_choice"]["parts_alone_validation"][name]), name
        low, high = part["ci"]["pairwise_accuracy"]
        assert low <= part["pairwise_accuracy"] <= high
    assert all(set(m["parts"]) == set(report["overall"]["parts"]) for m in report["modules"].values())
    if "linear" in report["overall"]["parts"]:  # the checkpoint's own linear part is the logistic-regression baseline
        assert report["overall"]["parts"]["linear"]["pairwise_accuracy"] == report["overall"]["baselines"]["logistic_regression"]["pairwise_accuracy"]

    assert result.normalization_stored  # the val file is the checkpoint's validation data
    stored = json.loads(checkpoint.joinpath("normalization.json").read_text())
    assert set(stored) == {*MODULES, "data_sha256"} and stored["data_sha256"] == report["data_sha256"]
    for m in MODULES:
        assert stored[m]["std"] > 0 and stored[m]["n_responses"] == 2 * report["modules"][m]["n_pairs"]

    for name in ("score_distributions.png", "roc.png", "reliability.png"):
        png = (tmp_path / "report" / name).read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000, name
    text = (tmp_path / "report" / "report.md").read_text()
    assert "| overall | 20 |" in text and "logistic regression" in text and "![roc.png](roc.png)" in text
    assert_report_md_reads_against_chance(text, report)


def assert_report_md_reads_against_chance(text: str, report: dict) -> None:
    """report.md defines its columns, says chance is 0.5, and marks every interval of report.json
    by where it lies against 0.5."""
    assert "Chance is 0.5 for pairwise accuracy and AUC" in text
    for definition in (
        "the share of pairs where the positive response scores higher than the negative one; a tie counts wrong",
        "every response is scored alone, the positive side of each pair labelled 1 and the negative side 0",
        "**Cohen's d**: the separation r+ − r−",
        "**ECE**: expected calibration error",
        "every pair scored in both orders",
    ):
        assert definition in text, definition
    # the headline says what the reward is; its table's column is the reward, its parts alone rows beside it
    assert text.startswith(f"# Evaluation of `{report['checkpoint']}`\n\n**The reward**: {report['reward']}.\n")
    assert "## The reward\n" in text and "Reward heads" not in text and "| | reward | length (longer wins) |" in text
    rows = {}
    for line in text.splitlines():  # the first table with intervals is the reward's
        if line.startswith("| ") and "[" in line:
            rows.setdefault(line.split("|")[1].strip(), line)
    parts = [(f"overall: {PART_NAMES[name]} alone (weight {part['weight']:g})", part) for name, part in report["overall"]["parts"].items()]
    for name, part in [("overall", report["overall"]), *parts, *report["modules"].items()]:
        for key in ("pairwise_accuracy", "auc"):
            low, high = part["ci"][key]
            expected = "above chance" if low > 0.5 else "below chance" if high < 0.5 else "includes chance"
            assert f"[{low:.3f}, {high:.3f}] {expected}" in rows[name], (name, key, rows[name])
    low, high = report["overall"]["ci"]["pairwise_accuracy"]
    overall = "above chance" if low > 0.5 else "below chance" if high < 0.5 else "includes chance"
    assert f"**Overall: pairwise accuracy {report['overall']['pairwise_accuracy']:.3f}, 95% CI [{low:.3f}, {high:.3f}], {overall} (0.5)" in text


def test_each_interval_is_read_against_chance():
    assert chance_verdict([0.52, 0.71]) == "above chance"
    assert chance_verdict([0.45, 0.66]) == "includes chance" and chance_verdict([0.5, 0.6]) == "includes chance"
    assert chance_verdict([0.20, 0.49]) == "below chance"


def test_the_reliability_plot_counts_the_scores_in_each_bin():
    rng = np.random.default_rng(1)
    scores = {m: (rng.normal(0.5, 1, 40), rng.normal(0, 1, 40)) for m in MODULES}
    curves, counts = reliability_figure(scores, bins=10).axes
    heights = np.array([bar.get_height() for bar in counts.patches]).reshape(len(MODULES), 10)
    for module, row in zip(MODULES, heights):
        assert list(row) == [b["n"] for b in calibration(*scores[module], bins=10)["bins"]]
        assert row.sum() == 2 * 40  # each pair in both orders
    assert [line.get_label() for line in curves.lines] == [*MODULES, "perfect"]


@pytest.mark.slow  # a subprocess or several trainings: the full suite runs it, the fast lane stays quick
def test_writing_plots_neither_imports_pyplot_nor_switches_the_backend(tmp_path):
    """A program that imports heads.report (a notebook, a server) keeps its own matplotlib backend."""
    script = f"""
import sys, numpy as np, matplotlib
backend = dict.__getitem__(matplotlib.rcParams, "backend")  # read without resolving it
from heads.report import write_plots
write_plots(__import__("pathlib").Path({str(tmp_path)!r}), {{"planner": (np.array([1.0, 0.2, 0.4]), np.array([0.0, 0.3, 0.1]))}})
assert "matplotlib.pyplot" not in sys.modules, "pyplot was imported"
assert dict.__getitem__(matplotlib.rcParams, "backend") == backend, "the backend changed"
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "reliability.png").read_bytes().startswith(b"\x89PNG")


def test_the_terminal_table_shows_whole_names_in_aligned_columns(trained, tmp_path):
    root, config = trained
    result = evaluate(root / "checkpoint", [root / "val.jsonl"], root / "cache", tmp_path / "report", config, store_normalization=False, progress=False)
    header, *rows, parts = result.table.splitlines()
    assert header.split()[:3] == ["module", "pairs", "accuracy"] and header.endswith("vs logistic_regression")
    assert [row.split()[0] for row in rows] == ["overall", *MODULES]
    assert {len(row) for row in rows} == {len(header)}  # every number column ends where its name does
    # under the table, the reward's overall accuracy beside each of its parts' alone
    overall = result.report["overall"]
    assert parts.startswith(f"overall pairwise accuracy (95% CI) of the reward and of each part alone: reward {overall['pairwise_accuracy']:.3f} [")
    for name, part in overall["parts"].items():
        low, high = part["ci"]["pairwise_accuracy"]
        assert f"{PART_NAMES[name]} alone (weight {part['weight']:g}) {part['pairwise_accuracy']:.3f} [{low:.3f}, {high:.3f}]" in parts


def test_other_data_leaves_the_checkpoint_alone_unless_asked(trained, tmp_path):
    root, config = trained
    checkpoint = fresh_checkpoint(trained, tmp_path)
    before = checkpoint.joinpath("config.json").read_text()
    result = evaluate(checkpoint, [root / "train.jsonl"], root / "cache", tmp_path / "r1", config, progress=False)
    assert not result.normalization_stored and checkpoint.joinpath("config.json").read_text() == before
    result = evaluate(checkpoint, [root / "train.jsonl"], root / "cache", tmp_path / "r2", config, store_normalization=True, progress=False)
    assert result.normalization_stored and checkpoint.joinpath("config.json").read_text() == before  # a training artifact: never rewritten
    assert json.loads(checkpoint.joinpath("normalization.json").read_text())["data_sha256"] == result.report["data_sha256"]


@pytest.mark.slow  # it runs the encoder or several trainings: the full suite runs it, the fast lane stays quick
def test_texts_missing_from_the_cache_are_embedded_and_reported(trained, tmp_path):
    root, config = trained
    shutil.copytree(root / "cache", tmp_path / "cache")
    result = evaluate(root / "checkpoint", [root / "unseen.jsonl"], tmp_path / "cache", tmp_path / "report", config, progress=False)
    assert result.report["embedded_texts"] > 0 and "were embedded" in result.report["notes"][0]
    again = evaluate(root / "checkpoint", [root / "unseen.jsonl"], tmp_path / "cache", tmp_path / "report2", config, progress=False)
    assert again.report["embedded_texts"] == 0
    assert again.report["overall"]["pairwise_accuracy"] == result.report["overall"]["pairwise_accuracy"]


def test_logistic_baseline_is_left_out_with_a_note_when_training_files_are_gone(trained, tmp_path):
    root, config = trained
    checkpoint = fresh_checkpoint(trained, tmp_path)
    saved = json.loads(checkpoint.joinpath("config.json").read_text())
    saved["train_files"] = [str(tmp_path / "gone.jsonl")]
    saved.pop("blend", None)  # heads alone: a blend carries its own linear and TF-IDF parts (tests/test_blend.py)
    checkpoint.joinpath("config.json").write_text(json.dumps(saved))
    result = evaluate(checkpoint, [root / "val.jsonl"], root / "cache", tmp_path / "report", config, store_normalization=False, progress=False)
    assert set(result.report["overall"]["baselines"]) == {"length", "cosine"}  # TF-IDF is fitted on them too
    assert any("gone.jsonl" in note for note in result.report["notes"])


def test_the_config_can_leave_the_logistic_baseline_out(trained, tmp_path):
    """For a stage 1 checkpoint the baseline first embeds every training text with the fine-tuned
    encoder; the demo leaves it out to stay quick."""
    root, config = trained
    checkpoint = fresh_checkpoint(trained, tmp_path)
    saved = json.loads(checkpoint.joinpath("config.json").read_text())
    saved.pop("blend", None)  # a blend's own linear part is reported whatever the config says: it costs nothing
    checkpoint.joinpath("config.json").write_text(json.dumps(saved))
    without = config.override({"evaluation.logistic_baseline": False})
    result = evaluate(checkpoint, [root / "val.jsonl"], root / "cache", tmp_path / "report", without, store_normalization=False, progress=False)
    assert set(result.report["overall"]["baselines"]) == {"length", "cosine", "tfidf"}  # TF-IDF needs no encoder
    assert any("evaluation.logistic_baseline is off" in note for note in result.report["notes"])
    assert "**logistic regression**" not in (tmp_path / "report" / "report.md").read_text()


def test_cli_prints_the_table_and_refuses_an_encoder_of_other_weights(trained, tmp_path, tiny_qwen3_path):
    root, _ = trained
    checkpoint = fresh_checkpoint(trained, tmp_path)
    runner = CliRunner()
    ok = runner.invoke(main, ["evaluate", str(checkpoint), str(root / "val.jsonl"), "--cache", str(root / "cache"), "--out", str(tmp_path / "r"), "--bootstrap", "50"])
    assert ok.exit_code == 0, ok.output
    assert "overall" in ok.output and "memory" in ok.output and "vs logistic" in ok.output and "stored in" in ok.output

    shutil.copytree(root / "cache", tmp_path / "cache")
    args = ["evaluate", str(checkpoint), str(root / "unseen.jsonl"), "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "bad")]
    refused = runner.invoke(main, [*args, "--encoder", str(tiny_qwen3_path)])
    assert refused.exit_code == 1 and "does not make the vectors" in refused.output and "--encoder" in refused.output
    assert not (tmp_path / "bad").exists()


def test_bad_pairs_exit_1_and_write_no_report(trained, tmp_path):
    root, _ = trained
    bad = tmp_path / "bad.json"
    bad.write_text('[{"pair_id": "x", "target_module": "planner"}]')
    result = CliRunner().invoke(main, ["evaluate", str(root / "checkpoint"), str(bad), "--cache", str(root / "cache"), "--out", str(tmp_path / "report")])
    assert result.exit_code == 1 and "bad.json" in result.output
    assert not (tmp_path / "report").exists()


def test_tfidf_baseline_beats_chance_on_the_training_pairs_it_was_fit_on(trained):
    root, _ = trained
    train = load_pairs([root / "train.jsonl"])
    positive, negative = TfidfBaseline.fit(train).scores(train)
    assert pairwise_accuracy(positive, negative) > 0.75


def test_report_holds_the_length_debiased_accuracy_of_heads_and_baselines(trained, tmp_path):
    root, config = trained
    result = evaluate(root / "checkpoint", [root / "val.jsonl"], root / "cache", tmp_path / "report", config, store_normalization=False, progress=False)
    positive_length, negative_length = length_scores(load_pairs([root / "val.jsonl"]))
    assert (positive_length > negative_length).any() and (positive_length < negative_length).any()
    for part in [result.report["overall"], *result.report["modules"].values()]:
        for kind in ("module_text", "context"):
            assert set(part["length_debiased"][kind]) >= {"accuracy", "ci", "longer_won", "shorter_won", "equal_length_pairs"}
            assert set(part["baselines"]["tfidf"]["length_debiased"][kind]) == set(part["length_debiased"][kind])
    length_rule = result.report["overall"]["baselines"]["length"]["length_debiased"]["module_text"]
    assert length_rule["accuracy"] == 0.5 and length_rule["equal_length_pairs"] == int((positive_length == negative_length).sum())
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Length-debiased accuracy" in text and "**length-debiased accuracy**" in text and "Pairs of equal length are left out" in text
    assert "TF-IDF" in text and "len-debiased" in result.table.splitlines()[0] and "vs tfidf" in result.table


def test_accuracy_per_source_when_pairs_carry_one(trained, tmp_path):
    root, config = trained
    pairs = load_pairs([root / "val.jsonl"])
    sources = ["agent-a" if i % 2 else "agent-b" for i in range(pairs.height)]
    negatives = [s if i % 4 else "agent-a" for i, s in enumerate(sources)]
    write_pairs(pairs.with_columns(positive_source=pl.Series(sources), negative_source=pl.Series(negatives)), tmp_path / "sourced.jsonl")
    result = evaluate(root / "checkpoint", [tmp_path / "sourced.jsonl"], root / "cache", tmp_path / "report", config, store_normalization=False, progress=False)
    by_source = result.report["sources"]
    assert by_source["column"] == "positive_source and negative_source"
    assert set(by_source["values"]) == {"agent-a", "agent-b", "agent-b vs agent-a"}
    assert sum(v["n_pairs"] for v in by_source["values"].values()) == pairs.height
    assert "## By source" in (tmp_path / "report" / "report.md").read_text()
    plain = evaluate(root / "checkpoint", [root / "val.jsonl"], root / "cache", tmp_path / "plain", config, store_normalization=False, progress=False)
    assert plain.report["sources"] is None  # synthetic pairs carry no source
    # the training pairs carry no sources: no source prior to fit, and the report says so
    assert "source" not in result.report["overall"]["baselines"] and "source_debiased" not in result.report["overall"]
    assert any("no source-prior baseline" in note for note in result.report["notes"])


def test_source_prior_is_each_sources_smoothed_share_of_training_wins():
    train = pl.DataFrame({"positive_source": ["gpt", "gpt", "gpt", "llama"], "negative_source": ["llama", "llama", "vicuna", "gpt"]})
    prior = SourcePrior.fit(train)
    assert prior.rates == {"gpt": (3 + 1) / (4 + 2), "llama": (1 + 1) / (3 + 2), "vicuna": (0 + 1) / (1 + 2)}
    positive, negative = prior.scores(pl.DataFrame({"positive_source": ["vicuna", "unseen"], "negative_source": ["gpt", "gpt"]}))
    assert positive.tolist() == [1 / 3, 0.5] and negative.tolist() == [4 / 6, 4 / 6]
    assert SourcePrior.applies(train) and not SourcePrior.applies(train.drop("negative_source"))


def sourced(pairs: pl.DataFrame, favoured_wins: list[bool]) -> pl.DataFrame:
    """`pairs` with a source on each side: "strong" on the positive side where favoured_wins[i],
    on the negative side elsewhere, and "weak" on the other."""
    strong_positive = pl.Series(favoured_wins)
    return pairs.with_columns(
        positive_source=pl.when(strong_positive).then(pl.lit("strong")).otherwise(pl.lit("weak")),
        negative_source=pl.when(strong_positive).then(pl.lit("weak")).otherwise(pl.lit("strong")),
    )


def test_source_prior_baseline_and_source_debiased_accuracy(trained, tmp_path):
    """Pairs mined from runs carry each side's source; the prior fitted on the checkpoint's
    training pairs is a baseline, and the heads' accuracy with it taken out is reported."""
    root, config = trained
    checkpoint = fresh_checkpoint(trained, tmp_path)
    train = load_pairs([root / "train.jsonl"])
    write_pairs(sourced(train, [i % 5 != 0 for i in range(train.height)]), tmp_path / "train.jsonl")  # "strong" wins 4 of 5
    saved = json.loads(checkpoint.joinpath("config.json").read_text())
    saved["train_files"] = [str(tmp_path / "train.jsonl")]
    checkpoint.joinpath("config.json").write_text(json.dumps(saved))
    val = load_pairs([root / "val.jsonl"])
    favoured_wins = [i % 3 != 0 for i in range(val.height)]
    write_pairs(sourced(val, favoured_wins), tmp_path / "val.jsonl")

    result = evaluate(checkpoint, [tmp_path / "val.jsonl"], root / "cache", tmp_path / "report", config, store_normalization=False, progress=False)
    overall = result.report["overall"]
    assert overall["baselines"]["source"]["pairwise_accuracy"] == pytest.approx(np.mean(favoured_wins))
    debiased = overall["source_debiased"]
    assert (debiased["favoured_won"]["n_pairs"], debiased["favoured_lost"]["n_pairs"], debiased["equal_prior_pairs"]) == (sum(favoured_wins), val.height - sum(favoured_wins), 0)
    # by hand: the heads' accuracy on each half, averaged
    plain = evaluate(checkpoint, [root / "val.jsonl"], root / "cache", tmp_path / "plain", config, store_normalization=False, progress=False)
    assert plain.report["overall"]["pairwise_accuracy"] == overall["pairwise_accuracy"]
    halves = [debiased["favoured_won"]["pairwise_accuracy"], debiased["favoured_lost"]["pairwise_accuracy"]]
    assert debiased["accuracy"] == pytest.approx(sum(halves) / 2) and debiased["ci"][0] <= debiased["accuracy"] <= debiased["ci"][1]
    for module, part in result.report["modules"].items():
        if part["n_pairs"]:
            assert part["source_debiased"]["favoured_won"]["n_pairs"] + part["source_debiased"]["favoured_lost"]["n_pairs"] == part["n_pairs"]
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Source-debiased accuracy" in text and "**source prior**" in text and "vs source" in result.table


@pytest.fixture
def autogpt_runs(tmp_path):
    """The AutoGPT fixture's 11 attempts as runs: tasks of 1, 1, 2, 3 and 4 runs."""
    records, _ = import_reports(sorted(AUTOGPT.glob("*.report.md")))
    return write_runs(records, tmp_path / "runs.jsonl")


AUTOGPT = Path(__file__).parent / "fixtures" / "autogpt"


def test_best_of_n_on_runs_against_the_base_rate_and_the_oracle(trained, tmp_path, autogpt_runs):
    root, config = trained
    result = evaluate(root / "checkpoint", [], root / "cache", tmp_path / "report", config, progress=False, runs_files=[autogpt_runs])
    best = result.report["best_of_n"]
    by_task = {}
    for run in load_runs(autogpt_runs):
        by_task.setdefault(run.task_key, []).append(run.succeeded)
    several = [outcomes for outcomes in by_task.values() if len(outcomes) >= 2]
    assert (best["tasks"], best["runs"]) == (len(several), sum(map(len, several))) == (3, 9)
    assert best["left_out"] == {"tasks": 2, "runs": 2, "why": "tasks with a single run: nothing to pick from"}
    rates = {pick: r["mean"] for pick, r in best["success_rate"].items()}
    assert rates["random"] == pytest.approx(np.mean([np.mean(outcomes) for outcomes in several]))
    assert rates["oracle"] == pytest.approx(np.mean([max(outcomes) for outcomes in several])) == 1.0
    assert rates["oracle"] >= rates["heads"] >= 0 and rates["oracle"] >= rates["shortest"] and rates["oracle"] >= rates["longest"]
    assert "normalised" in best["reward"]  # the checkpoint stores normalisation
    assert "overall" not in result.report and not result.normalization_stored
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Best of N on runs" in text and "random run (base rate)" in text and "oracle (any success)" in text
    assert "best of N: 9 runs of 3 tasks" in result.table


def test_runs_with_a_single_run_per_task_are_refused_clearly(trained, tmp_path):
    root, _ = trained
    runs = tmp_path / "single.jsonl"
    write_runs([{"run_id": f"r{i}", "task": f"task {i}", "outcome": i % 2, "rounds": [{"plan": "look", "action": "look()"}]} for i in range(3)], runs)
    args = ["evaluate", str(root / "checkpoint"), "--runs", str(runs), "--cache", str(root / "cache"), "--out", str(tmp_path / "r")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "no task has at least 2 runs (3 runs over 3 tasks)" in result.output
    assert not (tmp_path / "r").exists()


def test_evaluate_needs_pairs_or_runs(trained, tmp_path):
    root, config = trained
    with pytest.raises(EvaluationError, match="nothing to evaluate"):
        evaluate(root / "checkpoint", [], root / "cache", tmp_path / "r", config)
    result = CliRunner().invoke(main, ["evaluate", str(root / "checkpoint"), "--cache", str(root / "cache"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and "nothing to evaluate" in result.output


def test_rewards_far_apart_are_calibrated_without_overflow(recwarn):
    positive, negative = np.array([900.0, 5.0, -2.0]), np.array([-900.0, 1.0, 3.0])
    metrics = pair_metrics(positive, negative, bootstrap_samples=0)
    assert metrics["pairwise_accuracy"] == pytest.approx(2 / 3) and not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
