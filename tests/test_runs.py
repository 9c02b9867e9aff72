"""Runs with outcomes: the run format, rendering, pair mining, the AutoGPT importer and their verbs."""

import json
import random
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from data import ConfigError, DataError, load_pairs, pairs_from_records
from data.autogpt import Step, attempt_rounds, import_reports, parse_report
from data.runs import load_runs, mine_pairs, runs_from_records
from data.trajectory import DEFAULT_MODULE_FIELDS, ROUND_FIELDS, render_context, render_module
from pipeline.cli import main

FIXTURES = Path(__file__).parent / "fixtures"
PAIRS_ORIGINAL = FIXTURES / "pairs_original.json"
REPORT_A = FIXTURES / "autogpt" / "20240305T020814_full_run.report.md"
REPORT_B = FIXTURES / "autogpt" / "20240315T020929_full_run.report.md"


def run_record(run_id: str, task: str = "Book the cheapest flight.", outcome: float = 1, **fields) -> dict:
    rounds = fields.pop("rounds", None) or [{"plan": f"plan of {run_id}", "action": f"act({run_id!r})", "observation": "ok"}]
    return {"run_id": run_id, "task": task, "outcome": outcome, "rounds": rounds, **fields}


def write_jsonl(path: Path, lines: list) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def cli(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


# --- the run format --------------------------------------------------------------------------


def test_valid_runs_load_with_rounds_stripped_and_ordered(tmp_path):
    path = write_jsonl(tmp_path / "runs.jsonl", [
        run_record("r1", rounds=[{"observation": " 3 flights ", "plan": "search", "memory_query": None, "reflection": "  "}], task_id="t1", source="agent v2", metadata={"cost": 1}),
        run_record("r2", outcome=False),
    ])  # fmt: skip
    first, second = load_runs(path)
    assert (first.run_id, first.task_id, first.source, first.succeeded, first.metadata) == ("r1", "t1", "agent v2", True, {"cost": 1})
    assert first.rounds == ({"plan": "search", "observation": "3 flights"},)
    assert (second.succeeded, second.outcome, second.task_id) == (False, 0.0, None)


def test_every_schema_problem_is_listed_with_file_line_run_id_and_field(tmp_path):
    path = write_jsonl(tmp_path / "runs.jsonl", [
        run_record("ok"),
        '{"run_id": "broken", ',
        run_record("r3", outcome="yes"),
        {"run_id": "r4", "outcome": 1, "rounds": [{"plan": "x"}]},
        run_record("r5", rounds=[{"plan": "x"}, {"thought": "y"}]),
        run_record("r6", rounds=[{"plan": 3}]),
        run_record("ok"),
        run_record("r8", outcome=0.7),
        run_record("r9", rounds=[{"plan": "x"}], metadata="failed: timeout"),
        ["not", "a", "run"],
        run_record("r11", rounds=[{"plan": "x"}, {"action": " ", "observation": None}]),
        {"run_id": "r12", "task": "t", "outcome": 1, "rounds": []},
    ])  # fmt: skip
    with pytest.raises(DataError) as caught:
        load_runs(path)
    message = str(caught.value)
    expected = [
        f"{path}, line 2: not valid JSON",
        f"{path}, line 3, run_id 'r3', field 'outcome': expected a number",
        f"{path}, line 4, run_id 'r4', field 'task': missing (or null)",
        f"{path}, line 5, run_id 'r5', field 'rounds[1].thought': unknown round field 'thought'",
        f"{path}, line 6, run_id 'r6', field 'rounds[0].plan': expected a string, got a number (3)",
        f"{path}, line 7, run_id 'ok', field 'run_id': duplicate run_id, first seen in {path} line 1",
        f"{path}, line 8, run_id 'r8', field 'outcome': outcome 0.7 is neither 1 (succeeded) nor 0 (failed)",
        f"{path}, line 9, run_id 'r9', field 'metadata': expected an object",
        f"{path}, line 10: expected a JSON object (one run), got an array",
        f"{path}, line 11, run_id 'r11', field 'rounds[1]': round has no text in any field",
        f"{path}, line 12, run_id 'r12', field 'rounds': no rounds",
    ]
    for text in expected:
        assert text in message, text
    assert len(caught.value.problems) == len(expected)


def test_duplicate_run_ids_across_files_and_unreadable_files_are_errors(tmp_path):
    first = write_jsonl(tmp_path / "a.jsonl", [run_record("r1")])
    second = write_jsonl(tmp_path / "b.jsonl", [run_record("r2"), run_record("r1", outcome=0)])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes(json.dumps(run_record("r3", task="Café"), ensure_ascii=False).encode("utf-8").replace("é".encode(), b"\xe9") + b"\n")
    array = tmp_path / "array.json"
    array.write_text(json.dumps([run_record("r4")]))
    with pytest.raises(DataError) as caught:
        load_runs([first, second, empty, latin1, array])
    message = str(caught.value)
    assert f"{second}, line 2, run_id 'r1', field 'run_id': duplicate run_id, first seen in {first} line 1" in message
    assert f"{empty}: file is empty" in message
    assert f"{latin1}, line 1: not valid UTF-8" in message
    assert f"{array}, line 1: expected JSON Lines" in message


def test_float_rewards_are_read_against_the_success_threshold():
    runs = runs_from_records([run_record("a", outcome=0.7), run_record("b", outcome=0.3), run_record("c", outcome=True)], success_threshold=0.5)
    assert [run.succeeded for run in runs] == [True, False, True]
    with pytest.raises(DataError, match="outcome 0.3 is neither 1"):
        runs_from_records([run_record("b", outcome=0.3)])


# --- rendering -------------------------------------------------------------------------------


def test_rendering_reproduces_the_original_pair_style_exactly():
    original = {pair["target_module"]: pair["positive"] for pair in json.loads(PAIRS_ORIGINAL.read_text())}
    task = "Find the cheapest direct flight from Oslo to Rome on 12 May and book it."
    rounds = [
        {
            "reflection": "No attempts yet; start by listing direct flights.",
            "plan": "1. search flights OSL-FCO 12 May, direct only 2. compare prices 3. book the cheapest",
            "action": "search_flights(origin='OSL', dest='FCO', date='2025-05-12', direct=True)",
            "observation": "3 flights: SK4711 EUR 189, DY1870 EUR 142, AZ609 EUR 231",
            "memory_store": "cheapest direct OSL-FCO 12 May: DY1870 EUR 142",
        },
        {
            "memory_query": "cheapest direct flight found",
            "memory_result": "DY1870 EUR 142",
            "action": "book_flight(flight='DY1870')",
            "observation": "booked DY1870, ref QX7P2",
        },
    ]
    for module, side in original.items():
        assert render_context(task, rounds) == side["trajectory_full_context"]
        assert render_module(rounds, DEFAULT_MODULE_FIELDS[module]) == side["module_k_all_rounds"], module


def test_every_round_field_lands_in_its_module_and_in_the_context():
    rounds = [{name: f"<{name} {i}>" for name in ROUND_FIELDS} for i in range(3)]
    (run,) = runs_from_records([run_record("r", rounds=rounds)])
    context = render_context(run.task, run.rounds)
    owner = {name: module for module, names in DEFAULT_MODULE_FIELDS.items() for name in names}
    assert set(owner) == set(ROUND_FIELDS)
    for module, names in DEFAULT_MODULE_FIELDS.items():
        text = render_module(run.rounds, names)
        assert text.count("[Round ") == 3
        for i in range(3):
            for name in ROUND_FIELDS:
                marker = f"<{name} {i}>"
                assert marker in context
                assert (marker in text) == (owner[name] == module), (module, name)
    assert "<tool results><observation 0></tool results>" in context and "<memory query><memory_query 2></memory query>" in context


def test_outcome_and_metadata_never_reach_the_texts():
    secret = {"failure_reason": "FAILED-BY-GRADER timeout", "verdict": "GRADER-VERDICT-PASS", "score": 0.123456}
    runs = runs_from_records([run_record("good", outcome=1, metadata=secret), run_record("bad", outcome=0, metadata=secret | {"x": "FAILED-BY-GRADER"})])
    records, _ = mine_pairs(runs)
    texts = [record[side][field] for record in records for side in ("positive", "negative") for field in ("trajectory_full_context", "module_k_all_rounds")]
    assert records and texts
    for text in texts:
        assert "FAILED-BY-GRADER" not in text and "GRADER-VERDICT" not in text and "0.123456" not in text and "outcome" not in text


# --- pair mining -----------------------------------------------------------------------------


def mixed_runs(seed: int = 0, tasks: int = 4, per_task: int = 6) -> list:
    rng = random.Random(seed)
    records = []
    for t in range(tasks):
        for r in range(per_task):
            run_id = f"t{t}-r{r}"
            rounds = [
                {"reflection": f"reflect {run_id}", "plan": f"plan {run_id}", "action": f"act {run_id}", "observation": "ok"},
                {"memory_query": "q", "memory_result": f"res {run_id}", "action": f"act2 {run_id}"},
            ]
            records.append(run_record(run_id, task=f"task number {t}", outcome=rng.choice([0, 1]) if r > 1 else r, rounds=rounds))
    return runs_from_records(records)


def test_pairs_only_join_a_succeeded_and_a_failed_run_of_the_same_task():
    runs = mixed_runs()
    by_id = {run.run_id: run for run in runs}
    records, report = mine_pairs(runs, max_pairs_per_task=100)
    assert report.pairs == len(records) > 0
    for record in records:
        good, bad = by_id[record["positive"]["run_id"]], by_id[record["negative"]["run_id"]]
        assert good.task_key == bad.task_key and record["task"] == good.task
        assert good.succeeded and not bad.succeeded
        assert (record["positive"]["outcome"], record["negative"]["outcome"]) == (1, 0)
        assert record["positive"]["trajectory_full_context"] == render_context(good.task, good.rounds)
        assert record["negative"]["trajectory_full_context"] == render_context(bad.task, bad.rounds)
    assert len(pairs_from_records(records)) == len(records)  # the output is valid pair data


def test_runs_with_the_same_text_but_another_task_id_are_other_tasks():
    runs = runs_from_records([run_record("a", outcome=1, task_id="Challenge1"), run_record("b", outcome=0, task_id="Challenge2")])
    records, report = mine_pairs(runs)
    assert records == [] and (report.tasks, report.tasks_with_both, report.only_succeeded, report.only_failed) == (2, 0, (1, 1), (1, 1))


def test_identical_and_empty_module_texts_are_skipped_and_counted():
    same_plan = [{"plan": "the same plan", "action": "act A"}]
    runs = runs_from_records([
        run_record("good", outcome=1, rounds=same_plan),
        run_record("bad", outcome=0, rounds=[{"plan": "the same plan", "action": "act B", "reflection": "why it failed"}]),
    ])  # fmt: skip
    records, report = mine_pairs(runs)
    assert [record["target_module"] for record in records] == ["executor"]
    assert report.modules["planner"].identical_skipped == 1 and report.modules["planner"].pairs == 0
    assert report.modules["reflection"].runs_without_text == 1 and report.modules["reflection"].pairs == 0
    assert report.modules["memory"].runs_without_text == 2


def test_the_cap_holds_per_task_and_module_and_spreads_the_runs():
    records = [run_record(f"r{i}", task="t", outcome=int(i < 5), rounds=[{"plan": f"p{i}", "action": f"a{i}"}]) for i in range(10)]
    pairs, report = mine_pairs(runs_from_records(records), max_pairs_per_task=8)
    assert Counter(pair["target_module"] for pair in pairs) == {"planner": 8, "executor": 8}
    assert report.modules["planner"].over_cap == 25 - 8
    uses = Counter(pair[side]["run_id"] for pair in pairs if pair["target_module"] == "planner" for side in ("positive", "negative"))
    assert max(uses.values()) == 2 and len(uses) == 10


def test_same_pairs_whatever_the_input_order():
    runs = mixed_runs(seed=1, tasks=5, per_task=8)
    expected, _ = mine_pairs(runs, max_pairs_per_task=3, seed=7)
    for shuffle_seed in range(3):
        shuffled = list(runs)
        random.Random(shuffle_seed).shuffle(shuffled)
        assert mine_pairs(shuffled, max_pairs_per_task=3, seed=7)[0] == expected
    ids = [record["pair_id"] for record in expected]
    assert len(set(ids)) == len(ids) and ids[0].endswith(f"-{expected[0]['target_module']}") and "-vs-" in ids[0]


def test_unknown_module_without_round_fields_is_refused():
    with pytest.raises(ConfigError, match="no round fields for module 'critic'"):
        mine_pairs(mixed_runs(), modules=["planner", "critic"])


# --- the AutoGPT importer --------------------------------------------------------------------


def test_fixture_reports_parse_to_the_hand_counted_attempts_steps_and_outcomes():
    a, b = parse_report(REPORT_A), parse_report(REPORT_B)
    summary = {c.name: [(t.number, t.passed, t.steps_reported, len(t.steps)) for t in c.attempts] for c in a.challenges}
    assert summary == {
        "ReadFile": [(1, True, 4, 4), (2, True, 4, 4), (3, True, 5, 5)],
        "AnswerQuestionCombineCsv": [(1, False, 6, 6)],
        "LabelCsv": [(1, False, 2, 2), (2, True, 3, 3), (3, False, 3, 3)],
        "TicTacToe": [(2, True, 3, 3)],
    }
    summary = {c.name: [(t.number, t.passed, t.steps_reported, len(t.steps)) for t in c.attempts] for c in b.challenges}
    assert summary == {
        "LabelCsv": [(1, False, 3, 3)],
        "BasicRetrieval": [(1, False, 2, 2), (2, True, 4, 4)],
        "WebArenaTask_124": [(1, False, None, 0)],
    }
    read_file = a.challenges[0]
    assert read_file.task == "Read the file called file_to_read.txt and write its content to a file called output.txt"
    assert read_file.reference_answer == "The content of output.txt should be 'Hello World!'"
    assert read_file.attempts[0].cost_usd == 0.07 and read_file.attempts[0].failure_reason is None
    assert a.challenges[2].attempts[0].failure_reason.startswith("[Errno 2] No such file or directory: '/tmp/tmpfe82fzuj/output.csv'")

    runs, summary = import_reports([REPORT_A, REPORT_B])
    rounds = {run["run_id"].split(":", 1)[1] if run["run_id"].startswith("20240305") else "B:" + run["run_id"].split(":", 1)[1]: len(run["rounds"]) for run in runs}
    assert rounds == {
        "ReadFile:1": 3, "ReadFile:2": 3, "ReadFile:3": 4,  # 4, 4, 5 steps, the last repeating the finish reason
        "AnswerQuestionCombineCsv:1": 5,  # 4 questions to the user, finish, its echo
        "LabelCsv:1": 2, "LabelCsv:2": 3, "LabelCsv:3": 3,  # cut off before any finish echo
        "TicTacToe:2": 3,  # the third is the proposal error
        "B:LabelCsv:1": 3, "B:BasicRetrieval:1": 2, "B:BasicRetrieval:2": 3,  # WebArenaTask_124 has no steps: no run
    }  # fmt: skip
    assert [run["outcome"] for run in runs] == [1, 1, 1, 0, 0, 1, 0, 1, 0, 0, 1]
    s = summary.steps
    assert (s.steps, s.rounds, s.commands, s.questions, s.finish_echoes, s.proposal_errors, s.unmatched_echoes) == (39, 34, 29, 4, 5, 1, 0)
    assert [(r["attempts"], r["passed"], r["failed"], r["runs"], r["steps"]) for r in summary.reports] == [(8, 5, 3, 8, 30), (4, 1, 3, 3, 9)]


def test_steps_become_plan_action_and_the_echoed_output():
    runs = {run["run_id"]: run["rounds"] for run in import_reports([REPORT_A, REPORT_B])[0]}
    first, second, finish = runs["20240305T020814_full_run:ReadFile:1"]
    assert first == {
        "plan": "I'm starting by reading the content of 'file_to_read.txt'.",
        "action": "read_file(filename='file_to_read.txt')",
        "observation": "Hello World!",  # fenced output, fence removed
    }
    assert second["observation"] == "File output.txt has been written successfully."  # inline output
    assert finish["observation"] == "The task has been successfully completed as per the provided instructions."

    asked = runs["20240305T020814_full_run:AnswerQuestionCombineCsv:1"]
    assert [r["action"].split("(")[0] for r in asked] == ["ask_user"] * 4 + ["finish"]
    assert asked[2]["plan"].startswith("If it's not possible") and asked[2]["action"].startswith("ask_user(question='Could you please manually input")
    assert all("observation" not in r for r in asked[:4])

    assert runs["20240305T020814_full_run:TicTacToe:2"][2] == {"observation": "An error occurred while proposing the next action: Invalid control character at: line 14 column 650 (char 2378)"}
    empty_output = runs["20240305T020814_full_run:LabelCsv:3"]
    assert "observation" not in empty_output[1] and empty_output[2]["plan"].startswith("I've classified the items")

    failed = runs["20240315T020929_full_run:LabelCsv:1"]
    assert failed[1]["observation"].startswith("Action failed: 'Traceback") and failed[1]["observation"].endswith("'")
    assert failed[2]["plan"].startswith("I encountered an error in saving") and "observation" not in failed[2]


def test_empty_and_multiline_outputs_in_steps_written_by_hand():
    steps = [
        Step(1, 1, ["First thought.", "", "Next Command: run(code='x')"]),
        Step(2, 5, ["`run(code='x')` returned: ", "", "Nothing came back.", "", "Next Command: write(text='a", "b')"]),
        Step(3, 9, ["`write(text='a", "b')` returned: done", "", "Should I stop?", "", "May I stop now?"]),
    ]
    rounds, counts = attempt_rounds(steps)
    assert rounds == [
        {"plan": "First thought.", "action": "run(code='x')"},
        {"plan": "Nothing came back.", "action": "write(text='a\nb')", "observation": "done"},
        {"plan": "Should I stop?", "action": "ask_user(question='May I stop now?')"},
    ]
    assert (counts.commands, counts.questions) == (2, 1)


def test_verdicts_and_costs_stay_in_metadata():
    runs, _ = import_reports([REPORT_A, REPORT_B])
    failed = [run for run in runs if run["outcome"] == 0]
    assert all(run["metadata"]["failure_reason"] for run in failed)
    assert all(run["metadata"]["passed"] == (run["outcome"] == 1) for run in runs)
    records, _ = mine_pairs(runs_from_records(runs), max_pairs_per_task=100)
    texts = [r[side][f] for r in records for side in ("positive", "negative") for f in ("trajectory_full_context", "module_k_all_rounds")]
    reasons = [run["metadata"]["failure_reason"] for run in failed]
    for text in texts:
        assert not any(marker in text for marker in ("Passed", "Failed", "Failure reason", "Cost", "$0.", "Reference answer", "EvalResult"))
        assert not any(reason in text for reason in reasons)


def test_runs_of_one_challenge_in_two_reports_share_a_task():
    runs, _ = import_reports([REPORT_A, REPORT_B])
    records, report = mine_pairs(runs_from_records(runs))
    assert (report.runs, report.tasks, report.tasks_with_both) == (11, 5, 2)
    assert Counter(r["target_module"] for r in records) == {"planner": 4, "executor": 4}
    label_csv = {(r["positive"]["run_id"], r["negative"]["run_id"]) for r in records if r["task_id"] == "LabelCsv"}
    assert label_csv == {
        ("20240305T020814_full_run:LabelCsv:2", "20240305T020814_full_run:LabelCsv:1"),
        ("20240305T020814_full_run:LabelCsv:2", "20240305T020814_full_run:LabelCsv:3"),
        ("20240305T020814_full_run:LabelCsv:2", "20240315T020929_full_run:LabelCsv:1"),
    }
    assert {r["positive"]["source"] for r in records} >= {"autogpt:20240305T020814_full_run"}


def test_unparseable_reports_name_file_and_line(tmp_path):
    lines = REPORT_A.read_text(encoding="utf-8").splitlines()
    lines[34] = "1. **✅ Passed** in 33 seconds"  # attempt header of ReadFile 1
    lines[98] = lines[98].replace("**5 steps**", "**6 steps**")  # ReadFile 3 lists 5
    broken = tmp_path / "broken.report.md"
    broken.write_text("\n".join(lines) + "\n", encoding="utf-8")
    other = tmp_path / "other.md"
    other.write_text("# Notes\n\nnothing here\n")
    with pytest.raises(DataError) as caught:
        import_reports([broken, other])
    message = str(caught.value)
    assert f"{broken}, line 35: attempt header not understood" in message
    assert f"{broken}, line 99: attempt 3 of 'ReadFile' reports 6 steps but lists 5" in message
    assert f"{other}, line 1: no challenges found" in message


def test_two_reports_with_the_same_name_are_refused(tmp_path):
    for folder in ("x", "y"):
        (tmp_path / folder / "run").mkdir(parents=True)
        (tmp_path / folder / "run" / "report.md").write_text(REPORT_B.read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(DataError, match="same name 'run'"):
        import_reports([tmp_path / "x" / "run" / "report.md", tmp_path / "y" / "run" / "report.md"])


# --- the verbs -------------------------------------------------------------------------------


def test_import_then_pairs_then_validate(tmp_path):
    runs_file, pairs_file = tmp_path / "runs.jsonl", tmp_path / "pairs.json"
    result = cli("import", "autogpt", REPORT_A, REPORT_B, "--out", runs_file)
    assert result.exit_code == 0, result.output
    assert "total                                 7       12      6      6    11     39     34" in result.output
    assert "5 distinct challenges (name + task text); 2 have both a passed and a failed run" in result.output
    assert len(runs_file.read_text().splitlines()) == 11

    result = cli("pairs", runs_file, "--out", pairs_file, "--max-pairs-per-task", "2")
    assert result.exit_code == 0, result.output
    assert "11 runs (6 succeeded, 5 failed) over 5 tasks; 2 tasks have both outcomes" in result.output
    assert "runs that cannot pair: 4 in 2 task(s) where every run succeeded, 1 in 1 task(s) where every run failed" in result.output
    planner = next(line for line in result.output.splitlines() if line.startswith("planner"))
    assert planner.split() == ["planner", "3", "2", "0", "0", "1"]  # LabelCsv capped from 3 to 2, BasicRetrieval 1
    assert (tmp_path / "pairs.config.yaml").exists()

    pairs = load_pairs(pairs_file)
    assert pairs.height == 6 and {"task_id", "positive_run_id", "negative_run_id", "positive_source"} <= set(pairs.columns)
    result = cli("validate", pairs_file)
    assert result.exit_code == 0 and "pairs per module: reflection 0, planner 3, executor 3, memory 0" in result.output


def test_pairs_with_bad_runs_exits_1_names_the_problem_and_writes_nothing(tmp_path):
    runs_file = write_jsonl(tmp_path / "runs.jsonl", [run_record("a"), run_record("b", outcome=0, rounds=[{"plan": "x", "thougt": "y"}])])
    out = tmp_path / "pairs.json"
    result = cli("pairs", runs_file, "--out", out)
    assert result.exit_code == 1
    assert f"{runs_file}, line 2, run_id 'b', field 'rounds[0].thougt': unknown round field 'thougt'" in result.output
    assert not out.exists() and list(tmp_path.iterdir()) == [runs_file]


def test_pairs_that_find_nothing_exit_1_and_write_nothing(tmp_path):
    runs_file = write_jsonl(tmp_path / "runs.jsonl", [run_record("a"), run_record("b")])
    result = cli("pairs", runs_file, "--out", tmp_path / "pairs.json")
    assert result.exit_code == 1 and "no pairs" in result.output and not (tmp_path / "pairs.json").exists()


def test_pairs_take_module_fields_from_the_config(tmp_path):
    runs_file = write_jsonl(tmp_path / "runs.jsonl", [
        run_record("a", rounds=[{"plan": "same", "reflection": "good idea"}]),
        run_record("b", outcome=0, rounds=[{"plan": "same", "reflection": "bad idea"}]),
    ])  # fmt: skip
    config = tmp_path / "config.yaml"
    config.write_text("data:\n  modules: [planner]\n  module_fields: {planner: [reflection, plan]}\n")
    result = cli("pairs", runs_file, "--out", tmp_path / "pairs.jsonl", "--config", config)
    assert result.exit_code == 0, result.output
    (pair,) = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert pair["positive"]["module_k_all_rounds"] == "[Round 1]\n<reflection>good idea</reflection>\n<plan>same</plan>"

    config.write_text("data:\n  modules: [planner, critic]\n")
    result = cli("pairs", runs_file, "--out", tmp_path / "other.jsonl", "--config", config)
    assert result.exit_code == 1 and "no round fields for module 'critic'" in result.output
    config.write_text("data:\n  module_fields: {planner: [thoughts]}\n")
    result = cli("pairs", runs_file, "--out", tmp_path / "other.jsonl", "--config", config)
    assert result.exit_code == 1 and "data.module_fields.planner must list round fields" in result.output
    assert not (tmp_path / "other.jsonl").exists()


def test_import_of_a_bad_report_exits_1_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.report.md"
    bad.write_text(REPORT_B.read_text(encoding="utf-8").replace("   2. `read_file", "   3. `read_file", 1), encoding="utf-8")
    out = tmp_path / "runs.jsonl"
    result = cli("import", "autogpt", bad, "--out", out)
    assert result.exit_code == 1
    assert f"{bad}, line 35: attempt 1 of 'LabelCsv': steps numbered [1, 3, 3], expected 1, 2, 3, ..." in result.output
    assert not out.exists()
