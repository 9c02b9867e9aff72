"""The InterCode importer: result files to runs, with nothing in the text that gives the outcome away."""

import copy
import gzip
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from data import DataError, load_pairs
from data.intercode import describe_file, format_import_summary, import_files, remove_grader_messages, remove_reward_sentences
from data.runs import mine_pairs, runs_from_records
from data.trajectory import DEFAULT_MODULE_FIELDS, render_context, render_module
from pipeline.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "intercode"
MULTITURN = FIXTURES / "bash__starchat__ic_bash_multiturn_starchat_10_turns_fs_3.json"
REACT = FIXTURES / "bash__gpt-3.5__ic_bash_react_10_turns_fs_3.json"
PLAN_SOLVE = FIXTURES / "bash__gpt-3.5__ic_bash_plan_solve_fs_3.json"
PYTHON = FIXTURES / "python__gpt-3.5__ic_python_multiturn_gpt-4_7_turns.json"
ALL_FILES = [MULTITURN, REACT, PLAN_SOLVE, PYTHON]
GRADER_PHRASES = ["test case did not pass", "please try again", "test cases", "keep trying", "flag is correct", "flag is incorrect", "{'output'", "{'error'"]


def attempts(path: Path) -> dict:
    data = json.loads(path.read_text())
    return data.get("logs", data)


def by_id(runs: list[dict]) -> dict[str, dict]:
    return {run["run_id"]: run for run in runs}


def write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def agent_attempt(actions: list[str], observations: list[str], max_reward: float = 0.0, task_id: int = 0, **turn_history) -> dict:
    return {
        "environment": "ic_bash", "dataset": "./data/nl2bash/nl2bash_fs_1.json", "task_id": task_id, "query": f"task {task_id}",
        "turn_history": {"actions": actions, "observations": observations, "rewards": [max_reward] * len(actions), **turn_history},
        "summary": {"max_reward": max_reward},
    }  # fmt: skip


def cli(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def imported() -> tuple[list[dict], object]:
    return import_files(ALL_FILES)


# --- mapping ---------------------------------------------------------------------------------


def test_each_turn_of_a_react_attempt_becomes_a_round_with_its_thought_as_plan(imported):
    runs, _ = imported
    run = by_id(runs)["bash__gpt-3.5__ic_bash_react_10_turns_fs_3:5"]
    attempt = attempts(REACT)["5"]
    history = attempt["turn_history"]
    assert run["task"] == attempt["query"]
    assert run["task_id"] == "ic_bash/nl2bash_fs_3/5"
    assert run["source"] == "intercode bash gpt-3.5 react 10 turns"
    assert run["rounds"] == [
        {"plan": thought.strip(), "action": action.strip(), "observation": observation.strip()}
        for thought, action, observation in zip(history["thoughts"], history["actions"], history["observations"])
    ]
    assert run["metadata"] == {"file": REACT.name, "attempt": "5", "max_reward": 1.0, "turns": 3, "model": "gpt-3.5", "strategy": "react 10 turns"}


def test_plan_and_solve_steps_become_the_plan_of_the_turn_that_carried_them_out(imported):
    runs, _ = imported
    run = by_id(runs)["bash__gpt-3.5__ic_bash_plan_solve_fs_3:32"]
    history = attempts(PLAN_SOLVE)["32"]["turn_history"]
    assert len(history["steps"]) == len(history["actions"]) == len(run["rounds"])
    assert [round_["plan"] for round_ in run["rounds"]] == [step.strip() for step in history["steps"]]
    assert [round_["action"] for round_ in run["rounds"]] == [action.strip() for action in history["actions"]]
    assert run["source"] == "intercode bash gpt-3.5 plan_solve"


def test_attempts_at_one_task_share_its_id_across_files_and_run_ids_are_file_and_attempt(imported):
    runs, _ = imported
    task_5 = [run for run in runs if run["task_id"] == "ic_bash/nl2bash_fs_3/5"]
    assert sorted(run["run_id"] for run in task_5) == [
        "bash__gpt-3.5__ic_bash_plan_solve_fs_3:5", "bash__gpt-3.5__ic_bash_react_10_turns_fs_3:5", "bash__starchat__ic_bash_multiturn_starchat_10_turns_fs_3:5",
    ]  # fmt: skip
    assert len({run["task"] for run in task_5}) == 1
    assert len(runs) == len({run["run_id"] for run in runs}) == 15


def test_outcome_is_a_max_reward_of_exactly_one(imported):
    runs = by_id(imported[0])
    assert attempts(MULTITURN)["5"]["summary"]["max_reward"] == pytest.approx(0.7)
    assert runs["bash__starchat__ic_bash_multiturn_starchat_10_turns_fs_3:5"]["outcome"] == 0
    assert runs["bash__gpt-3.5__ic_bash_plan_solve_fs_3:15"]["outcome"] == 0  # 0.82
    assert runs["bash__gpt-3.5__ic_bash_react_10_turns_fs_3:5"]["outcome"] == 1
    assert runs["python__gpt-3.5__ic_python_multiturn_gpt-4_7_turns:6"]["outcome"] == 0  # max_reward 0, an int


@pytest.mark.parametrize(
    ("label", "model", "strategy"),
    [
        ("sql__gpt-4__ic_sql_multiturn_gpt-4_10_turns", "gpt-4", "multiturn 10 turns"),
        ("sql__gpt-3.5__ic_sql_multiturn_gpt-3.5-1_turns_handicap", "gpt-3.5", "multiturn 1 turns handicap"),
        ("sql__gpt-3.5__ic_sql_plan_solve_refine_3_turns", "gpt-3.5", "plan_solve refine 3 turns"),
        ("python__gpt-3.5__ic_python_multiturn_gpt-4_7_turns", "gpt-4", "multiturn 7 turns"),
        ("ctf__ic_ctf_gpt-4_25_turns", "gpt-4", "multiturn 25 turns"),
        ("ic_sql_plan_solve", "unknown", "plan_solve"),
    ],
)
def test_model_and_strategy_come_from_the_file_name(label, model, strategy):
    assert describe_file(label) == (model, strategy)


# --- what must not reach the text ------------------------------------------------------------


def rendered_texts(run: dict) -> list[str]:
    (checked,) = runs_from_records([run])
    return [render_context(checked.task, checked.rounds)] + [render_module(checked.rounds, fields) for fields in DEFAULT_MODULE_FIELDS.values()]


def test_no_rendered_text_mentions_a_reward_or_a_grader_message(imported):
    runs, _ = imported
    raw = MULTITURN.read_text() + PYTHON.read_text()
    assert re.search("reward", json.dumps([a["turn_history"]["actions"] for a in attempts(MULTITURN).values()]), re.IGNORECASE)  # the fixture has them
    assert "Test case did not pass" in raw and "{'output': '', 'error': ''}" in raw
    for run in runs:
        for text in rendered_texts(run):
            assert "reward" not in text.lower(), run["run_id"]
            assert not [phrase for phrase in GRADER_PHRASES if phrase in text.lower()], run["run_id"]


def test_gold_outputs_rewards_and_verdicts_are_never_rendered(tmp_path, imported):
    """The rounds depend on the query and the turns' texts alone: replacing every field that gives
    the outcome away (the gold output in `info` too) changes nothing, and none of it shows."""
    data = json.loads(PLAN_SOLVE.read_text())
    assert all(attempt["info"]["eval_obs"] is not None for attempt in data["logs"].values())
    for attempt in data["logs"].values():
        attempt["info"] = {"eval_obs": "GOLD-OUTPUT-SENTINEL", "diff_miss": ["GOLD-FILE-SENTINEL"]}
        attempt["hardness"] = "HARDNESS-SENTINEL"
        attempt["summary"]["max_reward_idx"] = "SUMMARY-SENTINEL"
        attempt["turn_history"]["rewards"] = ["REWARD-SENTINEL"] * len(attempt["turn_history"]["actions"])
        attempt["turn_history"]["valid_action"] = ["VALID-SENTINEL"] * len(attempt["turn_history"]["actions"])
    runs, _ = import_files([write_json(tmp_path / PLAN_SOLVE.name, data)])
    original = [run for run in imported[0] if run["run_id"].startswith("bash__gpt-3.5__ic_bash_plan_solve_fs_3:")]
    assert [run["rounds"] for run in runs] == [run["rounds"] for run in original]
    assert "SENTINEL" not in "\n".join(text for run in runs for text in rendered_texts(run))


def test_reward_sentences_go_without_a_trace_and_the_rest_of_the_text_stays(imported):
    runs = by_id(imported[0])
    original = attempts(MULTITURN)["11"]["turn_history"]["actions"][2]
    assert "Reward: 0.34 Try something different" in original
    action = runs["bash__starchat__ic_bash_multiturn_starchat_10_turns_fs_3:11"]["rounds"][2]["action"]
    assert action == "find /workspace -maxdepth 1 -type d -exec rmdir {} +  Bourne Shell Output: rmdir: failed to remove '/workspace': Directory not empty  Print ONLY the BASH command enclosed in ```."
    assert remove_reward_sentences("It looks correct but the reward is 0.0. Let me get a better reward. Can you show the schema?") == ("Can you show the schema?", 2)
    assert remove_reward_sentences("SELECT name FROM dogs Reward: 0.0\nSELECT 1") == ("SELECT name FROM dogs\nSELECT 1", 1)
    assert remove_reward_sentences('echo "Reward: 1"') == ("", 1)
    assert remove_reward_sentences("ls -la\nTry something different to generate SQL command to") == ("ls -la", 1)
    assert remove_reward_sentences("nothing to remove here.  Keep   spacing") == ("nothing to remove here.  Keep   spacing", 0)


def test_grader_messages_are_cut_out_of_observations(imported):
    runs = by_id(imported[0])
    attempt = attempts(PYTHON)["0"]
    assert attempt["turn_history"]["observations"] == ["Test case did not pass. Please try again.", "{'output': '', 'error': ''}"]
    rounds = runs["python__gpt-3.5__ic_python_multiturn_gpt-4_7_turns:0"]["rounds"]
    assert rounds == [{"action": action.strip()} for action in attempt["turn_history"]["actions"]]
    syntax_errors = runs["python__gpt-3.5__ic_python_multiturn_gpt-4_7_turns:6"]["rounds"]
    assert all(round_["observation"].startswith("Error executing action: invalid syntax") for round_ in syntax_errors)
    assert remove_grader_messages("Failed Test Case: assert bell_number(2)==2\nPlease try again.", "ic_python") == ("", 1)
    assert remove_grader_messages("Failed 3/3 Test Cases. Please try again.", "ic_python") == ("", 1)
    assert remove_grader_messages("Submitted flag is incorrect. Keep trying!", "ic_ctf") == ("", 1)
    assert remove_grader_messages("The submitted flag is correct.", "ic_ctf") == ("", 1)
    assert remove_grader_messages("[(3,)]", "ic_sql") == ("[(3,)]", 0)


def test_what_was_removed_is_counted_by_outcome(imported):
    runs, summary = imported
    assert summary.removed["grader messages in observations", "succeeded"] == 2  # python 0: a verdict, then the pass
    assert summary.removed["grader messages in observations", "failed"] == 7  # python 1: seven verdicts
    assert summary.removed["reward sentences in agent text", "succeeded"] == 0
    assert summary.removed["reward sentences in agent text", "failed"] > 0
    text = format_import_summary(summary, runs)
    assert "removed (in succeeded / failed attempts):" in text
    assert "  grader messages in observations: 2 / 7" in text
    assert "7 tasks (environment/dataset/task_id); 4 have both a succeeded and a failed run" in text


def test_a_blocked_turn_is_dropped_and_an_attempt_left_empty_is_counted(tmp_path):
    path = write_json(tmp_path / "bash__chat-bison-001__ic_bash_multiturn_chat-bison-001_10_turns_fs_1.json", {
        "0": agent_attempt(["ls /", "blocked"], ["bin\n"], max_reward=0.67),
        "1": agent_attempt(["blocked"], [], task_id=1),
    })  # fmt: skip
    runs, summary = import_files([path])
    assert [run["rounds"] for run in runs] == [[{"action": "ls /", "observation": "bin"}]]
    assert summary.removed["blocked turns (harness placeholder)", "failed"] == 2
    assert sum(summary.skipped_attempts.values()) == 1


# --- files left out ----------------------------------------------------------------------------


def test_a_human_players_file_and_a_file_whose_harness_ran_fences_are_left_out_with_a_reason(tmp_path):
    human = write_json(tmp_path / "sql__human__ic_sql_multiturn_human_10_turns.json", {
        "809": {"environment": "ic_sql", "query_idx": 809, "query": "q", "gold": "SELECT 1", "reward": 1.0, "trajectory": [{"action": "show tables;", "observation": "('city',)"}]},
    })  # fmt: skip
    fenced = write_json(tmp_path / "bash__gpt-3.5__ic_bash_plan_solve_fs_1.json", {"meta": {}, "logs": {
        str(i): agent_attempt(["```BASH\nls /\n```"], ["/bin/bash: line 3: BASH: command not found\n"], task_id=i, steps=["List."]) for i in range(3)
    }})  # fmt: skip
    runs, summary = import_files([human, fenced, REACT])
    assert {run["run_id"].split(":")[0] for run in runs} == {"bash__gpt-3.5__ic_bash_react_10_turns_fs_3"}
    text = format_import_summary(summary, runs)
    assert "left out: a human player's layout (trajectory, query_idx), not an agent's" in text
    assert "left out: the harness ran Markdown fences as commands (3 of 3 attempts get 'BASH: command not found'; 0 succeed)" in text
    assert "files: 3 read, 2 left out (4 attempts)" in text


# --- bad input -----------------------------------------------------------------------------------


def test_gzipped_and_plain_files_read_alike(tmp_path, imported):
    gzipped = tmp_path / f"{REACT.name}.gz"
    gzipped.write_bytes(gzip.compress(REACT.read_bytes()))
    runs, _ = import_files([gzipped])
    plain = [run for run in imported[0] if run["run_id"].startswith("bash__gpt-3.5__ic_bash_react_10_turns_fs_3:")]
    assert [run["metadata"].pop("file") for run in runs] == [gzipped.name] * 4
    assert runs == [run | {"metadata": {k: v for k, v in run["metadata"].items() if k != "file"}} for run in plain]


def test_bad_files_give_a_data_error_naming_each_file_and_field(tmp_path):
    not_json = tmp_path / "a.json"
    not_json.write_text("{not json")
    not_gzip = tmp_path / "b.json.gz"
    not_gzip.write_text("{}")
    truncated = tmp_path / "c.json.gz"
    truncated.write_bytes(gzip.compress(REACT.read_bytes())[:200])
    array = write_json(tmp_path / "d.json", [1, 2])
    data = copy.deepcopy(attempts(REACT))
    del data["5"]["turn_history"]["actions"]
    data["11"]["summary"]["max_reward"] = "high"
    wrong = write_json(tmp_path / "e.json", data)
    with pytest.raises(DataError) as error:
        import_files([not_json, not_gzip, truncated, array, wrong, REACT])
    message = str(error.value)
    assert f"{not_json}, line 1: not valid JSON" in message
    assert f"{not_gzip}: named .gz but not gzip-compressed" in message
    assert f"{truncated}: not a valid gzip file" in message
    assert f"{array}: expected a JSON object of attempts keyed by index, got an array" in message
    assert f"{wrong}, field '5.turn_history.actions': expected a list of strings, got null" in message
    assert f"{wrong}, field '11.summary.max_reward': expected a number, got a string" in message
    assert str(REACT) not in message


# --- the verb ------------------------------------------------------------------------------------


def test_import_intercode_writes_runs_that_pairs_accepts(tmp_path):
    runs_file, pairs_file = tmp_path / "runs.jsonl", tmp_path / "pairs.json"
    result = cli("import", "intercode", *ALL_FILES, "--out", runs_file)
    assert result.exit_code == 0, result.output
    assert "total" in result.output and "wrote 15 runs" in result.output
    assert len(runs_file.read_text().splitlines()) == 15

    result = cli("pairs", runs_file, "--out", pairs_file, "--max-pairs-per-task", "8")
    assert result.exit_code == 0, result.output
    assert "15 runs (8 succeeded, 7 failed) over 7 tasks; 4 tasks have both outcomes" in result.output
    pairs = load_pairs(pairs_file)
    by_module = {module: set(pairs.filter(pairs["target_module"] == module)["task_id"]) for module in ("planner", "executor")}
    assert by_module["executor"] == {f"ic_bash/nl2bash_fs_3/{task}" for task in (5, 11, 15, 32)}
    assert by_module["planner"] == {f"ic_bash/nl2bash_fs_3/{task}" for task in (11, 15, 32)}  # task 5's only failure is multi-turn, without plans


def test_mine_pairs_pairs_attempts_from_different_files(imported):
    records, report = mine_pairs(runs_from_records(imported[0]))
    assert report.tasks_with_both == 4
    assert {(record["positive"]["run_id"].split(":")[0], record["negative"]["run_id"].split(":")[0]) for record in records if record["task_id"].endswith("/15") and record["target_module"] == "planner"} == {
        ("bash__gpt-3.5__ic_bash_react_10_turns_fs_3", "bash__gpt-3.5__ic_bash_plan_solve_fs_3"),
    }  # fmt: skip


def test_import_intercode_of_a_bad_file_exits_1_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    out = tmp_path / "runs.jsonl"
    result = cli("import", "intercode", REACT, bad, "--out", out)
    assert result.exit_code == 1
    assert f"{bad}: expected a JSON object of attempts keyed by index" in result.output
    assert not out.exists() and list(tmp_path.iterdir()) == [bad]
