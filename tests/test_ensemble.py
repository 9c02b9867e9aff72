"""`train-heads --search` and `--ensemble K`, and the uncertainty of an ensemble's rewards through
every path: the API, `pipeline score`, `pipeline serve`, the verl function and `pipeline evaluate`;
on the small real checkpoint's data (MiniLM at 32 tokens)."""

import json
import shutil

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from reward_checkpoint import MODULES, checkpoint_config
from safetensors.torch import load_file

from data import load_pairs
from heads.ensemble import RewardEnsemble, accuracy_by_uncertainty, bootstrap_task_rows, load_heads
from heads.model import CheckpointError
from pipeline import verl_reward
from pipeline.cli import main
from pipeline.config import Config, ServeConfig
from pipeline.evaluate import evaluate
from pipeline.finetune import finetune
from pipeline.rewards import load
from pipeline.serve import BackgroundServer, create_app
from pipeline.train_heads import search_grid, train_heads

SMALL_GRID = {"search.head": ["linear", "16"], "search.lr": [1e-3, 3e-3], "search.weight_decay": [0.01], "search.dropout": [0.1, 0.3], "search.epochs": [2]}
MEMBERS = 3


@pytest.fixture(scope="module")
def data(reward_checkpoint):
    return reward_checkpoint  # train.jsonl, val.jsonl, cache/ (and the single-head checkpoints)


@pytest.fixture(scope="module")
def ensemble(data, tmp_path_factory):
    """An ensemble of 3 trained by the CLI, after a search over a small grid."""
    out = tmp_path_factory.mktemp("ensemble") / "checkpoint"
    config_file = out.parent / "config.yaml"
    config_file.write_text(checkpoint_config().override(SMALL_GRID).to_yaml())
    result = CliRunner().invoke(main, [
        "train-heads", str(data / "train.jsonl"), "--val", str(data / "val.jsonl"), "--cache", str(data / "cache"),
        "--out", str(out), "--search", "--ensemble", str(MEMBERS), "--config", str(config_file),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    return out, result.output


@pytest.fixture(scope="module")
def scorer(ensemble):
    return load(ensemble[0], device="cpu")


def contexts_and_texts(data, n: int = 12) -> tuple[list[str], list[str], list[str]]:
    pairs = load_pairs(data / "val.jsonl").head(n)
    return pairs["positive_context"].to_list(), pairs["positive_module_text"].to_list(), pairs["target_module"].to_list()


# --- search ------------------------------------------------------------------------------------


def test_default_grid_tries_at_least_12_settings():
    settings = search_grid(Config())
    assert len(settings) >= 12 and len(set(settings)) == len(settings)
    assert {s.head for s in settings} == {"2d,d", "256", "linear"}


def test_search_writes_the_table_and_keeps_the_setting_of_lowest_validation_loss(data, tmp_path):
    config = checkpoint_config().override(SMALL_GRID)
    result = train_heads(files=[data / "train.jsonl"], cache_dir=data / "cache", out=tmp_path / "ckpt", config=config, val_file=data / "val.jsonl", progress=False, search=True)
    rows = [json.loads(line) for line in (tmp_path / "ckpt" / "search.jsonl").read_text().splitlines()]
    assert len(rows) == len(search_grid(config)) == 6  # a linear head is tried once per lr, not once per dropout
    chosen = min(rows, key=lambda r: r["val_loss"])
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert saved["search"]["chosen"] == chosen == result.search.rows[result.search.best]
    assert saved["metrics"]["val"]["loss"] == pytest.approx(chosen["val_loss"])
    assert saved["head"] == chosen["head"] and saved["training_config"]["stage_0"]["lr"] == chosen["lr"]
    resolved = yaml.safe_load((tmp_path / "ckpt" / "config.yaml").read_text())  # the checkpoint says what it is
    assert (resolved["model"]["head"], resolved["model"]["dropout"], resolved["training"]["weight_decay"]) == (chosen["head"], chosen["dropout"], chosen["weight_decay"])
    markdown = (tmp_path / "ckpt" / "search.md").read_text()
    assert markdown.count("\n| ") == len(rows) + 1 and f"**#{chosen['setting']}**" in markdown

    again = train_heads(files=[data / "train.jsonl"], cache_dir=data / "cache", out=tmp_path / "again", config=config, val_file=data / "val.jsonl", progress=False, search=True)
    without_time = [[{k: v for k, v in r.items() if k != "seconds"} for r in run.search.rows] for run in (result, again)]
    assert without_time[0] == without_time[1]  # same seed, same table
    first, second = (load_file(folder / "heads.safetensors") for folder in (tmp_path / "ckpt", tmp_path / "again"))
    assert all(np.array_equal(first[k].numpy(), second[k].numpy()) for k in first)


def test_cli_prints_the_search_table_and_the_ensemble(ensemble):
    out, output = ensemble
    assert "search: 6 settings" in output and "val loss" in output and " *" in output
    assert f"ensemble of {MEMBERS}" in output
    assert (out / "search.md").is_file() and (out / "search.jsonl").is_file()


# --- ensemble ----------------------------------------------------------------------------------


def test_bootstrap_draws_whole_tasks_with_replacement_seeded_by_member():
    groups = np.array(["a", "a", "b", "c", "c", "c", "d"])
    rows = bootstrap_task_rows(groups, member=0, seed=0)
    drawn = groups[rows]
    for task in set(drawn):  # a drawn task brings all its pairs, as often as it was drawn
        assert sorted(rows[drawn == task]) == sorted(list(np.flatnonzero(groups == task)) * ((drawn == task).sum() // (groups == task).sum()))
    assert np.array_equal(rows, bootstrap_task_rows(groups, member=0, seed=0))
    assert any(not np.array_equal(rows, bootstrap_task_rows(groups, member=k, seed=0)) for k in range(1, 5))


def test_ensemble_checkpoint_holds_members_that_differ_and_the_reward_is_their_mean(ensemble, scorer, data):
    out, _ = ensemble
    saved = json.loads((out / "config.json").read_text())
    assert saved["ensemble"] == MEMBERS and len(saved["members"]) == MEMBERS
    weights = load_file(out / "heads.safetensors")
    assert {k.split(".")[1] for k in weights} == {str(k) for k in range(MEMBERS)} and all(k.startswith("members.") for k in weights)
    model, _ = load_heads(out)
    assert isinstance(model, RewardEnsemble) and model.size == MEMBERS and scorer.members == MEMBERS

    contexts, texts, modules = contexts_and_texts(data)
    vectors = scorer.vectors(contexts + texts, ["context"] * len(texts) + ["module"] * len(texts))
    tensors = torch.from_numpy(vectors[: len(texts)]), torch.from_numpy(vectors[len(texts) :])
    members = scorer.model.heads.member_scores(*tensors, scorer.model.module_index(modules)).detach().numpy()
    assert members.shape == (MEMBERS, len(texts))
    assert not np.allclose(members[0], members[1])  # bootstrap resamples and seeds make them differ
    if scorer.blend is not None:  # each member's score is blended with the same linear and TF-IDF scores
        linear = scorer.blend.linear_scores(vectors[: len(texts)], vectors[len(texts) :], modules)
        members = scorer.blend.blend(members, linear, scorer.blend.tfidf.score_texts(contexts, texts) if scorer.blend.tfidf else None)
    result = scorer.rewards(contexts, texts, modules)
    rewards, uncertainty = result.rewards, result.uncertainty
    np.testing.assert_allclose(rewards, members.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(uncertainty, members.std(axis=0), atol=1e-6)  # population std
    np.testing.assert_allclose(scorer.score(contexts, texts, modules), rewards, atol=0)
    assert (uncertainty > 0).all()


def test_a_single_checkpoint_loads_as_before_with_zero_uncertainty(data):
    scorer = load(data / "plain", device="cpu")
    contexts, texts, modules = contexts_and_texts(data, 4)
    result = scorer.rewards(contexts, texts, modules)
    rewards, uncertainty = result.rewards, result.uncertainty
    assert scorer.members == 1 and np.array_equal(rewards, scorer.score(contexts, texts, modules))
    assert np.array_equal(uncertainty, np.zeros(4, np.float32))


# --- every path carries the uncertainty --------------------------------------------------------


def test_score_cli_writes_uncertainty_per_module_only_for_an_ensemble(ensemble, data, scorer, tmp_path):
    contexts, texts, modules = contexts_and_texts(data, 4)
    records = [{"run_id": i, "context": c, "modules": {m: t}} for i, (c, t, m) in enumerate(zip(contexts, texts, modules))]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    for checkpoint, name in ((ensemble[0], "ensemble"), (data / "plain", "single")):
        result = CliRunner().invoke(main, ["score", str(checkpoint), str(tmp_path / "in.jsonl"), "--out", str(tmp_path / f"{name}.jsonl"), "--device", "cpu"])
        assert result.exit_code == 0, result.output
    scored = [json.loads(line) for line in (tmp_path / "ensemble.jsonl").read_text().splitlines()]
    result = scorer.rewards(contexts, texts, modules)
    rewards, uncertainty = result.rewards, result.uncertainty
    for record, m, r, u in zip(scored, modules, rewards, uncertainty):
        assert record["scores"][m] == pytest.approx(float(r), abs=1e-5) and record["uncertainty"][m] == pytest.approx(float(u), abs=1e-5)
    assert all("uncertainty" not in json.loads(line) for line in (tmp_path / "single.jsonl").read_text().splitlines())


def test_serve_answers_uncertainty_in_score_and_get_reward_extra_logs(scorer, data):
    from test_serve import request

    contexts, texts, modules = contexts_and_texts(data, 5)
    result = scorer.rewards(contexts, texts, modules)
    rewards, uncertainty = result.rewards, result.uncertainty
    with BackgroundServer(create_app(scorer, ServeConfig())) as server:
        assert request(f"{server.url}/health")[1]["ensemble"] == MEMBERS
        status, body = request(f"{server.url}/score", {"items": [{"context": c, "module": m, "module_text": t} for c, t, m in zip(contexts, texts, modules)]})
        assert status == 200
        np.testing.assert_allclose(body["rewards"], rewards, atol=1e-5)
        np.testing.assert_allclose(body["uncertainty"], uncertainty, atol=1e-5)
        status, body = request(f"{server.url}/get_reward", {"query": [c + t for c, t in zip(contexts, texts)], "prompts": contexts, "labels": modules})
        assert status == 200
        np.testing.assert_allclose(body["extra_logs"]["uncertainty"], uncertainty, atol=1e-5)


def test_verl_function_returns_the_uncertainty(ensemble, scorer, data, monkeypatch):
    monkeypatch.setenv("REWARD_CHECKPOINT", str(ensemble[0]))
    monkeypatch.setenv("REWARD_DEVICE", "cpu")
    monkeypatch.delenv("REWARD_URL", raising=False)
    monkeypatch.delenv("REWARD_MODULE", raising=False)
    monkeypatch.setattr(verl_reward, "_scorer", None)
    contexts, texts, modules = contexts_and_texts(data, 1)
    result = verl_reward.compute_score("agent", texts[0], None, {"module": modules[0], "context": contexts[0]})
    uncertainty = scorer.rewards(contexts, texts, modules).uncertainty
    assert set(result) == {"score", "uncertainty", *(f"{m}_score" for m in MODULES)}
    assert result["uncertainty"] == pytest.approx(float(uncertainty[0]), abs=1e-5) and result["uncertainty"] > 0
    assert verl_reward.compute_score("agent", "no tags", None, None)["uncertainty"] == 0.0


def test_accuracy_by_uncertainty_sees_wrong_pairs_in_the_most_uncertain_quarter():
    rng = np.random.default_rng(0)
    n = 400
    uncertainty = rng.uniform(0, 1, n)
    right = uncertainty < 0.6  # the uncertain pairs are the wrong ones
    positive, negative = np.where(right, 1.0, -1.0), np.zeros(n)
    positive[:5], negative[:5], uncertainty[:5] = 0.0, 0.0, 0.0  # tied on every member: left out
    result = accuracy_by_uncertainty(positive, negative, uncertainty, np.arange(n) // 4, bootstrap_samples=200)
    quartiles = result["quartiles"]
    assert result["tied_pairs_left_out"] == 5 and sum(q["n_pairs"] for q in quartiles) == n - 5
    assert quartiles[0]["pairwise_accuracy"] == 1.0 and quartiles[-1]["pairwise_accuracy"] == 0.0
    assert result["auc_uncertainty_for_wrong"] > 0.95 and result["verdict"].startswith("yes")


# --- evaluate, finetune, resume ----------------------------------------------------------------


def test_evaluate_reports_accuracy_by_uncertainty_quartile_and_stores_the_normalisation(ensemble, data, tmp_path):
    shutil.copytree(ensemble[0], tmp_path / "ckpt")
    result = evaluate(tmp_path / "ckpt", [data / "val.jsonl"], data / "cache", tmp_path / "report", checkpoint_config(), progress=False)
    uncertainty = result.report["uncertainty"]
    quartiles = uncertainty["overall"]["quartiles"]
    assert uncertainty["members"] == MEMBERS and [q["quartile"] for q in quartiles] == [1, 2, 3, 4]
    # at 32 tokens many pairs' two sides are the same text: those ties are left out and counted
    assert sum(q["n_pairs"] for q in quartiles) + uncertainty["overall"]["tied_pairs_left_out"] == result.report["n_pairs"]
    assert sum(q["n_pairs"] for q in quartiles) > 0
    assert all(q["ci"] is None or q["ci"][0] <= q["pairwise_accuracy"] <= q["ci"][1] for q in quartiles)
    assert uncertainty["overall"]["verdict"].split(":")[0] in {"yes", "weakly", "no"} or uncertainty["overall"]["verdict"] == "too few pairs to tell"
    assert set(uncertainty["modules"]) <= set(MODULES)
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert f"## Accuracy by uncertainty (ensemble of {MEMBERS})" in markdown and "| Q4 |" in markdown
    assert "accuracy by uncertainty quartile" in result.table
    single = json.loads((data / "report" / "report.json").read_text())
    assert "uncertainty" not in single

    # evaluate stored the normalisation (its pairs are the validation data): uncertainty comes in its units too
    raw, normalised = load(tmp_path / "ckpt", device="cpu"), load(tmp_path / "ckpt", device="cpu", normalize=True)
    contexts, texts, modules = contexts_and_texts(data, 6)
    std = np.array([normalised.normalization[m][1] for m in modules], np.float32)
    np.testing.assert_allclose(normalised.rewards(contexts, texts, modules).uncertainty, raw.rewards(contexts, texts, modules).uncertainty / std, rtol=1e-5)


def test_finetune_refuses_an_ensemble_checkpoint_in_one_line(ensemble, data, tmp_path):
    with pytest.raises(CheckpointError, match="ensemble of 3 heads.*single-head checkpoint: stage 1") as refused:
        finetune(files=[data / "train.jsonl"], init=ensemble[0], out=tmp_path / "ft", config=checkpoint_config(), val_file=data / "val.jsonl", progress=False)
    assert "\n" not in str(refused.value)


def test_resume_refuses_an_ensemble_and_cannot_be_combined_with_search(ensemble, data, tmp_path):
    config = checkpoint_config()
    with pytest.raises(CheckpointError, match="single-head checkpoint"):
        train_heads(files=[data / "train.jsonl"], cache_dir=data / "cache", out=tmp_path / "a", config=config, val_file=data / "val.jsonl", resume=ensemble[0], progress=False)
    with pytest.raises(Exception, match="--resume continues one model's heads"):
        train_heads(files=[data / "train.jsonl"], cache_dir=data / "cache", out=tmp_path / "b", config=config, val_file=data / "val.jsonl", resume=data / "plain", progress=False, search=True)
