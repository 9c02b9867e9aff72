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
