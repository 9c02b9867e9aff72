"""verl 0.9.1's own trainer reward path (its ppo_trainer config composed with Hydra, RewardLoopWorker,
load_reward_manager, assemble_rm_scores, the extra-info columns) on a small real checkpoint, in the
RL clients' environment (tests/rl_clients/drive_verl.py), with exactly the overrides the "## verl"
section of docs/rl-rewards.md shows; its rewards against the Python API's in this environment.

Also what that page warns about: the old top-level `custom_reward_function.*` keys never reach
our function on 0.9.1 (an error for data_source 'agent', verl's own scorer for 'openai/gsm8k'),
and `python -m pipeline.verl_reward --check-config` says so."""

import json
import os
import re
import subprocess

import numpy as np
import pytest
from rl_env import ROOT, rl_python, run_in_rl_env
from test_untrained import executor_only  # noqa: F401  (the executor-only checkpoint fixture)

from data import load_pairs
from data.synth import generate_pairs
from data.trajectory import module_texts_from_trajectory
from pipeline.rewards import load
from pipeline.serve import BackgroundServer, ServeSettings, create_app

pytestmark = pytest.mark.slow

MODULES = ["reflection", "planner", "executor", "memory"]
LEGACY = [f"custom_reward_function.path={ROOT}/pipeline/verl_reward.py", "custom_reward_function.name=compute_score"]  # the old keys (verl <= 0.7.0)


def documented_overrides() -> dict[str, list[str]]:
    """The verl overrides in the code block of docs/rl-rewards.md's "## verl" section (the README's
    until the docs moved there), by what they set: "function" (the reward.custom_reward_function.*
    keys) and "manager" (the reward.reward_manager.* keys)."""
    text = (ROOT / "docs" / "rl-rewards.md").read_text()
    section = text[text.index("\n## verl\n") :]
    block = section[section.index("```bash") : section.index("```\n", section.index("```bash") + 7)]
    tokens = re.findall(r"(?<!\S)(reward\.[\w.]+=\S+)", block.replace("/path/to/module-reward-models", str(ROOT)))
    groups = {
        "function": sorted({t for t in tokens if t.startswith("reward.custom_reward_function.")}),
        "manager": sorted({t for t in tokens if t.startswith("reward.reward_manager.")}),
    }
    assert len(groups["function"]) == 2 and len(groups["manager"]) == 3, groups
    return groups


def samples(root, trained: list[str]) -> list[dict]:
    """Named modules (their validation pairs' texts and contexts), whole tagged trajectories with and
    without a task, and a response without tags; as dataset rows for verl."""
    pairs = load_pairs([root / "val.jsonl"])
    named = [
        {"prompt": context[-300:], "response": text, "data_source": "agent", "extra_info": {"module": module, "context": context}}
        for module in trained
        for context, text in pairs.filter(target_module=module).head(2).select("positive_context", "positive_module_text").iter_rows()
    ]  # fmt: skip
    records = generate_pairs(12, seed=9)[::4]  # a record per task: distinct trajectories
    whole = [
        {"prompt": f"Task: {r['task']}", "response": r[side]["trajectory_full_context"].split("\n", 1)[1].lstrip(), "data_source": "agent",
         "extra_info": {"task": r["task"]} if i % 2 == 0 else {}}
        for i, (r, side) in enumerate((r, side) for r in records for side in ("positive", "negative"))
    ]  # fmt: skip
    untagged = {"prompt": "Task: x", "response": "I would rather just answer.", "data_source": "agent", "extra_info": {"task": "x"}}
    return named + whole + [untagged]


def expected(scorer, sample: dict) -> dict[str, float]:
    """What the Python API gives for a sample: `score` and the `<module>_score` of the modules it scores."""
    extra, response = sample["extra_info"], sample["response"]
    if "module" in extra:
        reward = float(scorer.score([extra["context"]], [response], [extra["module"]])[0])
        return {"score": reward, f"{extra['module']}_score": reward}
    context = f"Task: {extra['task']}\n{response}" if extra.get("task") else response
    texts = {m: t for m, t in module_texts_from_trajectory(response).items() if m in scorer.scorable_modules}
    rewards = scorer.score_trajectory(context, texts) if texts else {}
    return {"score": float(np.mean(list(rewards.values()))) if rewards else 0.0, **{f"{m}_score": r for m, r in rewards.items()}}


def assert_matches(result: dict, wanted: list[dict], modules: list[str]) -> None:
    assert "error" not in result, result
    np.testing.assert_allclose(result["rewards"], [w["score"] for w in wanted], atol=1e-5)
    for module in modules:
        np.testing.assert_allclose(result["extra"][f"{module}_score"], [w.get(f"{module}_score", 0.0) for w in wanted], atol=1e-5)


@pytest.fixture(scope="module")
def verl_runs(reward_checkpoint, executor_only, tmp_path_factory):  # noqa: F811
    """One driver run of every case (verl's imports take most of its time); `pipeline serve` on the
    shared checkpoint in this process for the case that goes through it."""
    rl_python()
    work = tmp_path_factory.mktemp("verl")
    documented = documented_overrides()
    full, executor = samples(reward_checkpoint, MODULES), samples(executor_only, ["executor"])
    in_process = {"REWARD_CHECKPOINT": str(reward_checkpoint / "checkpoint"), "REWARD_DEVICE": "cpu"}
    only_executor = {"REWARD_CHECKPOINT": str(executor_only / "plain"), "REWARD_DEVICE": "cpu"}
    gsm8k = [{**s, "data_source": "openai/gsm8k", "ground_truth": "42"} for s in full]
    server_scorer = load(reward_checkpoint / "checkpoint", device="cpu")
    with BackgroundServer(create_app(server_scorer, ServeSettings())) as server:
        runs = [
            ("function", documented["function"], in_process, full),
            ("manager", documented["manager"], in_process, full),
            ("manager through pipeline serve", documented["manager"], {"REWARD_URL": server.url}, full),
            ("legacy keys, data_source agent", LEGACY, in_process, full),
            ("legacy keys, data_source openai/gsm8k", LEGACY, in_process, gsm8k),
            ("untrained modules, function", documented["function"], only_executor, executor),
            ("untrained modules, manager", documented["manager"], only_executor, executor),
        ]
        spec = {
            "tokenizer": str(work / "tokenizer"),
            "runs": [{"name": name, "overrides": o, "env": env, "samples": s} for name, o, env, s in runs],
            "checks": {"function": documented["function"], "manager": documented["manager"], "legacy keys": LEGACY},
        }
        (work / "spec.json").write_text(json.dumps(spec))
        calls_before = server_scorer.calls
        result = run_in_rl_env("tests/rl_clients/drive_verl.py", str(work / "spec.json"), env={"REWARD_URL": "", "REWARD_MODULE": "", "REWARD_NORMALIZE": ""})
        server_calls = server_scorer.calls - calls_before
    assert result.returncode == 0, result.stderr[-3000:]
    output = json.loads(result.stdout.strip().splitlines()[-1])
    assert output["verl"] == "0.9.1"
    executor_scorer = load(executor_only / "plain", device="cpu")
    return {
        "runs": output["runs"], "checks": output["checks"], "server_calls": server_calls,
        "expected": [expected(server_scorer, s) for s in full], "expected_executor": [expected(executor_scorer, s) for s in executor],
    }  # fmt: skip


def test_the_documented_keys_reach_our_function_and_give_the_apis_rewards(verl_runs):
    run = verl_runs["runs"]["function"]
    assert_matches(run, verl_runs["expected"], MODULES)
    scored = sum(len(w) > 1 for w in verl_runs["expected"])  # the samples with a module text (not the untagged one)
    assert run["manager"] == "NaiveRewardManager" and run["scorer_calls"] == scored  # one call per sample
    assert sorted(run["extra"]) == sorted(["score", *(f"{m}_score" for m in MODULES)])
    assert "reward/mean@1" in run["metrics"] and "planner_score/mean@1" in run["metrics"]
    assert verl_runs["checks"]["function"]["called"] is True


def test_the_old_top_level_keys_never_reach_our_function_on_0_9(verl_runs):
    runs = verl_runs["runs"]
    assert runs["legacy keys, data_source agent"] == {"error": "NotImplementedError: Reward function is not implemented for data_source='agent'"}
    silent = runs["legacy keys, data_source openai/gsm8k"]
    # verl's own GSM8K scorer, without a word: our function was never called and the rewards are not ours
    assert silent["scorer_calls"] == 0 and list(silent["extra"]) == ["acc"] and set(silent["rewards"]) == {0.0}
    assert np.abs(np.array([w["score"] for w in verl_runs["expected"]])).max() > 0.1
    check = verl_runs["checks"]["legacy keys"]
    assert check["called"] is False and "ignored by verl 0.9.1's main_ppo" in check["message"] and "reward.custom_reward_function.path=" in check["message"]


def test_our_manager_scores_a_workers_samples_in_one_call(verl_runs):
    run = verl_runs["runs"]["manager"]
    assert_matches(run, verl_runs["expected"], MODULES)
    assert run["manager"] == "ModuleRewardManager" and run["scorer_calls"] == 1
    assert run["extra"].keys() == verl_runs["runs"]["function"]["extra"].keys()
    assert verl_runs["checks"]["manager"]["called"] is True


def test_our_manager_sends_one_request_to_pipeline_serve(verl_runs):
    run = verl_runs["runs"]["manager through pipeline serve"]
    assert_matches(run, verl_runs["expected"], MODULES)
    assert run["scorer_calls"] == 0 and verl_runs["server_calls"] == 1


@pytest.mark.parametrize("path", ["function", "manager"])
def test_modules_left_out_is_a_string_column_verl_carries(verl_runs, path):
    run = verl_runs["runs"][f"untrained modules, {path}"]
    assert_matches(run, verl_runs["expected_executor"], ["executor"])
    assert set(run["extra"]) == {"score", "executor_score", "modules_left_out"}
    assert run["extra"]["modules_left_out"] == ["reflection,planner,memory"] * len(verl_runs["expected_executor"])
    assert not any(name.startswith("modules_left_out/") for name in run["metrics"])  # verl skips string columns in its metrics


def test_check_config_exits_1_when_verl_would_not_call_us():
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    command = [str(rl_python()), "-m", "pipeline.verl_reward", "--check-config", *LEGACY]
    result = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "will NOT call module-reward-models" in result.stdout and "default scorer" in result.stdout
