"""`pipeline score` on runs: a reward per module, per round and per run, and a ranking."""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from data.chat import import_files as import_chat
from data.intercode import import_files as import_intercode
from data.load import DataError, file_kind
from data.runs import load_runs, mine_pairs, write_runs
from data.trajectory import DEFAULT_MODULE_FIELDS, render_module
from features.views import View, pieces
from pipeline.cli import main
from pipeline.rewards import Rewards, ScoringError
from pipeline.score import LEFT_OUT, ranking, score_runs
from pipeline.score import input_kind as score_input_kind

FIXTURES = Path(__file__).parent / "fixtures"
CHAT = FIXTURES / "chat" / "openai_runs.jsonl"


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def refused(result, *expected: str) -> str:
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output  # a message, not a traceback
    for text in expected:
        assert text in result.output, (text, result.output)
    return result.output


# --- what the inputs are -----------------------------------------------------------------------


def test_runs_pairs_and_score_records_are_told_apart_by_content(tmp_path):
    intercode, _ = import_intercode(sorted((FIXTURES / "intercode").glob("*.json")))
    runs = write_runs(intercode, tmp_path / "intercode.jsonl")
    records, _ = mine_pairs(load_runs(runs))
    (tmp_path / "pairs.json").write_text(json.dumps(records))  # a JSON array, not lines
    (tmp_path / "score.jsonl").write_text(json.dumps({"context": "c", "modules": {"planner": "p"}}) + "\n")
    (tmp_path / "empty.jsonl").write_text("")
    from data import pairs_from_records, write_pairs

    write_pairs(pairs_from_records(records), tmp_path / "pairs.parquet")
    assert [file_kind(tmp_path / n) for n in ("intercode.jsonl", "pairs.json", "pairs.parquet", "score.jsonl", "empty.jsonl")] == [
        "runs", "pairs", "pairs", "score records", None,
    ]  # fmt: skip
    assert score_input_kind((runs,), None) == "runs" and score_input_kind((tmp_path / "score.jsonl",), None) == "score records"
    assert score_input_kind((tmp_path / "empty.jsonl",), None) == "score records"  # whose reader names what is wrong
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
