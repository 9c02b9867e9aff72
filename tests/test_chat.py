"""The chat transcript importer: OpenAI-style messages (and tau-bench's trajectories) to runs."""

import copy
import gzip
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from data import ConfigError, DataError, load_pairs
from data.chat import format_import_summary, import_files, render_call
from data.runs import load_runs, mine_pairs, runs_from_records
from pipeline.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "chat"
TAU = FIXTURES / "tau_airline.json"
OPENAI = FIXTURES / "openai_runs.jsonl"
OPENAI_GZ = FIXTURES / "openai_runs_more.jsonl.gz"
TAU_FIELDS = {"task_field": "task_id", "outcome_field": "reward", "messages_field": "traj", "success_threshold": 1}
PATTERNS = {"reflection_pattern": r"^Reflection:\s*(.*)", "memory_pattern": r"^Memory:\s*(.*)"}
CSV_TASK = "Sum the amount column of sales.csv and write the total to total.txt."
SYSTEM = {"role": "system", "content": "You are a helpful agent."}


def records(path: Path) -> list[dict]:
    text = gzip.decompress(path.read_bytes()).decode() if path.name.endswith(".gz") else path.read_text()
    return json.loads(text) if text.startswith("[") else [json.loads(line) for line in text.splitlines()]


def write_jsonl(path: Path, lines: list) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def chat(*messages, task_id="t", outcome=1, **fields) -> dict:
    return {"task_id": task_id, "outcome": outcome, "messages": [SYSTEM, *messages], **fields}


def import_one(folder: Path, record: dict, **options) -> dict:
    """The run of one record, imported from a file of its own."""
    (run,), _ = import_files([write_jsonl(folder / "one.jsonl", [record])], **options)
    return run


def rounds_of(folder: Path, *messages, **options) -> list[dict]:
    return import_one(folder, chat(*messages), **options)["rounds"]


def cli(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def openai_runs() -> list[dict]:
    return import_files([OPENAI, OPENAI_GZ], **PATTERNS)[0]


# --- mapping ---------------------------------------------------------------------------------


def test_each_assistant_message_is_a_round_text_plan_calls_action_results_observation(openai_runs):
    run = openai_runs[0]
    assert (run["run_id"], run["task_id"], run["task"], run["outcome"], run["source"]) == ("openai_runs:0", "csv-sum", CSV_TASK, 1, "chat:openai_runs")
    assert run["metadata"] == {"file": "openai_runs.jsonl", "record": 0, "outcome": 1}
    assert run["rounds"] == [
        {
            "reflection": "nothing tried yet; I do not know the file's layout.",
            "plan": "I will read the file first, then sum the column with Python and write the result.",
            "action": 'read_file(path="sales.csv")',
            "observation": "date,amount\n2024-05-01,400.25\n2024-05-02,834.25",
        },
        {   # two calls, one per line; their results in the order of the calls, not of the messages
            "plan": "Now I sum the column and write the total.",
            "action": 'python(code="print(400.25 + 834.25)")\nwrite_file(path="total.txt", text="1234.50")',
            "observation": "1234.5\n\nwrote 7 bytes to total.txt",
            "memory_store": "sales.csv has a header row and two data rows.",
        },
        {"plan": "The total is 1234.50; it is in total.txt."},
    ]  # fmt: skip


def test_content_parts_give_their_text_and_other_parts_a_placeholder_and_later_user_messages_are_observations(openai_runs):
    run = openai_runs[1]
    assert run["task"] == CSV_TASK  # the same task text as a plain string gives, so the runs pair
    assert run["rounds"][0]["reflection"] == "first attempt, no errors so far."
    assert run["rounds"][0]["plan"] == "Let me look at the file."
    assert run["rounds"][0]["action"] == "read_file({path: sales.csv})"  # malformed arguments, as the model wrote them
    assert run["rounds"][0]["observation"] == "error: arguments are not valid JSON"
    assert run["rounds"][1] == {
        "plan": "The file seems to be unavailable. The total is probably 0.",
        "observation": "Please check again, the file is there.\n\n[image_url]",
    }


def test_old_style_function_calls_are_answered_by_name_and_outcomes_read_true_false_and_floats(openai_runs):
    weather = [run for run in openai_runs if run["task_id"] == "weather-report"]
    assert [(run["run_id"], run["outcome"], run["metadata"]["outcome"]) for run in weather] == [
        ("openai_runs:2", 1, True), ("openai_runs:3", 0, False), ("openai_runs_more:1", 1, 1.0),
    ]  # fmt: skip
    assert weather[0]["rounds"][0] == {"action": 'get_forecast(city="Oslo", day="tomorrow")', "observation": "Oslo, tomorrow: 14°C, light rain in the afternoon."}


def test_the_system_prompt_is_left_out_and_the_task_is_the_opening_user_messages(tmp_path):
    run = import_one(tmp_path, chat({"role": "user", "content": "Book a table."}, {"role": "user", "content": [{"type": "text", "text": "For two, at 8."}]},
                          {"role": "assistant", "content": "Booking."}, {"role": "system", "content": "LATE SYSTEM NOTE"}))  # fmt: skip
    assert run["task"] == "Book a table.\n\nFor two, at 8."
    assert run["rounds"] == [{"plan": "Booking."}]
    assert "You are a helpful agent" not in json.dumps(run) and "LATE SYSTEM NOTE" not in json.dumps(run)


def test_tool_results_answer_the_last_assistant_message_so_ids_may_come_back_in_later_turns(tmp_path):
    call = {"id": "call_1", "function": {"name": "search", "arguments": "{}"}}
    rounds = rounds_of(
        tmp_path,
        {"role": "user", "content": "Find it."},
        {"role": "assistant", "content": None, "tool_calls": [call]}, {"role": "tool", "tool_call_id": "call_1", "content": "first"},
        {"role": "assistant", "content": None, "tool_calls": [call]}, {"role": "tool", "tool_call_id": "call_1", "content": "second"},
        {"role": "assistant", "content": None, "tool_calls": [call, {**call, "id": "call_2"}]}, {"role": "tool", "tool_call_id": "call_2", "content": "only the second"},
    )  # fmt: skip
    assert rounds == [
        {"action": "search()", "observation": "first"},
        {"action": "search()", "observation": "second"},
        {"action": "search()\nsearch()", "observation": "only the second"},  # a call nobody answered is fine
    ]


@pytest.mark.parametrize(
    ("arguments", "rendered"),
    [
        ('{"city": "Oslo", "days": [1, 2]}', 'f(city="Oslo", days=[1, 2])'),
        ({"city": "Oslo", "days": [1, 2]}, 'f(city="Oslo", days=[1, 2])'),
        ({"note": "Zürich"}, 'f(note="Zürich")'),
        (None, "f()"),
        ("", "f()"),
        ("{}", "f()"),
        ("{city: Oslo", "f({city: Oslo)"),
        ("[1, 2]", "f([1, 2])"),
    ],
)
def test_arguments_as_a_string_or_an_object_render_alike_and_anything_else_as_written(arguments, rendered):
    assert render_call("f", arguments) == rendered


def test_without_patterns_the_whole_text_is_the_plan_and_a_pattern_without_a_group_keeps_the_paragraph(tmp_path):
    message = {"role": "assistant", "content": "Reflection: the search failed.\n\nSearch again.\n \nMemory: the id is 7."}
    opening = {"role": "user", "content": "Go."}
    assert rounds_of(tmp_path, opening, message) == [{"plan": message["content"]}]
    assert rounds_of(tmp_path, opening, message, reflection_pattern="^Reflection:", memory_pattern="(?i)^memory") == [
        {"reflection": "Reflection: the search failed.", "plan": "Search again.", "memory_store": "Memory: the id is 7."},
    ]  # fmt: skip
    # the reflection pattern is tried first; a paragraph matching neither stays plan
    assert rounds_of(tmp_path, opening, message, reflection_pattern="failed|id is", memory_pattern="id is") == [
        {"reflection": "Reflection: the search failed.\n\nMemory: the id is 7.", "plan": "Search again."},
    ]  # fmt: skip


def test_an_empty_assistant_message_with_nothing_after_it_is_dropped_and_counted(tmp_path):
    path = write_jsonl(tmp_path / "runs.jsonl", [chat({"role": "user", "content": "Go."}, {"role": "assistant", "content": ""}, {"role": "assistant", "content": "Done."})])
    (run,), summary = import_files([path])
    assert run["rounds"] == [{"plan": "Done."}]
    assert "left out: 1 empty assistant messages" in format_import_summary(summary, [run])


def test_field_names_may_be_dotted_paths(tmp_path):
    record = {"meta": {"task": 7}, "info": {"reward": 0.8}, "log": {"turns": [{"role": "user", "content": "Go."}, {"role": "assistant", "content": "Done."}]}}
    path = write_jsonl(tmp_path / "runs.jsonl", [record])
    (run,), _ = import_files([path], task_field="meta.task", outcome_field="info.reward", messages_field="log.turns", success_threshold=0.5)
    assert (run["task_id"], run["outcome"], run["metadata"]["outcome"], run["rounds"]) == ("7", 1, 0.8, [{"plan": "Done."}])


# --- tau-bench ---------------------------------------------------------------------------------


def test_tau_bench_trajectories_import_without_conversion():
    runs, summary = import_files([TAU], **TAU_FIELDS)
    assert [(run["run_id"], run["task_id"], run["outcome"]) for run in runs] == [
        ("tau_airline:0", "0", 1), ("tau_airline:1", "0", 0), ("tau_airline:2", "1", 1), ("tau_airline:3", "1", 0),
        ("tau_airline:4", "1", 1), ("tau_airline:5", "2", 0), ("tau_airline:6", "2", 0),
    ]  # fmt: skip
    first = runs[0]
    assert first["task"] == "Hi! I'd like to book a one-way flight from Boston to Denver on May 22."
    assert first["rounds"][0] == {"plan": "I can help with that. Could you please give me your user ID?", "observation": "Sure, it's olga_berg_4410."}
    assert first["rounds"][1]["action"] == 'get_user_details(user_id="olga_berg_4410")'
    assert first["rounds"][1]["observation"].startswith('{"name": {"first_name": "Olga"')
    assert first["rounds"][5]["action"].startswith('book_reservation(user_id="olga_berg_4410", origin="BOS", destination="DEN"')  # id call_Jq2w again
    assert first["rounds"][-1] == {"plan": "Your flight is booked: reservation K7WQ2M, HAT298 from Boston to Denver on May 22 in economy, paid with your gift card.", "observation": "Thank you! ###STOP###"}
    assert runs[3]["rounds"][-1] == {"action": 'transfer_to_human_agents(summary="User wants to cancel economy reservation ZX5TQ1 without insurance.")', "observation": "Transfer successful"}
    text = format_import_summary(summary, runs)
    assert "tau_airline                                    7         3      4     7     31         15" in text
    assert "3 tasks (task_id); 2 have both a succeeded and a failed run" in text
    assert "warning: in 2 of them the runs open with different user messages" in text


def test_with_the_opening_as_a_round_every_run_of_a_task_pairs():
    runs, summary = import_files([TAU], **TAU_FIELDS, opening_message="round")
    first = runs[0]
    assert first["task"] == "task_id 0"
    assert first["rounds"][0] == {"observation": "Hi! I'd like to book a one-way flight from Boston to Denver on May 22."}
    assert first["rounds"][1]["plan"] == "I can help with that. Could you please give me your user ID?"
    assert "warning" not in format_import_summary(summary, runs)
    _, report = mine_pairs(runs_from_records(runs))
    assert report.tasks_with_both == 2
    assert (report.modules["planner"].pairs, report.modules["executor"].pairs) == (3, 3)  # task 0: 1 x 1, task 1: 2 x 1


def test_a_task_prefix_keeps_apart_benchmarks_that_number_their_tasks_alike():
    airline, _ = import_files([TAU], **TAU_FIELDS, opening_message="round", task_prefix="airline/")
    retail, _ = import_files([TAU], **TAU_FIELDS, opening_message="round", task_prefix="retail/")
    assert (airline[0]["task_id"], airline[0]["task"]) == ("airline/0", "task_id airline/0")
    for run in retail:
        run["run_id"] = run["run_id"].replace("tau_airline", "tau_retail")
    _, report = mine_pairs(runs_from_records(airline + retail))
    assert (report.tasks, report.tasks_with_both) == (6, 4)


def test_only_the_named_fields_are_read(tmp_path):
    """Graders' notes, tau-bench's info (the user's instruction, the expected actions, the grader's
    hash), ids, trials and unnamed rewards never reach the output, not even its metadata."""
    written = json.dumps(import_files([OPENAI, OPENAI_GZ])[0])
    for secret in ["GRADER-NOTE", "verdict", "run-csv-1", "0.97", "careful data assistant"]:
        assert secret not in written, secret
    runs, _ = import_files([TAU], **TAU_FIELDS)
    written = json.dumps(runs)
    tau = records(TAU)
    for secret in ["will not say anything that is not asked", "gt_data_hash", tau[0]["info"]["reward_info"]["info"]["gt_data_hash"], "user_cost", "Heron Air", "trial"]:
        assert secret not in written, secret

    changed = copy.deepcopy(tau)
    for record in changed:
        record["info"] = {"anything": "else"}
        record["trial"] = 99
        record["notes"] = "the grader says: failed"
    path = tmp_path / "tau_airline.json"
    path.write_text(json.dumps(changed))
    assert import_files([path], **TAU_FIELDS)[0] == runs


# --- files -------------------------------------------------------------------------------------


def test_json_lines_a_json_array_and_gzip_read_alike(tmp_path):
    def content(runs: list[dict]) -> list[tuple]:
        return [(run["run_id"].split(":")[1], run["task_id"], run["task"], run["outcome"], run["rounds"]) for run in runs]

    plain = content(import_files([OPENAI])[0])
    array = tmp_path / "array.json"
    array.write_text(json.dumps(records(OPENAI), indent=2))
    gzipped = tmp_path / "gzipped.jsonl.gz"
    gzipped.write_bytes(gzip.compress(OPENAI.read_bytes()))
    gzipped_array = tmp_path / "gzipped_array.data"  # told apart by content, not name
    gzipped_array.write_bytes(gzip.compress(array.read_bytes()))
    for path, label in ((array, "array"), (gzipped, "gzipped"), (gzipped_array, "gzipped_array.data")):
        runs, _ = import_files([path])
        assert content(runs) == plain, path
        assert {(run["run_id"].split(":")[0], run["source"], run["metadata"]["file"]) for run in runs} == {(label, f"chat:{label}", path.name)}


def test_outcomes_need_a_threshold_unless_they_are_one_or_zero(tmp_path):
    opening = [{"role": "user", "content": "Go."}, {"role": "assistant", "content": "Done."}]
    path = write_jsonl(tmp_path / "runs.jsonl", [chat(*opening, outcome=value, task_id=str(i)) for i, value in enumerate([0.7, 0.2, 1, True, 0])])
    assert [run["outcome"] for run in import_files([path], success_threshold=0.5)[0]] == [1, 0, 1, 1, 0]
    with pytest.raises(DataError) as error:
        import_files([path])
    assert str(error.value) == (
        f"2 problem(s) in the input data:\n"
        f"  {path}, record 0, line 1, field 'outcome': outcome 0.7 is neither 1 (succeeded) nor 0 (failed); give a success threshold (--success-threshold T: reward >= T succeeded) to read it as a reward\n"
        f"  {path}, record 1, line 2, field 'outcome': outcome 0.2 is neither 1 (succeeded) nor 0 (failed); give a success threshold (--success-threshold T: reward >= T succeeded) to read it as a reward"
    )


def test_bad_records_give_a_data_error_naming_file_record_line_and_field(tmp_path):
    go = {"role": "user", "content": "Go."}
    call = {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "function": {"name": "search", "arguments": "{}"}}]}
    path = write_jsonl(tmp_path / "runs.jsonl", [
        {"task_id": "t", "outcome": 1},
        chat(go, call, {"role": "tool", "tool_call_id": "call_9", "content": "x"}),
        chat(go, {"role": "assistant", "content": 42}),
        chat(go, {"role": "assistant", "content": "Done."}, outcome="yes"),
        chat(go),
        "",
        chat(go, {"role": "assistant", "content": "Done."}, task_id=None),
        chat(go, {"role": "critic", "content": "no"}),
        chat(go, {"role": "assistant", "content": [{"type": "text", "text": 3}]}),
        chat({"role": "tool", "tool_call_id": "call_1", "content": "x"}),
        chat(go, call, {"role": "tool", "content": "x"}),
        chat(go, {"role": "assistant", "tool_calls": [{"id": "c", "function": {"arguments": "{}"}}]}),
        chat(go, {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": 3}}]}),
        chat({"role": "assistant", "content": "Hello."}),
        chat(go, {"role": "assistant", "content": "Done."}, messages="not a list"),
        ["not", "a", "run"],
        chat(go, {"role": "assistant", "content": "Done."}, task_id=True, outcome=0),
    ])  # fmt: skip
    with pytest.raises(DataError) as error:
        import_files([path])
    expected = [
        "record 0, line 1, field 'messages': missing (or null); expected the transcript, a list of chat messages (--messages-field)",
        "record 1, line 2, field 'messages[3].tool_call_id': tool_call_id 'call_9' answers no call of the last assistant message (messages[2]; its unanswered calls: 'call_1')",
        "record 2, line 3, field 'messages[2].content': expected a string, null or a list of content parts, got a number (42)",
        "record 3, line 4, field 'outcome': expected 1 or 0, true or false, or a reward with a success threshold, got a string (\"yes\")",
        "record 4, line 5, field 'messages': no assistant message: a run needs at least one turn of the agent's",
        "record 5, line 7, field 'task_id': missing (or null); runs are grouped into tasks by this field (--task-field)",
        "record 6, line 8, field 'messages[2].role': expected one of system, developer, user, assistant, tool, function, got a string (\"critic\")",
        "record 7, line 9, field 'messages[2].content[0].text': expected a string, got a number (3)",
        "record 8, line 10, field 'messages[1].tool_call_id': a tool message before any assistant message: there is no call for it to answer",
        "record 9, line 11, field 'messages[3].tool_call_id': expected the id of the tool call it answers, got null",
        "record 10, line 12, field 'messages[2].tool_calls[0].function.name': expected the name of the tool, got null",
        "record 11, line 13, field 'messages[2].tool_calls[0].function.arguments': expected a JSON string or an object, got a number (3)",
        "record 12, line 14, field 'messages': no user message with text before the first assistant message: the task is the opening user message (with --opening-message round it is the task field)",
        "record 13, line 15, field 'messages': expected a non-empty list of chat messages, got a string (\"not a list\")",
        "record 14, line 16: expected a JSON object (one run), got an array ([\"not\", \"a\", \"run\"])",
        "record 15, line 17, field 'task_id': expected a string or an integer naming the task, got a boolean (true)",
    ]
    assert [str(problem) for problem in error.value.problems] == [f"{path}, {text}" for text in expected]


def test_bad_files_and_options_name_the_file_or_option(tmp_path):
    not_gzip = tmp_path / "a.jsonl.gz"
    not_gzip.write_text("{}")
    truncated = tmp_path / "b.jsonl.gz"
    truncated.write_bytes(gzip.compress(OPENAI.read_bytes())[:100])
    empty = tmp_path / "c.jsonl"
    empty.write_text("\n")
    bad_array = tmp_path / "d.json"
    bad_array.write_text('[{"task_id": "t", "outcome": NaN}]')
    twin = tmp_path / "openai_runs.json"
    twin.write_text("[]")
    not_json = write_jsonl(tmp_path / "e.jsonl", [chat(), "{not json", chat()])
    with pytest.raises(DataError) as error:
        import_files([not_gzip, truncated, empty, bad_array, OPENAI, twin, not_json])
    message = str(error.value)
    assert f"{not_gzip}: named .gz but not gzip-compressed" in message
    assert f"{truncated}: not a valid gzip file" in message
    assert f"{empty}: file is empty" in message
    assert f"{bad_array}, record 0, field 'outcome': NaN is not a JSON number" in message
    assert f"{OPENAI}: another file given has the same name 'openai_runs'; run ids would clash" in message
    assert f"{twin}: another file given has the same name 'openai_runs'" in message
    assert f"{not_json}, record 1, line 2: not valid JSON: Expecting property name enclosed in double quotes at column 2 (expected JSON Lines" in message
    assert f"{not_json}, record 0" not in message  # a file that is not all JSON is not read further
    with pytest.raises(ConfigError, match=r"reflection pattern '\(unclosed' is not a valid regular expression"):
        import_files([OPENAI], reflection_pattern="(unclosed")
    with pytest.raises(ConfigError, match="opening message 'first'"):
        import_files([OPENAI], opening_message="first")
    with pytest.raises(ConfigError, match="task field 'info.'"):
        import_files([OPENAI], task_field="info.")


# --- the verb ------------------------------------------------------------------------------------


def test_import_chat_writes_runs_that_load_and_pair(tmp_path):
    runs_file, pairs_file = tmp_path / "runs.jsonl", tmp_path / "pairs.json"
    result = cli("import", "chat", OPENAI, OPENAI_GZ, "--out", runs_file, "--reflection-pattern", r"^Reflection:\s*(.*)", "--memory-pattern", r"^Memory:\s*(.*)")
    assert result.exit_code == 0, result.output
    assert "total                                          6         3      3     6     14          8" in result.output
    assert "patterns: 3 paragraphs to reflection, 1 to memory_store" in result.output
    assert "2 tasks (task_id); 2 have both a succeeded and a failed run" in result.output
    assert "wrote 6 runs" in result.output
    assert len(load_runs(runs_file)) == 6

    result = cli("pairs", runs_file, "--out", pairs_file)
    assert result.exit_code == 0, result.output
    assert "6 runs (3 succeeded, 3 failed) over 2 tasks; 2 tasks have both outcomes" in result.output
    pairs = load_pairs(pairs_file)
    by_module = {module: set(pairs.filter(pairs["target_module"] == module)["task_id"]) for module in ("reflection", "planner", "executor", "memory")}
    assert by_module == {"reflection": {"csv-sum"}, "planner": {"csv-sum", "weather-report"}, "executor": {"csv-sum", "weather-report"}, "memory": set()}


def test_import_chat_of_tau_bench_trajectories_pairs_with_the_opening_as_a_round(tmp_path):
    runs_file, pairs_file = tmp_path / "runs.jsonl", tmp_path / "pairs.json"
    result = cli("import", "chat", TAU, "--out", runs_file, "--task-field", "task_id", "--outcome-field", "reward",
                 "--messages-field", "traj", "--success-threshold", "1", "--opening-message", "round", "--task-prefix", "airline/")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "7 opening user messages (as a first round)" in result.output and "wrote 7 runs" in result.output
    result = cli("pairs", runs_file, "--out", pairs_file)
    assert result.exit_code == 0, result.output
    pairs = load_pairs(pairs_file)
    assert sorted(pairs["target_module"].to_list()) == ["executor"] * 3 + ["planner"] * 3
    assert set(pairs["task_id"]) == {"airline/0", "airline/1"}


def test_import_chat_of_bad_input_exits_1_and_writes_nothing(tmp_path):
    out = tmp_path / "runs.jsonl"
    result = cli("import", "chat", OPENAI, "--out", out, "--outcome-field", "reward")
    assert result.exit_code == 1
    assert f"{OPENAI}, record 0, line 1, field 'reward': outcome 0.97 is neither 1 (succeeded) nor 0 (failed)" in result.output
    assert f"{OPENAI}, record 2, line 3, field 'reward': missing (or null)" in result.output
    result = cli("import", "chat", OPENAI, "--out", out, "--reflection-pattern", "[")
    assert result.exit_code == 1 and "reflection pattern '[' is not a valid regular expression" in result.output
    assert list(tmp_path.iterdir()) == []
