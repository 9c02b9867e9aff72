"""Loading the pair format (JSON array, JSON Lines, Parquet) and the validation of every problem class."""

import copy
import json
from pathlib import Path

import polars as pl
import pytest

from data import DataError, load_pairs, write_pairs
from data.schema import PAIR_COLUMNS

FIXTURE = Path(__file__).parent / "fixtures" / "pairs_original.json"


@pytest.fixture
def records() -> list[dict]:
    return json.loads(FIXTURE.read_text())


def write_json(path: Path, records) -> Path:
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def problems_of(path_or_paths, **kwargs) -> list:
    with pytest.raises(DataError) as caught:
        load_pairs(path_or_paths, **kwargs)
    return caught.value.problems


def only_problem(path, **kwargs):
    problems = problems_of(path, **kwargs)
    assert len(problems) == 1, [str(p) for p in problems]
    return problems[0]


# --- the format loads as-is ---------------------------------------------------------------------


def test_original_json_array_loads_as_one_row_per_pair(records):
    pairs = load_pairs(FIXTURE)
    assert pairs.columns == list(PAIR_COLUMNS)
    assert pairs.height == 4
    row = pairs.row(0, named=True)
    assert row["pair_id"] == records[0]["pair_id"]
    assert row["positive_context"] == records[0]["positive"]["trajectory_full_context"]
    assert row["negative_module_text"] == records[0]["negative"]["module_k_all_rounds"]
    assert (row["positive_outcome"], row["negative_outcome"]) == (1, 0)


def test_jsonl_and_parquet_hold_the_same_table(tmp_path):
    pairs = load_pairs(FIXTURE)
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in json.loads(FIXTURE.read_text())) + "\n")
    parquet = write_pairs(pairs, tmp_path / "pairs.parquet")
    assert load_pairs(jsonl).equals(pairs)
    assert load_pairs(parquet).equals(pairs)


def test_extra_fields_are_kept_and_written_back(tmp_path, records):
    records[0]["source"] = "run-17"
    records[0]["positive"]["latency_s"] = 3.5
    pairs = load_pairs(write_json(tmp_path / "pairs.json", records))
    assert pairs["source"].to_list() == ["run-17", None, None, None]
    assert pairs["positive_latency_s"].to_list()[0] == 3.5
    for suffix in (".json", ".jsonl", ".parquet"):
        again = load_pairs(write_pairs(pairs, tmp_path / f"again{suffix}"))
        assert again.select(pairs.columns).equals(pairs), suffix
    written = json.loads((tmp_path / "again.json").read_text())
    assert written[0]["positive"]["latency_s"] == 3.5 and written[0]["source"] == "run-17"


def test_several_files_load_into_one_table(tmp_path, records):
    first = write_json(tmp_path / "a.json", records[:2])
    second = write_json(tmp_path / "b.json", records[2:])
    assert load_pairs([first, second]).equals(load_pairs(FIXTURE))


# --- one test per problem class -----------------------------------------------------------------


def test_not_json_names_the_file_and_line(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"pair_id": "a"}\nthis is not json\n')
    problem = only_problem(path)
    assert (problem.file, problem.line) == (str(path), 2)
    assert "not valid JSON" in problem.message


def test_truncated_file_is_called_truncated(tmp_path):
    path = tmp_path / "pairs.json"
    path.write_text(FIXTURE.read_text()[:-200])
    problem = only_problem(path)
    assert "truncated" in problem.message and problem.file == str(path)


def test_non_utf8_bytes_are_located(tmp_path):
    path = tmp_path / "pairs.json"
    path.write_bytes(FIXTURE.read_bytes().replace(b"Oslo", b"Osl\xe9", 1))
    problem = only_problem(path)
    assert "UTF-8" in problem.message and problem.line == FIXTURE.read_text().split("Oslo")[0].count("\n") + 1


def test_missing_field_names_record_pair_and_field(tmp_path, records):
    del records[2]["negative"]["module_k_all_rounds"]
    del records[3]["positive"]
    problems = problems_of(write_json(tmp_path / "pairs.json", records))
    assert [(p.record, p.pair_id, p.field) for p in problems] == [
        (2, "flight-osl-fco-memory", "negative.module_k_all_rounds"),
        (3, "flight-osl-fco-reflection", "positive"),
    ]
    assert all("missing" in p.message for p in problems)


def test_wrong_typed_fields_are_reported_and_the_rest_still_checked(tmp_path, records):
    records[0]["positive"]["outcome"] = "1"
    records[1]["task"] = 42
    records[2]["negative"] = "a string"
    records[3]["positive"]["module_k_all_rounds"] = "   "  # a value problem in an otherwise well-typed record
    problems = problems_of(write_json(tmp_path / "pairs.json", records))
    assert [(p.record, p.field) for p in problems] == [
        (0, "positive.outcome"),
        (1, "task"),
        (2, "negative"),
        (3, "positive.module_k_all_rounds"),
    ]
    assert "expected a number" in problems[0].message and "got a string" in problems[0].message


def test_record_that_is_not_an_object(tmp_path, records):
    problem = only_problem(write_json(tmp_path / "pairs.json", records + [["not", "a", "record"]]))
    assert problem.record == 4 and "expected a JSON object" in problem.message


def test_empty_or_whitespace_only_text(tmp_path, records):
    records[1]["positive"]["trajectory_full_context"] = ""
    records[2]["negative"]["module_k_all_rounds"] = " \n\t "
    problems = problems_of(write_json(tmp_path / "pairs.json", records))
    assert [(p.record, p.field) for p in problems] == [
        (1, "positive.trajectory_full_context"),
        (2, "negative.module_k_all_rounds"),
    ]
    assert all("empty or whitespace-only" in p.message for p in problems)


def test_unknown_target_module_against_a_configurable_module_set(tmp_path, records):
    records[0]["target_module"] = "critic"
    path = write_json(tmp_path / "pairs.json", records)
    problem = only_problem(path)
    assert problem.field == "target_module" and "unknown module 'critic'" in problem.message
    assert load_pairs(path, modules=["critic", "planner", "memory", "reflection"]).height == 4


def test_duplicate_pair_id_within_and_across_files(tmp_path, records):
    within = write_json(tmp_path / "a.json", records + [copy.deepcopy(records[1])])
    problem = only_problem(within)
    assert (problem.record, problem.field, problem.pair_id) == (4, "pair_id", records[1]["pair_id"])
    assert "first seen in" in problem.message and "record 1" in problem.message

    other = write_json(tmp_path / "b.json", records[:1])
    problem = only_problem([write_json(tmp_path / "c.json", records), other])
    assert (problem.file, problem.record) == (str(other), 0)


def test_positive_identical_to_negative(tmp_path, records):
    records[1]["negative"]["module_k_all_rounds"] = records[1]["positive"]["module_k_all_rounds"] + "\n"
    problem = only_problem(write_json(tmp_path / "pairs.json", records))
    assert (problem.record, problem.field) == (1, "negative.module_k_all_rounds")
    assert "identical" in problem.message


def test_whitespace_checks_are_unicode_and_exact_at_the_edges(tmp_path, records):
    """The checks look at a text's edges only, so the edge cases are checked: Unicode whitespace
    (an em space, a no-break space) counts, and texts that end in whitespace but differ inside
    are no problem; the same text with other whitespace around it is one."""
    records[0]["positive"]["trajectory_full_context"] = "\u2003\u00a0\n"
    records[1]["negative"]["module_k_all_rounds"] = "\u2003" + records[1]["positive"]["module_k_all_rounds"].strip() + "\t"
    records[2]["positive"]["module_k_all_rounds"] = "plan A \n"
    records[2]["negative"]["module_k_all_rounds"] = " plan B"
    records[3]["task"] = "\u200b"  # a zero-width space is a character, not whitespace
    problems = problems_of(write_json(tmp_path / "pairs.json", records))
    assert [(p.record, p.field, p.message.split(",")[0]) for p in problems] == [
        (0, "positive.trajectory_full_context", "empty or whitespace-only text"),
        (1, "negative.module_k_all_rounds", "identical to positive.module_k_all_rounds"),
    ]


def test_outcomes_that_contradict_the_pair(tmp_path, records):
    records[0]["positive"]["outcome"] = 0
    records[1]["negative"]["outcome"] = 1
    records[2]["negative"]["outcome"] = 0.5
    problems = problems_of(write_json(tmp_path / "pairs.json", records))
    assert [(p.record, p.field) for p in problems] == [(0, "positive.outcome"), (1, "negative.outcome"), (2, "negative.outcome")]
    assert "outcome 0 contradicts" in problems[0].message and "outcome 0.5" in problems[2].message


def test_parquet_with_a_missing_or_wrongly_typed_column(tmp_path):
    pairs = load_pairs(FIXTURE)
    nested = write_pairs(pairs, tmp_path / "pairs.parquet")
    frame = pl.read_parquet(nested)
    frame.drop("task").write_parquet(tmp_path / "no_task.parquet")
    frame.with_columns(pl.lit(7).alias("pair_id")).write_parquet(tmp_path / "int_id.parquet")
    assert only_problem(tmp_path / "no_task.parquet").field == "task"
    problem = only_problem(tmp_path / "int_id.parquet")
    assert problem.field == "pair_id" and "expected String" in problem.message


def test_every_problem_in_every_file_is_listed(tmp_path, records):
    broken = copy.deepcopy(records)
    for record in broken:
        record["target_module"] = "nope"
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("[{")
    problems = problems_of([write_json(tmp_path / "a.json", broken), bad_json])
    assert len(problems) == 5
    assert {p.file for p in problems} == {str(tmp_path / "a.json"), str(bad_json)}
    message = str(DataError(problems))
    assert "5 problem(s)" in message and "record 3" in message


def test_large_file_loads_columnar(tmp_path, records):
    many = []
    for i in range(20_000):
        record = copy.deepcopy(records[i % 4])
        record["pair_id"] = f"p{i}"
        many.append(record)
    pairs = load_pairs(write_json(tmp_path / "many.json", many))
    assert pairs.height == 20_000 and pairs["pair_id"].n_unique() == 20_000


# --- JSON Lines through Arrow: the same table and the same messages as Python's strict reader ---


def pair(i: int, **changes) -> dict:
    side = {"trajectory_full_context": f"Task: t{i}", "outcome": 1}
    record = {
        "pair_id": f"p{i}", "target_module": "planner", "task": f"t{i}",
        "positive": {**side, "module_k_all_rounds": f"good {i}"},
        "negative": {**side, "module_k_all_rounds": f"bad {i}", "outcome": 0},
    }  # fmt: skip
    return record | changes


def jsonl_with_line_4(path: Path, line: str) -> Path:
    """A good record on line 1, blank and whitespace-only lines 2-3, `line` on line 4 (record 1)."""
    path.write_text(f"{json.dumps(pair(0))}\n\n   \n{line}\n\n", encoding="utf-8")
    return path


BAD_LINE = json.dumps(pair(1) | {"x": "@"})
AT = "line 4"
# each message exactly as the Python reader wrote it before JSON Lines went through Arrow
SAME_MESSAGES = {
    "NaN outcome": (json.dumps(pair(1)).replace('"outcome": 1', '"outcome": NaN', 1), f"{AT}, field 'positive.outcome': NaN is not a JSON number (NaN and Infinity are not JSON); write a finite number or null"),
    "Infinity in an extra field": (BAD_LINE.replace('"@"', "Infinity"), f"{AT}, field 'x': Infinity is not a JSON number (NaN and Infinity are not JSON); write a finite number or null"),
    "lone high surrogate": (json.dumps(pair(1)).replace("t1", "t\\ud800"), f"{AT}, field 'task': a lone surrogate (an escape such as \\ud800 without its pair) is not text; write valid Unicode"),
    "lone low surrogate": (json.dumps(pair(1)).replace("good 1", "good \\udc00"), f"{AT}, field 'positive.module_k_all_rounds': a lone surrogate (an escape such as \\ud800 without its pair) is not text; write valid Unicode"),
    "100,000 levels deep": (BAD_LINE.replace('"@"', "[" * 100_000 + "]" * 100_000), f"{AT}, field 'x': nested more than 100 levels deep; a record is an object of strings, numbers and small objects"),
    "trailing comma": (BAD_LINE.replace('"x": "@"}', '"x": 1,}'), f"{AT}: not valid JSON: Expecting property name enclosed in double quotes at column 267"),
    "number for a text": (json.dumps(pair(1)).replace('"good 1"', "5"), f"record 1, {AT}, pair_id 'p1', field 'positive.module_k_all_rounds': expected a string, got a number (5)"),
    "string for an outcome": (json.dumps(pair(1)).replace('"outcome": 0', '"outcome": "0"'), f"record 1, {AT}, pair_id 'p1', field 'negative.outcome': expected a number (1 or 0), got a string (\"0\")"),
    "array for a record": ("[1, 2]", f"record 1, {AT}: expected a JSON object, got an array ([1, 2])"),
    "two records on a line": (json.dumps(pair(1)) + " " + json.dumps(pair(2)), f"{AT}: not valid JSON: Extra data at column 260"),
    "unknown module": (json.dumps(pair(1, target_module="critic")), f"record 1, {AT}, pair_id 'p1', field 'target_module': unknown module 'critic' (expected one of: reflection, planner, executor, memory)"),
    "whitespace-only text": (json.dumps(pair(1)).replace('"good 1"', '"  "'), f"record 1, {AT}, pair_id 'p1', field 'positive.module_k_all_rounds': empty or whitespace-only text"),
    "duplicate pair_id": (json.dumps(pair(0)), f"record 1, {AT}, pair_id 'p0', field 'pair_id': duplicate pair_id, first seen in {{file}} record 0"),
}


@pytest.mark.parametrize("case", list(SAME_MESSAGES))
def test_a_bad_json_lines_record_gets_the_same_message_as_before(tmp_path, case):
    line, message = SAME_MESSAGES[case]
    path = jsonl_with_line_4(tmp_path / "pairs.jsonl", line)
    problems = problems_of(path)
    assert [str(p) for p in problems] == [f"{path}, {message.format(file=path)}"]


def test_a_byte_order_mark_is_refused_as_before(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(pair(0)).encode() + b"\n")
    assert str(only_problem(path)) == f"{path}, line 1: not valid JSON: Unexpected UTF-8 BOM (decode using utf-8-sig) at column 1"


def test_what_arrow_reads_differently_goes_to_the_python_reader(tmp_path):
    """Arrow takes NaN, deep nesting and two records on a line, and reads date-like strings as
    timestamps: such files must not come out of the Arrow path, whose table would differ."""
    from data.load import _read_json_lines

    clean = jsonl_with_line_4(tmp_path / "clean.jsonl", json.dumps(pair(1)))
    assert _read_json_lines(clean) is not None
    differently = {
        "nan": SAME_MESSAGES["NaN outcome"][0],
        "deep": BAD_LINE.replace('"@"', "[" * 150 + "]" * 150),
        "two": SAME_MESSAGES["two records on a line"][0],
        "date": json.dumps(pair(1) | {"when": "2020-01-01"}),
        "two fields, one column": json.dumps(pair(1, positive_source="a") | {"positive": pair(1)["positive"] | {"source": "b"}}),
        "brackets Arrow might recurse into": json.dumps(pair(1)).replace("good 1", "{[" * 3000),
    }
    for name, line in differently.items():
        path = jsonl_with_line_4(tmp_path / f"{name}.jsonl", line)
        assert _read_json_lines(path) is None, name
    assert load_pairs(path)["positive_module_text"][1] == "{[" * 3000  # the Python reader takes it


def test_json_lines_and_a_json_array_of_the_same_records_load_the_same_table(tmp_path):
    """Arrow's JSON Lines table equals the Python reader's (which reads JSON arrays), extra fields
    included: top-level and per side, nested, null-only, mixed ints and floats, and paired
    surrogate escapes and a U+2028 inside a text (text, not a line break)."""
    from data.load import _read_json_lines

    records = [
        pair(i, meta={"b": i, "a": [1.5, i]}, score=i if i % 2 else i + 0.5, nothing=None)
        | {"positive": pair(i)["positive"] | {"source": f"s{i}", "tokens": i}}
        for i in range(6)
    ]
    records[2]["task"] = "emoji \U0001f600 and a\u2028line separator"
    records[3]["positive"]["extra_only_here"] = True
    array = write_json(tmp_path / "pairs.json", records)
    lines = tmp_path / "pairs.jsonl"
    lines.write_text("\n\n".join(json.dumps(r) for r in records) + "\n")  # escapes, blank lines between
    assert _read_json_lines(lines) is not None  # Arrow read it
    from_array, from_lines = load_pairs(array), load_pairs(lines)
    assert from_lines.equals(from_array)
    assert from_lines.columns == from_array.columns
    assert from_lines["task"][2] == "emoji \U0001f600 and a\u2028line separator"


def test_a_record_longer_than_arrows_block_still_loads_through_arrow(tmp_path):
    """Arrow needs each record inside one parse block: the block grows to the longest line, so a
    long trajectory does not send the whole file to the slow Python reader."""
    from data.load import _ARROW_BLOCK, _read_json_lines

    long = pair(1) | {"positive": pair(1)["positive"] | {"trajectory_full_context": "x" * (3 * _ARROW_BLOCK)}}
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(pair(0)) + "\n" + json.dumps(long) + "\n")
    table = _read_json_lines(path)
    assert table is not None and len(table["positive_context"][1]) == 3 * _ARROW_BLOCK


def test_json_lines_with_blank_lines_name_the_right_line(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(f"\n{json.dumps(pair(0))}\n\n\n{json.dumps(pair(1))}\n\n{json.dumps(pair(2, target_module='critic'))}\n")
    problem = only_problem(path)
    assert (problem.record, problem.line, problem.pair_id) == (2, 7, "p2")


def test_an_extra_field_named_like_a_text_key_column_is_refused(tmp_path):
    path = tmp_path / "pairs.jsonl"
    record = pair(0)
    record["positive"]["context_key"] = "0" * 32
    path.write_text(json.dumps(record) + "\n")
    problem = only_problem(path)
    assert problem.field == "positive.context_key" and "reserved" in problem.message


def test_a_duplicate_key_reads_as_python_reads_it_the_last_value_wins(tmp_path):
    """Arrow refuses an object with a key twice; Python's reader keeps the last, as it always did."""
    path = jsonl_with_line_4(tmp_path / "pairs.jsonl", json.dumps(pair(1)).replace('"task": "t1"', '"task": "first", "task": "t1"'))
    assert load_pairs(path)["task"].to_list() == ["t0", "t1"]
