"""`pipeline fit` (logs or pairs -> a checkpoint ready to serve, in one command) and `pipeline score`
on runs (a reward per module, per round and per run, and a ranking).

The end-to-end tests fit MiniLM heads at 32 tokens for 2 epochs on the fixtures' real runs
(InterCode and AutoGPT: 19 pairs over 6 tasks), about 20 s each on 2 CPU cores."""

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from data import UserError, load_pairs
from data.autogpt import import_reports
from data.chat import import_files as import_chat
from data.intercode import import_files as import_intercode
from data.load import DataError, file_kind
from data.runs import load_runs, mine_pairs, write_runs
from data.trajectory import DEFAULT_MODULE_FIELDS, render_context, render_module, render_round
from features.views import View, pieces
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.fit import FitPlan, check_enough_pairs, input_kind
from pipeline.rewards import Rewards, ScoringError, load
from pipeline.score import LEFT_OUT, ranking, score_runs
from pipeline.score import input_kind as score_input_kind

FIXTURES = Path(__file__).parent / "fixtures"
CHAT = FIXTURES / "chat" / "openai_runs.jsonl"
TINY = {
    "model": {"encoder": "minilm", "max_context_tokens": 32, "max_module_tokens": 32},
    "stage_0": {"epochs": 2, "batch_size": 16},
    "training": {"device": "cpu"},
    "evaluation": {"bootstrap_samples": 200},
}


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def refused(result, *expected: str) -> str:
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output  # a message, not a traceback
    for text in expected:
        assert text in result.output, (text, result.output)
    return result.output


def fixture_runs(folder: Path) -> list[Path]:
    """The fixtures' InterCode and AutoGPT attempts as two runs files."""
    intercode, _ = import_intercode(sorted((FIXTURES / "intercode").glob("*.json")))
    autogpt, _ = import_reports(sorted((FIXTURES / "autogpt").glob("*report.md")))
    return [write_runs(intercode, folder / "intercode.jsonl"), write_runs(autogpt, folder / "autogpt.jsonl")]


def tiny_config(folder: Path, **sections) -> Path:
    import yaml

    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, **sections}))
    return path


def printed(output: str, verb: str) -> list[str]:
    """The arguments of the `pipeline VERB ...` line fit printed (without `pipeline`)."""
    (line,) = [line.strip() for line in output.splitlines() if line.strip().startswith(f"pipeline {verb} ")]
    return shlex.split(line)[1:]


# --- what the inputs are -----------------------------------------------------------------------


def test_runs_pairs_and_score_records_are_told_apart_by_content(tmp_path):
    runs, _ = fixture_runs(tmp_path)
    records, _ = mine_pairs(load_runs(runs))
    (tmp_path / "pairs.json").write_text(json.dumps(records))  # a JSON array, not lines
    (tmp_path / "score.jsonl").write_text(json.dumps({"context": "c", "modules": {"planner": "p"}}) + "\n")
    (tmp_path / "empty.jsonl").write_text("")
    from data import pairs_from_records, write_pairs

    write_pairs(pairs_from_records(records), tmp_path / "pairs.parquet")
    assert [file_kind(tmp_path / n) for n in ("intercode.jsonl", "pairs.json", "pairs.parquet", "score.jsonl", "empty.jsonl")] == [
        "runs", "pairs", "pairs", "score records", None,
    ]  # fmt: skip
    assert input_kind((runs,), None) == "runs" and input_kind((tmp_path / "pairs.json",), None) == "pairs"
    assert input_kind((tmp_path / "empty.jsonl", runs), None) == "runs"  # read as the others are: their reader names what is wrong
    assert input_kind((tmp_path / "pairs.json",), "runs") == "runs"  # --from wins
    with pytest.raises(UserError, match=r"mix runs .* and pairs .*pipeline pairs .* --out mined.jsonl"):
        input_kind((runs, tmp_path / "pairs.json"), None)
    with pytest.raises(UserError, match="what `pipeline score` reads"):
        input_kind((tmp_path / "score.jsonl",), None)
    with pytest.raises(UserError, match="cannot tell what .* fit takes runs"):
        input_kind((tmp_path / "empty.jsonl",), None)
    assert score_input_kind((runs,), None) == "runs" and score_input_kind((tmp_path / "score.jsonl",), None) == "score records"
    with pytest.raises(ScoringError, match="pipeline evaluate"):
        score_input_kind((tmp_path / "pairs.json",), None)


def test_runs_without_an_outcome_load_only_for_scoring(tmp_path):
    record = {"run_id": "r1", "task": "t", "rounds": [{"plan": "p", "action": "a"}]}
    path = tmp_path / "runs.jsonl"
    path.write_text(json.dumps(record) + "\n" + json.dumps({**record, "run_id": "r2", "outcome": 0.7}) + "\n")
    with pytest.raises(DataError, match="field 'outcome': missing"):
        load_runs(path)
    unknown, reward = load_runs(path, outcome_optional=True)
    assert (unknown.outcome, unknown.succeeded) == (None, None) and reward.outcome == 0.7
    refused(run("pairs", path, "--out", tmp_path / "pairs.jsonl"), "field 'outcome': missing")  # mining still needs outcomes
    chat, _ = import_chat([CHAT], outcome_field="no_such_field", outcome_optional=True)
    assert chat and all("outcome" not in r for r in chat)
    with pytest.raises(DataError, match="no_such_field"):
        import_chat([CHAT], outcome_field="no_such_field")


# --- refusals ---------------------------------------------------------------------------------


def test_too_little_data_is_a_refusal_saying_what_is_needed(tmp_path):
    config = load_config(overrides={"model.encoder": "minilm"})
    chat, _ = import_chat([CHAT])
    records, _ = mine_pairs(load_runs(write_runs(chat, tmp_path / "runs.jsonl")))
    from data import pairs_from_records, write_pairs

    pairs = write_pairs(pairs_from_records(records), tmp_path / "pairs.jsonl")
    with pytest.raises(UserError, match=r"too little data to fit: the 4 pairs come from 2 task\(s\).* leave test empty.* at least 3 tasks"):
        check_enough_pairs((pairs,), config, test=True)
    check_enough_pairs((pairs,), config, test=False)  # data.test_fraction 0: train and val are enough
    # the verb: the runs are mined (and the pairs kept to look at), then the refusal; nothing is trained
    output = refused(run("fit", CHAT, "--from", "chat", "--out", tmp_path / "fit"), "[2/7] pipeline pairs", "too little data to fit", "at least 3 tasks")
    assert "pipeline split" not in output and "Traceback" not in output
    assert sorted(p.name for p in (tmp_path / "fit").iterdir()) == ["config.yaml", "fit.json", "pairs.config.yaml", "pairs.jsonl", "runs.jsonl"]
    # runs of which no task has both outcomes: the pairs verb's own refusal
    one_sided = [r for r in chat if r["outcome"] == 1]
    refused(run("fit", write_runs(one_sided, tmp_path / "won.jsonl"), "--out", tmp_path / "fit2"), "no pairs: no task has a succeeded and a failed run")


def test_an_existing_folder_not_of_fit_is_refused_untouched(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    (out / "config.yaml").write_text("mine too")
    runs, _ = fixture_runs(tmp_path)
    output = refused(run("fit", runs, "--out", out), str(out), "notes.txt", "not a fit folder", "--overwrite")
    assert len(output.strip().splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "notes.txt"] and (out / "config.yaml").read_text() == "mine too"


def test_mixed_inputs_and_options_that_do_not_apply_are_refused(tmp_path):
    runs, _ = fixture_runs(tmp_path)
    pairs = tmp_path / "pairs.jsonl"
    assert run("pairs", runs, "--out", pairs).exit_code == 0
    refused(run("fit", runs, pairs, "--out", tmp_path / "a"), "mix runs", "pipeline fit mined.jsonl")
    assert run("fit", pairs, "--out", tmp_path / "b", "--max-pairs-per-task", "3").exit_code == 2  # a usage error
    assert run("fit", runs, "--out", tmp_path / "c", "--task-field", "x").exit_code == 2
    assert not any((tmp_path / name).exists() for name in "abc")


# --- the plan ---------------------------------------------------------------------------------


def test_the_plan_lays_out_the_folder_and_prints_working_commands(tmp_path):
    plan = FitPlan((Path("runs.jsonl"),), "runs", tmp_path / "fit", tmp_path / "fit" / "cache", test=True, mining={"seed": 3})
    verbs = [step.verb for step in plan.data_steps()] + [plan.split_step().verb, plan.embed_step().verb] + [s.verb for s in plan.model_steps("ns")]
    assert verbs == ["pairs", "split", "embed", "train-heads", "evaluate", "evaluate"] and plan.total_steps == 6
    assert plan.data_steps()[0].arguments == {"files": (Path("runs.jsonl"),), "out": tmp_path / "fit" / "pairs.jsonl", "seed": 3}
    assert plan.model_steps("ns")[0].arguments["namespace_id"] == "ns"
    (tmp_path / "fit" / "checkpoint").mkdir(parents=True)
    (tmp_path / "fit" / "checkpoint" / "normalization.json").write_text(json.dumps({"planner": {"mean": 0, "std": 1}}))
    commands = plan.commands()
    assert commands["serve"] == f"pipeline serve {tmp_path}/fit/checkpoint --cache {tmp_path}/fit/cache --normalize"
    assert commands["score"].startswith(f"pipeline score {tmp_path}/fit/checkpoint runs.jsonl --out {tmp_path}/fit/scored.jsonl")
    chat = FitPlan((CHAT,), "chat", tmp_path / "f2", Path("shared"), test=False, import_options={"task_field": "id"})
    assert [s.verb for s in chat.data_steps()] == ["import chat", "pairs"] and chat.total_steps == 6
    assert chat.data_steps()[0].arguments == {"files": (CHAT,), "out": tmp_path / "f2" / "runs.jsonl", "task_field": "id"}
    assert [s.arguments["out"].name for s in chat.model_steps("ns")] == ["checkpoint", "report-val"]
    pairs = FitPlan((Path("p.jsonl"),), "pairs", tmp_path / "f3", Path("c"), test=True)
    assert [s.verb for s in pairs.data_steps()] == ["validate"] and pairs.pair_files == (Path("p.jsonl"),)


# --- scoring runs, with a scorer that needs no model ---------------------------------------------


class LengthScorer:
    """Stands in for a RewardScorer: the reward of a row is its module text's length / 100."""

    modules = ["reflection", "planner", "executor", "memory"]
    trained_modules = ["planner", "executor", "memory"]
    scorable_modules = trained_modules
    allow_untrained, members, normalize = False, 1, False
    view = View()
    config: dict = {}

    def rewards(self, contexts, texts, modules):
        rewards = np.array([len(text) / 100 for text in texts], np.float32)
        return Rewards(rewards, rewards, np.zeros_like(rewards), np.zeros_like(rewards), None)


def test_scored_runs_have_module_round_and_total_rewards_and_name_what_is_left_out(tmp_path):
    from data.runs import runs_from_records

    records = [
        {"run_id": "b", "task": "t", "outcome": 0, "rounds": [{"reflection": "r", "plan": "p1", "action": "a"}, {"observation": "o"}, {"plan": "p333"}]},
        {"run_id": "a", "task_id": "x", "task": "t", "rounds": [{"action": "act"}]},
    ]
    runs = runs_from_records(records, outcome_optional=True)
    scored = score_runs(LengthScorer(), runs, DEFAULT_MODULE_FIELDS)
    assert [r["run_id"] for r in scored] == ["b", "a"]  # input order
    first, second = scored
    assert set(first) == {"run_id", "task", "outcome", "scores", "round_rewards", "total", "modules_left_out"} and "outcome" not in second
    planner = render_module(runs[0].rounds, ["plan"])
    assert first["scores"]["planner"] == pytest.approx(len(planner) / 100)
    assert list(first["scores"]) == ["planner", "executor"]
    # each round's module text alone, under its own header; None where the module wrote nothing
    assert first["round_rewards"]["planner"] == [pytest.approx(len("[Round 1]\n<plan>p1</plan>") / 100), None, pytest.approx(len("[Round 3]\n<plan>p333</plan>") / 100)]
    assert first["round_rewards"]["executor"][2] is None and len(first["round_rewards"]["executor"]) == 3
    assert first["total"] == pytest.approx(np.mean(list(first["scores"].values())))
    assert first["modules_left_out"] == {"reflection": LEFT_OUT["untrained"], "memory": LEFT_OUT["no text"]}
    assert second["task_id"] == "x" and list(second["scores"]) == ["executor"]
    assert "round_rewards" not in score_runs(LengthScorer(), runs, DEFAULT_MODULE_FIELDS, round_rewards=False)[0]
    table = ranking(scored)
    assert table.splitlines()[1].split()[:2] == ["1", "b"] and "a" in table.splitlines()[2]


def test_each_piece_of_the_rounds_view_knows_its_round():
    text = render_module([{"plan": "one two three four five"}, {"action": "x"}, {"plan": "six"}], ["plan"])
    for window, max_pieces in ((2, 32), (2, 2), (100, 32)):
        view = View("rounds", {"context": window, "module": window}, max_pieces)
        assert len(view.piece_rounds(text, "module")) == len(pieces(text, "module", "rounds", window, max_pieces))
    assert View("rounds", {"context": 2, "module": 2}, 32).piece_rounds(text, "module") == [1, 1, 1, 1, 3, 3]
    assert View("rounds", {"context": 2, "module": 2}, 2).piece_rounds(text, "module") == [1, 3]


def test_score_points_to_the_formats_it_reads(tmp_path, reward_checkpoint):
    (tmp_path / "other.jsonl").write_text(json.dumps({"id": 1, "text": "hello"}) + "\n")
    refused(run("score", reward_checkpoint / "plain", tmp_path / "other.jsonl", "--out", tmp_path / "o.jsonl"), "not a score record", "runs (data/runs.py", "--from autogpt|intercode|chat")


# --- end to end ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """`pipeline fit` on the fixtures' runs with the tiny config: (folder, runs files, printed output)."""
    root = tmp_path_factory.mktemp("fit")
    runs = fixture_runs(root)
    result = run("fit", *runs, "--out", root / "fit", "--config", tiny_config(root))
    assert result.exit_code == 0, result.output
    return root / "fit", runs, result.output


@pytest.mark.slow
def test_fit_on_runs_makes_a_checkpoint_reports_and_commands_that_work(fitted, tmp_path):
    out, runs, output = fitted
    for name in ("fit.json", "config.yaml", "pairs.jsonl", "split/train.jsonl", "split/val.jsonl", "split/test.jsonl",
                 "checkpoint/config.json", "checkpoint/heads.safetensors", "report-val/report.md", "report-test/report.json"):  # fmt: skip
        assert (out / name).is_file(), name
    assert [line.split(" — ")[0] for line in output.splitlines() if line.startswith("[")] == [
        "[1/6] pipeline pairs", "[2/6] pipeline split", "[3/6] pipeline embed", "[4/6] pipeline train-heads", "[5/6] pipeline evaluate", "[6/6] pipeline evaluate",
    ]  # fmt: skip
    assert output.count(" s)\n") == 6 and "wrote 19 pairs" in output
    assert len(load_pairs([out / "split" / f"{n}.jsonl" for n in ("train", "val", "test")])) == 19
    record = json.loads((out / "fit.json").read_text())
    assert record["done"] and record["kind"] == "runs" and record["commands"]["score"] in output
    checkpoint = json.loads((out / "checkpoint" / "config.json").read_text())
    assert (out / "checkpoint" / "normalization.json").is_file() and checkpoint["training_config"]["model"]["max_context_tokens"] == 32
    serve = printed(output, "serve")
    assert serve == ["serve", str(out / "checkpoint"), "--cache", str(out / "cache"), "--normalize"]
    main.commands["serve"].make_context("serve", serve[1:])  # its options parse

    # the printed score command, as printed, on the runs fit read
    score = printed(output, "score")
    assert score[2:4] == [str(p) for p in runs]
    result = run(*score)
    assert result.exit_code == 0, result.output
    assert "runs ranked by total" in result.output and "rank  run_id" in result.output
    scored = [json.loads(line) for line in (out / "scored.jsonl").read_text().splitlines()]
    loaded = load_runs(runs)
    assert [r["run_id"] for r in scored] == [r.run_id for r in loaded]
    # equal to the Python API's rewards of the rendered texts
    scorer = load(out / "checkpoint", out / "cache", normalize=True, device="cpu")
    assert scorer.trained_modules == ["planner", "executor"]
    for record, one in list(zip(scored, loaded))[:6]:
        assert set(record) >= {"run_id", "task_id", "task", "outcome", "scores", "round_rewards", "total", "modules_left_out"}
        context = render_context(one.task, one.rounds)
        for module, fields in (("planner", ["plan"]), ("executor", ["action", "observation"])):
            text = render_module(one.rounds, fields)
            if not text:
                assert record["modules_left_out"][module] == LEFT_OUT["no text"]
                continue
            assert record["scores"][module] == pytest.approx(float(scorer.score([context], [text], [module])[0]), abs=1e-5)
            k = next(i for i, r in enumerate(one.rounds, start=1) if render_round(r, fields))
            alone = f"[Round {k}]\n{render_round(one.rounds[k - 1], fields)}"
            expected = float(scorer.score([render_context(one.task, one.rounds[:k])], [alone], [module])[0])
            assert record["round_rewards"][module][k - 1] == pytest.approx(expected, abs=1e-5)
        assert record["modules_left_out"]["reflection"] == record["modules_left_out"]["memory"] == LEFT_OUT["untrained"]
        assert record["total"] == pytest.approx(np.mean(list(record["scores"].values())), abs=1e-6)


@pytest.mark.slow
def test_score_on_runs_names_untrained_modules_and_takes_chat_logs(fitted, tmp_path):
    out, _, _ = fitted
    # chat transcripts with Reflection: paragraphs: reflection has text, but its head never trained
    result = run("score", out / "checkpoint", CHAT, "--from", "chat", "--reflection-pattern", "^Reflection: (.*)", "--out", tmp_path / "chat.jsonl", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "read 4 runs from 1 chat file(s)" in result.output and "reflection, memory refused (untrained heads)" in result.output
    scored = [json.loads(line) for line in (tmp_path / "chat.jsonl").read_text().splitlines()]
    assert [r["run_id"] for r in scored] == [f"openai_runs:{i}" for i in range(4)] and [r["outcome"] for r in scored] == [1, 0, 1, 0]
    assert scored[0]["modules_left_out"]["reflection"] == LEFT_OUT["untrained"] and "reflection" not in scored[0]["scores"]
    assert set(scored[0]["scores"]) == {"planner", "executor"}
    # runs without an outcome are scored; the outcome is simply not there
    records = [json.loads(line) for line in (FIXTURES / "chat" / "openai_runs.jsonl").read_text().splitlines()]
    (tmp_path / "unknown.jsonl").write_text("".join(json.dumps({k: v for k, v in r.items() if k != "outcome"}) + "\n" for r in records))
    result = run("score", out / "checkpoint", tmp_path / "unknown.jsonl", "--from", "chat", "--out", tmp_path / "unknown-scored.jsonl", "--no-round-rewards")
    assert result.exit_code == 0, result.output
    unknown = [json.loads(line) for line in (tmp_path / "unknown-scored.jsonl").read_text().splitlines()]
    assert all("outcome" not in r and "round_rewards" not in r for r in unknown)
    assert run("score", out / "checkpoint", CHAT, "--from", "chat", "--out", tmp_path / "known.jsonl", "--no-round-rewards").exit_code == 0
    known = [json.loads(line) for line in (tmp_path / "known.jsonl").read_text().splitlines()]
    values = lambda records: [v for r in records for v in (r["total"], *r["scores"].values())]  # noqa: E731
    assert values(unknown) == pytest.approx(values(known), abs=1e-6)


@pytest.mark.slow
def test_fit_on_pairs_with_the_rounds_view_splits_each_reward_over_its_rounds(fitted, tmp_path):
    out, runs, _ = fitted
    result = run("fit", out / "pairs.jsonl", "--out", tmp_path / "fit", "--view", "rounds", "--test-fraction", "0", "--config", tiny_config(tmp_path))
    assert result.exit_code == 0, result.output
    assert "[1/5] pipeline validate" in result.output and "report-test" not in result.output
    assert not (tmp_path / "fit" / "pairs.jsonl").exists() and (tmp_path / "fit" / "report-val" / "report.md").is_file()
    score = printed(result.output, "score")
    assert score[2] == "RUNS.jsonl"  # fit was given pairs: the user's runs go here
    score[2:3] = [str(p) for p in runs]
    result = run(*score)
    assert result.exit_code == 0, result.output
    assert "split over its rounds (rounds view)" in result.output
    for record in (json.loads(line) for line in (tmp_path / "fit" / "scored.jsonl").read_text().splitlines()):
        for module, reward in record["scores"].items():
            assert sum(r for r in record["round_rewards"][module] if r is not None) == pytest.approx(reward, abs=1e-4)
