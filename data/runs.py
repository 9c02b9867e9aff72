"""Agent runs with an outcome: the run format, its validation, rendering, and pair mining.

A runs file is JSON Lines, one run per line:

    {"run_id": "flight-osl-fco-3", "task": "Find the cheapest direct flight from Oslo to Rome on 12 May and book it.",
     "outcome": 1, "task_id": "flight-osl-fco", "source": "my-agent v2", "metadata": {"cost_usd": 0.03},
     "rounds": [{"reflection": "No attempts yet; start by listing direct flights.",
                 "plan": "1. search flights 2. compare prices 3. book the cheapest",
                 "action": "search_flights(origin='OSL', dest='FCO', date='2025-05-12', direct=True)",
                 "observation": "3 flights: SK4711 EUR 189, DY1870 EUR 142, AZ609 EUR 231",
                 "memory_store": "cheapest direct OSL-FCO 12 May: DY1870 EUR 142"},
                {"memory_query": "cheapest direct flight found", "memory_result": "DY1870 EUR 142",
                 "action": "book_flight(flight='DY1870')", "observation": "booked DY1870, ref QX7P2"}]}

- `run_id` (string, unique across all files given together), `task` (the task text the agent
  was given) and `outcome` are required. `outcome` is 1 (succeeded) or 0 (failed), `true`/`false`
  read the same; a float reward is read against a success threshold (`--success-threshold T`:
  reward >= T succeeded), and without one any value other than 0 or 1 is an error.
- `rounds` is a non-empty list; each round holds any of `ROUND_FIELDS` as strings (a field left out,
  null or blank is absent), at least one with text. Any other field in a round is an error, so a
  typo never silently drops text.
- `task_id` (optional string): runs are grouped into tasks by (`task_id`, `task`), so two
  challenges that happen to share a text stay apart. `source` (optional string) is carried into
  the pairs. `metadata` (optional object) is kept for you and never rendered: put the grader's
  verdict, failure reason, cost and the like there. Other top-level fields are ignored.

Rendering (`render_context`, `render_module`, from `data.trajectory`, which documents the layout)
writes a run's task and rounds in the tagged multi-round style of the pair format. A module's text
(`module_k_all_rounds`) keeps only the round fields of that module (`DEFAULT_MODULE_FIELDS`,
configurable as `data.module_fields`). Only `task` and `rounds` are rendered: the outcome and
metadata never reach the texts.

Mining (`mine_pairs`): within each task and module, every run that succeeded against every run that
failed, skipping runs with no text for the module and pairs whose two texts are identical; at most
`max_pairs_per_task` pairs per task and module, chosen with a seeded generator so that each run is
used as evenly as possible. The output does not depend on the order of the input runs.

    from data.runs import load_runs, mine_pairs
    runs = load_runs(["runs.jsonl"])                     # raises data.DataError listing every problem
    records, report = mine_pairs(runs, max_pairs_per_task=8, seed=0)
    print(format_mining_report(report))
"""

import json
import math
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from data.errors import ConfigError
from data.files import json_text, read_once, write_text_atomic
from data.load import DataError, JSONProblem, Problem, parse_json, read_utf8
from data.schema import DEFAULT_MODULES
from data.trajectory import (
    DEFAULT_MODULE_FIELDS,
    ROUND_FIELDS,
    ROUND_TAGS,
    render_context,
    render_module,
)

DEFAULT_MAX_PAIRS_PER_TASK = 8

_TEXT_FIELDS = ("run_id", "task")
_OPTIONAL_TEXT_FIELDS = ("task_id", "source")


@dataclass(frozen=True)
class Run:
    """One validated run. `rounds` hold only fields with text, stripped."""

    run_id: str
    task: str
    outcome: float | None  # as written: 1/0, or a reward; None only when loaded with outcome_optional (for scoring)
    succeeded: bool | None  # None when the outcome is unknown
    rounds: tuple[dict[str, str], ...]
    task_id: str | None = None
    source: str | None = None
    metadata: dict = field(default_factory=dict, compare=False)

    @property
    def task_key(self) -> tuple[str, str]:
        return (self.task_id or "", self.task)


# --- reading and validating ------------------------------------------------------------------


def load_runs(paths: str | Path | Iterable[str | Path], success_threshold: float | None = None, outcome_optional: bool = False) -> list[Run]:
    """Read and validate runs files (JSON Lines). Raises `DataError` listing every problem in every
    file, each with its file, line, run_id and field. `outcome_optional` is for scoring runs, where
    the outcome is only passed through: a run may leave it out (its `outcome` and `succeeded` are
    then None), and any finite number is read as written; mining pairs needs outcomes, so it never
    sets it."""
    paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    paths = read_once(paths)  # the same file given twice is read once (the CLI says so)
    if not paths:
        raise ValueError("no runs files given")
    located: list[tuple[str, int, object]] = []
    problems: list[Problem] = []
    for path in paths:
        lines, file_problems = _read_lines(path)
        located += lines
        problems += file_problems
    runs, record_problems = _validate(located, success_threshold, outcome_optional)
    if problems or record_problems:
        raise DataError(problems + record_problems)
    return runs


def runs_from_records(
    records: Sequence[Mapping], success_threshold: float | None = None, source: str = "<records>", outcome_optional: bool = False
) -> list[Run]:
    """Validate in-memory run records (as `load_runs` does files; `line` is the record's 1-based index)."""
    runs, problems = _validate([(source, i, record) for i, record in enumerate(records, start=1)], success_threshold, outcome_optional)
    if problems:
        raise DataError(problems)
    return runs


def write_runs(records: Sequence[Mapping], path: str | Path) -> Path:
    """Validate run records and write them as JSON Lines, atomically."""
    runs_from_records(records, source=str(path))
    return write_text_atomic(path, "".join(json_text(record, ensure_ascii=False) + "\n" for record in records))


def _read_lines(path: Path) -> tuple[list[tuple[str, int, object]], list[Problem]]:
    file = str(path)
    try:
        text = read_utf8(path)
    except DataError as e:
        return [], e.problems
    if not text.strip():
        return [], [Problem(file, "file is empty; expected JSON Lines, one run per line")]
    if text.lstrip().startswith("["):
        return [], [Problem(file, "expected JSON Lines (one run object per line), got a JSON array", line=1)]
    located, problems = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            located.append((file, number, parse_json(line)))
        except json.JSONDecodeError as e:
            problems.append(Problem(file, f"not valid JSON: {e.msg} at column {e.colno}", line=number))
        except JSONProblem as e:
            problems.append(Problem(file, e.message, line=number, field=e.field))
    return located, problems


def _validate(located: list[tuple[str, int, object]], success_threshold: float | None, outcome_optional: bool = False) -> tuple[list[Run], list[Problem]]:
    runs, problems = [], []
    first_seen: dict[str, tuple[str, int]] = {}
    for file, line, record in located:
        run, record_problems = _check_record(file, line, record, success_threshold, outcome_optional)
        problems += record_problems
        if run is None:
            continue
        if run.run_id in first_seen:
            where = "{} line {}".format(*first_seen[run.run_id])
            problems.append(Problem(file, f"duplicate run_id, first seen in {where}", line=line, run_id=run.run_id, field="run_id"))
            continue
        first_seen[run.run_id] = (file, line)
        runs.append(run)
    return runs, problems


def _check_record(file: str, line: int, record: object, success_threshold: float | None, outcome_optional: bool = False) -> tuple[Run | None, list[Problem]]:
    if not isinstance(record, dict):
        return None, [Problem(file, f"expected a JSON object (one run), got {_kind(record)}", line=line)]
    run_id = record.get("run_id") if isinstance(record.get("run_id"), str) and record["run_id"].strip() else None
    problems: list[Problem] = []

    def problem(field_name: str, message: str) -> None:
        problems.append(Problem(file, message, line=line, run_id=run_id, field=field_name))

    for name in _TEXT_FIELDS + _OPTIONAL_TEXT_FIELDS:
        value = record.get(name)
        if value is None:
            if name in _TEXT_FIELDS:
                problem(name, "missing (or null)")
        elif not isinstance(value, str):
            problem(name, f"expected a string, got {_kind(value)}")
        elif not value.strip():
            problem(name, "empty or whitespace-only text")

    outcome = record.get("outcome")
    if outcome is None:
        if not outcome_optional:
            problem("outcome", "missing (or null)")
    elif not isinstance(outcome, (int, float)) or (isinstance(outcome, float) and not math.isfinite(outcome)):
        problem("outcome", f"expected a number (1 succeeded, 0 failed, or a reward with a success threshold), got {_kind(outcome)}")
    elif success_threshold is None and not outcome_optional and float(outcome) not in (0.0, 1.0):
        problem("outcome", f"outcome {outcome} is neither 1 (succeeded) nor 0 (failed); give a success threshold (pipeline pairs --success-threshold) to read it as a reward")

    metadata = record.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        problem("metadata", f"expected an object, got {_kind(metadata)}")

    rounds = _check_rounds(record.get("rounds"), problem)
    if problems:
        return None, problems
    outcome = None if outcome is None else float(outcome)
    if outcome is None:
        succeeded = None
    else:
        succeeded = outcome >= success_threshold if success_threshold is not None else outcome == 1.0
    run = Run(
        run_id=record["run_id"],
        task=record["task"].strip(),
        outcome=outcome,
        succeeded=succeeded,
        rounds=rounds,
        task_id=record.get("task_id"),
        source=record.get("source"),
        metadata=metadata or {},
    )
    return run, []


def _check_rounds(rounds: object, problem) -> tuple[dict[str, str], ...]:
    if rounds is None:
        problem("rounds", "missing (or null)")
        return ()
    if not isinstance(rounds, list):
        problem("rounds", f"expected a list of rounds, got {_kind(rounds)}")
        return ()
    if not rounds:
        problem("rounds", "no rounds: a run needs at least one round with text")
    checked = []
    for index, round_ in enumerate(rounds):
        where = f"rounds[{index}]"
        if not isinstance(round_, dict):
            problem(where, f"expected an object with any of {', '.join(ROUND_FIELDS)}, got {_kind(round_)}")
            continue
        texts, wrong = {}, False
        for name, value in round_.items():
            if name not in ROUND_TAGS:
                problem(f"{where}.{name}", f"unknown round field {name!r} (expected any of: {', '.join(ROUND_FIELDS)})")
                wrong = True
            elif value is not None and not isinstance(value, str):
                problem(f"{where}.{name}", f"expected a string, got {_kind(value)}")
                wrong = True
            elif value is not None and value.strip():
                texts[name] = value.strip()
        if not texts and not wrong:
            problem(where, "round has no text in any field")
        checked.append({name: texts[name] for name in ROUND_FIELDS if name in texts})
    return tuple(checked)


def _kind(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return f"{names.get(type(value), type(value).__name__)} ({json.dumps(value)[:40]})"


# --- pair mining -----------------------------------------------------------------------------


@dataclass
class ModuleStats:
    pairs: int = 0
    tasks: int = 0  # tasks that gave this module at least one pair
    runs_without_text: int = 0  # runs in tasks with both outcomes that wrote nothing for the module
    identical_skipped: int = 0  # succeeded/failed pairs whose module texts were identical
    over_cap: int = 0  # pairs left out by max_pairs_per_task


@dataclass
class MiningReport:
    runs: int
    succeeded: int
    tasks: int
    tasks_with_both: int
    only_succeeded: tuple[int, int]  # (runs, tasks) in tasks where every run succeeded
    only_failed: tuple[int, int]  # (runs, tasks) in tasks where every run failed
    modules: dict[str, ModuleStats]
    max_pairs_per_task: int

    @property
    def pairs(self) -> int:
        return sum(stats.pairs for stats in self.modules.values())


def check_module_fields(modules: Sequence[str], module_fields: Mapping[str, Sequence[str]]) -> None:
    """Every module to mine needs its round fields, and those must be known round fields."""
    problems = []
    for module in modules:
        fields = module_fields.get(module)
        if not fields:
            problems.append(f"no round fields for module {module!r} in data.module_fields (e.g. `{module}: [plan]`; known fields: {', '.join(ROUND_FIELDS)})")
            continue
        unknown = [name for name in fields if name not in ROUND_TAGS]
        if unknown:
            problems.append(f"data.module_fields.{module}: unknown round field(s) {', '.join(map(repr, unknown))} (known: {', '.join(ROUND_FIELDS)})")
    if problems:
        raise ConfigError("; ".join(problems))


def mine_pairs(
    runs: Sequence[Run],
    modules: Sequence[str] = DEFAULT_MODULES,
    module_fields: Mapping[str, Sequence[str]] = DEFAULT_MODULE_FIELDS,
    max_pairs_per_task: int = DEFAULT_MAX_PAIRS_PER_TASK,
    seed: int = 0,
) -> tuple[list[dict], MiningReport]:
    """Preference pairs (records in the pair format) from runs with outcomes, and what was skipped.

    For each task and module: a succeeded run's module text (positive, with its own full context)
    against a failed run's (negative, with its own). Each side carries its `run_id` and `source`;
    the pair carries `task_id` when the runs have one. Records come sorted by task, module, pair_id.
    """
    check_module_fields(modules, module_fields)
    if max_pairs_per_task < 1:
        raise ValueError(f"max_pairs_per_task must be at least 1, got {max_pairs_per_task}")
    by_task: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for run in runs:
        by_task[run.task_key].append(run)

    stats = {module: ModuleStats() for module in modules}
    only = {True: [0, 0], False: [0, 0]}
    records = []
    for key in sorted(by_task):
        task_runs = sorted(by_task[key], key=lambda run: run.run_id)
        outcomes = {run.succeeded for run in task_runs}
        if len(outcomes) == 1:
            only[outcomes.pop()][0] += len(task_runs)
            only[task_runs[0].succeeded][1] += 1
            continue
        context = {run.run_id: render_context(run.task, run.rounds) for run in task_runs}
        for module in modules:
            texts = {run.run_id: render_module(run.rounds, module_fields[module]) for run in task_runs}
            stats[module].runs_without_text += sum(1 for text in texts.values() if not text)
            succeeded = [run for run in task_runs if run.succeeded and texts[run.run_id]]
            failed = [run for run in task_runs if not run.succeeded and texts[run.run_id]]
            candidates = [(good, bad) for good in succeeded for bad in failed if texts[good.run_id] != texts[bad.run_id]]
            stats[module].identical_skipped += len(succeeded) * len(failed) - len(candidates)
            chosen = _choose(candidates, max_pairs_per_task, random.Random(f"{seed}\x00{key[0]}\x00{key[1]}\x00{module}"))
            stats[module].over_cap += len(candidates) - len(chosen)
            stats[module].pairs += len(chosen)
            stats[module].tasks += bool(chosen)
            for good, bad in chosen:
                records.append(_pair_record(module, good, bad, context, texts))

    report = MiningReport(
        runs=len(runs),
        succeeded=sum(run.succeeded for run in runs),
        tasks=len(by_task),
        tasks_with_both=len(by_task) - only[True][1] - only[False][1],
        only_succeeded=tuple(only[True]),
        only_failed=tuple(only[False]),
        modules=stats,
        max_pairs_per_task=max_pairs_per_task,
    )
    return records, report


def _choose(candidates: list[tuple[Run, Run]], cap: int, rng: random.Random) -> list[tuple[Run, Run]]:
    """All candidates if they fit under the cap; otherwise `cap` of them, each next one the pair
    whose runs have been used least so far (ties broken by a seeded shuffle), so that no single
    run dominates a task's pairs."""
    if len(candidates) <= cap:
        return candidates
    order = list(candidates)
    rng.shuffle(order)
    uses: Counter[str] = Counter()
    chosen = []

    def load(i: int) -> tuple[int, int, int]:
        good, bad = uses[order[i][0].run_id], uses[order[i][1].run_id]
        return max(good, bad), good + bad, i

    for _ in range(cap):
        good, bad = order.pop(min(range(len(order)), key=load))
        uses[good.run_id] += 1
        uses[bad.run_id] += 1
        chosen.append((good, bad))
    return sorted(chosen, key=lambda pair: (pair[0].run_id, pair[1].run_id))


def _pair_record(module: str, good: Run, bad: Run, context: dict[str, str], texts: dict[str, str]) -> dict:
    def side(run: Run) -> dict:
        values = {
            "trajectory_full_context": context[run.run_id],
            "module_k_all_rounds": texts[run.run_id],
            "outcome": 1 if run.succeeded else 0,
            "run_id": run.run_id,
        }
        if run.source is not None:
            values["source"] = run.source
        return values

    record = {"pair_id": f"{good.run_id}-vs-{bad.run_id}-{module}", "target_module": module, "task": good.task}
    if good.task_id is not None:
        record["task_id"] = good.task_id
    return record | {"positive": side(good), "negative": side(bad)}


def format_mining_report(report: MiningReport) -> str:
    """The table `pipeline pairs` prints."""
    failed = report.runs - report.succeeded
    runs_line = f"{report.runs} runs ({report.succeeded} succeeded, {failed} failed) over {report.tasks} tasks; {report.tasks_with_both} tasks have both outcomes"
    unpaired = (
        f"runs that cannot pair: {report.only_succeeded[0]} in {report.only_succeeded[1]} task(s) where every run succeeded, "
        f"{report.only_failed[0]} in {report.only_failed[1]} task(s) where every run failed"
    )
    header = f"{'module':<12} {'pairs':>6} {'tasks':>6} {'runs without text':>18} {'identical skipped':>18} {'over the cap':>13}"
    lines = [runs_line, unpaired, "", header]
    for module, stats in report.modules.items():
        lines.append(f"{module:<12} {stats.pairs:>6} {stats.tasks:>6} {stats.runs_without_text:>18} {stats.identical_skipped:>18} {stats.over_cap:>13}")
    lines.append(f"{'total':<12} {report.pairs:>6}")
    lines.append(f"(at most {report.max_pairs_per_task} pairs per task and module; runs without text and identical pairs counted in tasks with both outcomes)")
    return "\n".join(lines)
