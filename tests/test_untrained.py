"""No silent module fallback: a checkpoint records each module's training and validation pairs, and
a module whose head saw none is refused by every path (the API, `pipeline score`, `pipeline serve`,
the verl function) unless asked for explicitly; a whole trajectory is scored on its trained modules
only, naming the others; `--normalize` refuses only the modules that have no mean/std."""

import json
import shutil

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from reward_checkpoint import MODULES, checkpoint_config, record_of

from data import load_pairs, write_pairs
from data.splits import module_pairs
from data.synth import generate_pairs
from pipeline import verl_reward
from pipeline.cli import main
from pipeline.config import ServeConfig
from pipeline.evaluate import evaluate
from pipeline.finetune import _module_pairs
from pipeline.rewards import UntrainedModule, load
from pipeline.serve import BackgroundServer, create_app
from pipeline.train_heads import train_heads
from test_serve import request


@pytest.fixture(scope="module")
def executor_only(reward_checkpoint, tmp_path_factory):
    """Heads trained on the shared checkpoint's executor pairs alone (its cache holds their vectors),
    evaluated on the executor validation pairs, which stores an executor-only normalisation."""
    root = tmp_path_factory.mktemp("executor-only")
    shutil.copytree(reward_checkpoint / "cache", root / "cache")
    for name in ("train", "val"):
        pairs = load_pairs([reward_checkpoint / f"{name}.jsonl"])
        write_pairs(pairs.filter(pl.col("target_module") == "executor"), root / f"{name}.jsonl")
    config = checkpoint_config()
    train_heads(files=[root / "train.jsonl"], cache_dir=root / "cache", out=root / "checkpoint", config=config, val_file=root / "val.jsonl", progress=False)
    shutil.copytree(root / "checkpoint", root / "plain")
    evaluate(root / "checkpoint", [root / "val.jsonl"], root / "cache", root / "report", config, progress=False)
    return root


def executor_rows(root, n: int = 3) -> tuple[list[str], list[str], list[str]]:
    pairs = load_pairs([root / "val.jsonl"]).head(n)
    return pairs["positive_context"].to_list(), pairs["positive_module_text"].to_list(), ["executor"] * n


def test_the_checkpoint_records_each_modules_training_and_validation_pairs(executor_only):
    config = json.loads((executor_only / "plain" / "config.json").read_text())
    train, val = (load_pairs([executor_only / f"{name}.jsonl"]).height for name in ("train", "val"))
    assert config["module_pairs"] == {m: ({"train": train, "val": val} if m == "executor" else {"train": 0, "val": 0}) for m in MODULES}
    assert load(executor_only / "plain", device="cpu").trained_modules == ["executor"]


def test_a_module_with_no_training_pairs_is_refused_unless_asked_for(executor_only):
    scorer = load(executor_only / "plain", device="cpu")
    contexts, texts, _ = executor_rows(executor_only, 1)
    with pytest.raises(UntrainedModule) as refused:
        scorer.score(contexts * 2, texts * 2, ["executor", "planner"])
    message = str(refused.value)
    assert "'planner' had no training pairs" in message and "executor" in message and "training / " in message and "--allow-untrained" in message
    assert "\n" not in message and refused.value.row == 1
    assert np.isfinite(scorer.score(contexts, texts, ["executor"])).all()
    anyway = load(executor_only / "plain", device="cpu", allow_untrained=True)
    assert np.isfinite(anyway.score(contexts, texts, ["planner"])).all()


def test_a_checkpoint_from_before_the_record_counts_every_module_as_trained(executor_only, tmp_path):
    shutil.copytree(executor_only / "plain", tmp_path / "old")
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    del config["module_pairs"], config["format_version"]  # format 1, from before the record
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    scorer = load(tmp_path / "old", device="cpu")
    assert scorer.module_pairs is None and scorer.trained_modules == MODULES
    assert "predates" in scorer.training_summary()


def test_finetune_counts_training_pairs_over_both_stages():
    pairs = pl.DataFrame({"target_module": ["executor", "executor", "planner"]})
    stage_0 = {"module_pairs": {"reflection": {"train": 5, "val": 1}, "planner": {"train": 0, "val": 0}, "executor": {"train": 0, "val": 0}}}
    counts = _module_pairs(pairs, pairs.head(1), ["reflection", "planner", "executor", "memory"], record_of(stage_0))
    assert counts == {"reflection": {"train": 5, "val": 0}, "planner": {"train": 1, "val": 0}, "executor": {"train": 2, "val": 1}, "memory": {"train": 0, "val": 0}}
    assert _module_pairs(pairs, pairs, ["executor"], record_of({})) is None  # an init from before the record: not known
    assert module_pairs(pairs, pairs.head(0), ["planner", "memory"]) == {"planner": {"train": 1, "val": 0}, "memory": {"train": 0, "val": 0}}


def test_the_server_refuses_an_untrained_module_with_422_and_says_what_it_has(executor_only):
    scorer = load(executor_only / "plain", device="cpu")
    contexts, texts, _ = executor_rows(executor_only, 1)
    with BackgroundServer(create_app(scorer, ServeConfig())) as server:
        status, health = request(f"{server.url}/health")
        assert health["trained_modules"] == ["executor"] and health["scorable_modules"] == ["executor"]
        assert health["module_pairs"]["planner"] == {"train": 0, "val": 0} and health["allow_untrained"] is False
        item = {"context": contexts[0], "module_text": texts[0]}
        status, answer = request(f"{server.url}/score", {"items": [{**item, "module": "executor"}, {**item, "module": "planner"}]})
        assert status == 422 and answer["error"].startswith("items[1].module: module 'planner' had no training pairs"), answer
        status, answer = request(f"{server.url}/get_reward", {"query": [contexts[0] + texts[0]], "prompts": [contexts[0]], "labels": ["planner"]})
        assert status == 422 and answer["error"].startswith("query[0]: module 'planner'"), answer
        status, answer = request(f"{server.url}/score", {"items": [{**item, "module": "executor"}]})
        assert status == 200 and answer["rewards"][0] == pytest.approx(float(scorer.score(contexts, texts, ["executor"])[0]), abs=1e-5)
    with BackgroundServer(create_app(load(executor_only / "plain", device="cpu", allow_untrained=True), ServeConfig())) as server:
        status, answer = request(f"{server.url}/score", {"items": [{**item, "module": "planner"}]})
        assert status == 200 and np.isfinite(answer["rewards"][0])


def test_serve_refuses_an_untrained_default_module_at_start(executor_only):
    result = CliRunner().invoke(main, ["serve", str(executor_only / "plain"), "--module", "planner", "--device", "cpu"])
    assert result.exit_code == 2 and "'planner' had no training pairs" in result.output, result.output


def test_score_refuses_records_naming_an_untrained_module_unless_allowed(executor_only, tmp_path):
    contexts, texts, _ = executor_rows(executor_only, 2)
    records = tmp_path / "records.jsonl"
    records.write_text("".join(json.dumps({"context": c, "modules": {"executor": t, "planner": "[Round 1]\n<plan>x</plan>"}}) + "\n" for c, t in zip(contexts, texts)))
    out = tmp_path / "scored.jsonl"
    refused = CliRunner().invoke(main, ["score", str(executor_only / "plain"), str(records), "--out", str(out), "--device", "cpu"])
    assert refused.exit_code == 1 and "line 1, field 'modules.planner'" in refused.output and "no training pairs" in refused.output, refused.output
    assert not out.exists()
    allowed = CliRunner().invoke(main, ["score", str(executor_only / "plain"), str(records), "--out", str(out), "--device", "cpu", "--allow-untrained"])
    assert allowed.exit_code == 0, allowed.output
    assert "reflection, planner, memory scored anyway" in allowed.output
    assert set(json.loads(out.read_text().splitlines()[0])["scores"]) == {"executor", "planner"}


def test_normalize_works_on_the_modules_that_have_statistics(executor_only, tmp_path):
    """InterCode-like: evaluated on executor pairs only, `--normalize` normalises executor and
    refuses only a module asked for that has no mean/std."""
    stored = json.loads((executor_only / "checkpoint" / "normalization.json").read_text())
    assert stored["executor"]["std"] > 0
    scorer = load(executor_only / "checkpoint", device="cpu", normalize=True, allow_untrained=True)
    contexts, texts, modules = executor_rows(executor_only)
    raw = load(executor_only / "checkpoint", device="cpu").score(contexts, texts, modules)
    mean, std = stored["executor"]["mean"], stored["executor"]["std"]
    np.testing.assert_allclose(scorer.score(contexts, texts, modules), (raw - mean) / std, atol=1e-5)
    with pytest.raises(UntrainedModule, match="module 'planner' has no normalisation"):
        scorer.score(contexts[:1], texts[:1], ["planner"])
    records = tmp_path / "records.jsonl"
    records.write_text("".join(json.dumps({"context": c, "modules": {"executor": t}}) + "\n" for c, t in zip(contexts, texts)))
    result = CliRunner().invoke(main, ["score", str(executor_only / "checkpoint"), str(records), "--out", str(tmp_path / "s.jsonl"), "--normalize", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["scores"]["executor"] for line in (tmp_path / "s.jsonl").read_text().splitlines()] == pytest.approx(((raw - mean) / std).tolist(), abs=1e-5)


@pytest.fixture
def verl_executor_only(executor_only, monkeypatch):
    monkeypatch.setenv("REWARD_CHECKPOINT", str(executor_only / "plain"))
    monkeypatch.setenv("REWARD_DEVICE", "cpu")
    for name in ("REWARD_URL", "REWARD_MODULE", "REWARD_ALLOW_UNTRAINED", "REWARD_NORMALIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(verl_reward, "_scorer", None)
    return verl_reward


def test_verl_scores_a_trajectory_on_its_trained_modules_and_names_the_others(executor_only, verl_executor_only):
    record = generate_pairs(4, seed=9)[0]["positive"]
    trajectory = record["trajectory_full_context"].split("\n", 1)[1].lstrip()
    result = verl_executor_only.compute_score("agent", trajectory, None, {"task": "Book it."})
    assert set(result) == {"score", "executor_score", "modules_left_out"}
    assert result["modules_left_out"] == "reflection,planner,memory"
    scorer = load(executor_only / "plain", device="cpu")
    from data.trajectory import module_texts_from_trajectory

    expected = scorer.score([f"Task: Book it.\n{trajectory}"], [module_texts_from_trajectory(trajectory)["executor"]], ["executor"])[0]
    assert result["score"] == pytest.approx(float(expected), abs=1e-5) == pytest.approx(result["executor_score"])
    with pytest.raises(ValueError, match="'planner' had no training pairs"):
        verl_executor_only.compute_score("agent", "<plan>x</plan>", None, {"module": "planner", "context": "Task: x"})


def test_verl_through_the_server_leaves_out_what_the_server_does_not_score(executor_only, verl_executor_only, monkeypatch):
    scorer = load(executor_only / "plain", device="cpu")
    with BackgroundServer(create_app(scorer, ServeConfig())) as server:
        monkeypatch.setenv("REWARD_URL", server.url)
        monkeypatch.setattr(verl_reward, "_server_info", None)
        record = generate_pairs(4, seed=9)[0]["positive"]
        trajectory = record["trajectory_full_context"].split("\n", 1)[1].lstrip()
        result = verl_executor_only.compute_score("agent", trajectory, None, {"task": "Book it."})
        assert set(result) == {"score", "executor_score", "modules_left_out"} and result["modules_left_out"] == "reflection,planner,memory"
    monkeypatch.setattr(verl_reward, "_server_info", None)
