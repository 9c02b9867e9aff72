"""Runs from agent logs written as chat transcripts (OpenAI-style messages), in the run format.

    pipeline import chat logs/*.jsonl.gz --out runs.jsonl
    pipeline import chat gpt-4o-airline.json --out runs.jsonl --task-field task_id --outcome-field reward \\
        --messages-field traj --success-threshold 1 --opening-message round --task-prefix airline/   # tau-bench
    pipeline pairs runs.jsonl --out pairs.json

    from data.chat import import_files, format_import_summary
    runs, summary = import_files(["logs.jsonl.gz"], task_field="task_id", outcome_field="outcome", messages_field="messages")
    print(format_import_summary(summary, runs))                 # import_files raises data.DataError

A file is a JSON array of records or JSON Lines (one record per line), gzipped or not (told apart
by its first bytes, not its name). Each record is one run, and only three of its fields are read,
each named by an option; a name may be a dotted path into nested objects (`info.reward`: a dot
always separates levels):

- the task field (default `task_id`): a string or an integer naming the task, written as text.
- the outcome field (default `outcome`): 1 or 0, true or false; any other number only with a
  success threshold (reward >= threshold succeeded); anything else is an error.
- the messages field (default `messages`): the transcript, a list of chat messages.

Every other field of a record is never read, so it reaches neither the rounds, nor the task, nor
the metadata: tau-bench's `info` (the simulated user's instruction, the grader's expected actions
and reward breakdown), a `reward` that is not the outcome field, graders' notes, ids.

A message has a `role`: system, developer, user, assistant, tool, or function (the result of an
old-style function call). Its `content` is a string, null, or a list of parts: a `{"type": "text",
"text": ...}` part gives its text, any other part (an image, audio, a refusal) is written as the
placeholder `[<type>]`, e.g. `[image_url]`; parts are joined by blank lines. An assistant message
may carry `tool_calls`, each `{"id": ..., "function": {"name": ..., "arguments": ...}}` with the
arguments a JSON string or an object, or an old-style `function_call` (`{"name": ..., "arguments":
...}`). A tool message answers a call by its `tool_call_id`, a function message by its `name`. No
other field of a message is read (a tool message's `name`, `refusal`, reasoning, ...).

| messages | run |
|---|---|
| system, developer | left out |
| the user messages before the first assistant message | `task` (joined by blank lines); see "Openings" |
| each assistant message | starts a round |
| its text | `plan` (or `reflection` / `memory_store`, see "Patterns") |
| its tool calls | `action`: one `name(key=value, ...)` per call, one per line |
| the tool and function results answering them | `observation`, in the order of the calls |
| user messages after an assistant message | `observation` of that round, after the tool results |

- A call's arguments are rendered `name(key=value, ...)` with each value as JSON, whether they came
  as an object or as a JSON string holding one: `search_direct_flight(origin="JFK", date="2024-05-20")`.
  No arguments (null, "", {}) give `name()`; arguments that are not a JSON object (the model's own
  malformed JSON, say) are kept as written: `read_file({path: sales.csv})`.
- A result answers an unanswered call of the last assistant message before it: call ids need only
  be unique within one assistant message (tau-bench reuses them across turns). A result that
  answers none of them is an error; a call nobody answered is fine (counted in the summary).
- The parts of an observation (results, then user messages) are joined by blank lines. A round
  with no text at all (an empty assistant message, no calls, nothing after it) is dropped and
  counted. A record without an assistant message is an error.

Openings (`opening_message`, `--opening-message`). Runs pair (`pipeline pairs`) only within one
task: the same `task_id` and the same `task` text. With "task" (the default) the opening user
message is the task. When it differs between runs of one task, as with tau-bench, whose simulated
user words its request anew in every trial, those runs cannot pair; the summary says how many tasks
that hits. With "round", the task of every run is `<task field> <task id>` (`task_id 12`) and the
opening user messages become a first round of their own, as its `observation`, so every run of a
task pairs with every other.

Patterns (`reflection_pattern`, `memory_pattern`: Python regular expressions, searched with
re.DOTALL). Without them an assistant message's whole text is its `plan`. With them the text is cut
into paragraphs at blank lines; a paragraph where the reflection pattern matches goes to
`reflection`, else one where the memory pattern matches to `memory_store` (what the agent notes to
remember), else to `plan`. What goes is the pattern's first group if it has groups (so `^Reflection:
(.*)` drops the label), the whole paragraph otherwise. A field's paragraphs are joined by blank lines.

`task_id` is the task field's value as text, after `task_prefix` if one is given: task ids are
compared across every file of a `pipeline pairs`, so benchmarks that number their tasks alike
(tau-bench's airline and retail both count from 0) are imported with prefixes of their own
(`airline/`, `retail/`) to keep their tasks apart. `run_id` is `<file>:<record>`, the file's name
without `.gz`, `.jsonl`, `.json` and the record's 0-based index in the file (its array element, or
its non-blank line); `source` is `chat:<file>`. `outcome` is written 1 or 0; `metadata` holds the
file name, the record index and the outcome value as written, and is never rendered.

Bad input is a `DataError` listing every problem in every file, each naming the file, the record
(and its line in JSON Lines) and the field (`traj[7].tool_call_id`); within one transcript only its
first problem is reported, since what follows it would be read wrongly.
"""

import json
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from data.errors import ConfigError
from data.load import DataError, JSONProblem, Problem, parse_json, read_text_maybe_gzipped
from data.trajectory import ROUND_FIELDS

SOURCE = "chat"
OPENINGS = ("task", "round")

_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_LEFT_OUT = ("system", "developer")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")


@dataclass(frozen=True)
class Options:
    """What `import_files` was asked to read (see the module docstring)."""

    task_field: str = "task_id"
    outcome_field: str = "outcome"
    messages_field: str = "messages"
    success_threshold: float | None = None
    opening_message: str = "task"
    task_prefix: str = ""
    reflection_pattern: re.Pattern | None = None
    memory_pattern: re.Pattern | None = None
    outcome_optional: bool = False  # for scoring runs: a record without an outcome is a run without one


# --- reading files ---------------------------------------------------------------------------


def file_label(path: Path) -> str:
    """`gpt-4o-airline.json` -> `gpt-4o-airline`; `logs.jsonl.gz` -> `logs`."""
    name = path.name.removesuffix(".gz")
    for suffix in (".jsonl", ".json"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_records(path: str | Path) -> list[tuple[int, int | None, object]]:
    """(index, line, record) of every record of a file: a JSON array (line None) or JSON Lines,
    gzipped or not. Raises `DataError` naming the file, record and line when it cannot be read."""
    file = str(path)
    text = read_text_maybe_gzipped(path)
    if not text.strip():
        raise DataError([Problem(file, "file is empty; expected a JSON array of records or JSON Lines, one record per line")])
    if text.lstrip().startswith("["):
        try:
            records = parse_json(text, array_of_records=True)
        except json.JSONDecodeError as e:
            raise DataError([Problem(file, f"not valid JSON: {e.msg} at column {e.colno}", line=e.lineno)]) from None
        except JSONProblem as e:
            raise DataError([Problem(file, e.message, record=e.record, line=e.line_in(text), field=e.field)]) from None
        return [(index, None, record) for index, record in enumerate(records)]
    located, problems = [], []
    lines = [(number, line) for number, line in enumerate(text.split("\n"), start=1) if line.strip()]
    for index, (number, line) in enumerate(lines):
        try:
            located.append((index, number, parse_json(line)))
        except json.JSONDecodeError as e:
            problems.append(Problem(file, f"not valid JSON: {e.msg} at column {e.colno} (expected JSON Lines, one record per line, or a JSON array)", record=index, line=number))
        except JSONProblem as e:
            problems.append(Problem(file, e.message, record=index, line=number, field=e.field))
    if problems:
        raise DataError(problems)
    return located


def field_value(record: dict, path: str) -> object:
    """The value at a dotted path (`info.reward`), or None where the path leads nowhere."""
    value = record
    for key in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


# --- one transcript to rounds ----------------------------------------------------------------


@dataclass
class _Call:
    rendered: str  # name(key=value, ...)
    name: str
    id: str | None
    result: str | None = None  # the text of the message that answered it; None: unanswered


@dataclass
class _Turn:
    """An assistant message and what came after it, until the next assistant message."""

    index: int  # of the assistant message in the transcript
    text: str
    calls: list[_Call]
    user_texts: list[str] = field(default_factory=list)


class _Stop(Exception):
    """The first problem of a transcript: the rest of it is not read."""


def render_call(name: str, arguments: str | dict | None) -> str:
    """`name(key=value, ...)`, each value as JSON, from arguments given as an object or as a JSON
    string holding one; `name()` for none; `name(<as written>)` for a string that is not a JSON object."""
    written = arguments.strip() if isinstance(arguments, str) else None
    try:
        value = arguments if written is None else json.loads(written) if written else None
    except (json.JSONDecodeError, RecursionError):
        return f"{name}({written})"
    if value is None or value == {}:
        return f"{name}()"
    if not isinstance(value, dict):
        return f"{name}({written})"
    return f"{name}({', '.join(f'{key}={json.dumps(item, ensure_ascii=False)}' for key, item in value.items())})"


def split_text(text: str, options: Options, counts: Counter) -> dict[str, str]:
    """An assistant message's text as `plan`, or, with patterns, its paragraphs as `reflection`,
    `memory_store` and `plan` (see the module docstring)."""
    if not text:
        return {}
    if options.reflection_pattern is None and options.memory_pattern is None:
        return {"plan": text}
    parts: dict[str, list[str]] = {"reflection": [], "plan": [], "memory_store": []}
    for paragraph in _PARAGRAPH_BREAK.split(text):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        name = "plan"
        for candidate, pattern in (("reflection", options.reflection_pattern), ("memory_store", options.memory_pattern)):
            match = pattern.search(paragraph) if pattern is not None else None
            if match:
                name = candidate
                if pattern.groups:
                    paragraph = (match.group(1) or "").strip()
                counts[f"paragraphs to {candidate}"] += 1
                break
        if paragraph:
            parts[name].append(paragraph)
    return {name: "\n\n".join(texts) for name, texts in parts.items() if texts}


def _content_text(content: object, where: str) -> str:
    """The text of a message's content: a string, null, or a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content.strip()
    if not isinstance(content, list):
        raise _Stop(where, f"expected a string, null or a list of content parts, got {_kind(content)}")
    texts = []
    for k, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise _Stop(f"{where}[{k}]", f'expected a content part with a type ({{"type": "text", "text": ...}}), got {_kind(part)}')
        if part["type"] != "text":
            texts.append(f"[{part['type']}]")
        elif isinstance(part.get("text"), str):
            texts.append(part["text"].strip())
        else:
            raise _Stop(f"{where}[{k}].text", f"expected a string, got {_kind(part.get('text'))}")
    return "\n\n".join(text for text in texts if text)


def _calls(message: dict, where: str) -> list[_Call]:
    """The tool calls of an assistant message (and its old-style function call, if any)."""
    found = []  # (where, function object, id)
    tool_calls = message.get("tool_calls")
    if tool_calls is not None:
        if not isinstance(tool_calls, list):
            raise _Stop(f"{where}.tool_calls", f"expected a list of tool calls, got {_kind(tool_calls)}")
        for j, call in enumerate(tool_calls):
            if not isinstance(call, dict):
                raise _Stop(f"{where}.tool_calls[{j}]", f"expected a tool call object, got {_kind(call)}")
            if call.get("id") is not None and not isinstance(call["id"], str):
                raise _Stop(f"{where}.tool_calls[{j}].id", f"expected a string, got {_kind(call['id'])}")
            found.append((f"{where}.tool_calls[{j}].function", call.get("function"), call.get("id")))
    if message.get("function_call") is not None:
        found.append((f"{where}.function_call", message["function_call"], None))
    calls = []
    for here, function, call_id in found:
        if not isinstance(function, dict):
            raise _Stop(here, f"expected an object with name and arguments, got {_kind(function)}")
        name, arguments = function.get("name"), function.get("arguments")
        if not isinstance(name, str) or not name.strip():
            raise _Stop(f"{here}.name", f"expected the name of the tool, got {_kind(name)}")
        if arguments is not None and not isinstance(arguments, (str, dict)):
            raise _Stop(f"{here}.arguments", f"expected a JSON string or an object, got {_kind(arguments)}")
        calls.append(_Call(render_call(name.strip(), arguments), name.strip(), call_id))
    return calls


def _answered_call(turn: _Turn | None, message: dict, where: str, messages_field: str) -> _Call:
    """The call a tool message (by `tool_call_id`) or function message (by `name`) answers."""
    role = message["role"]
    key = "tool_call_id" if role == "tool" else "name"
    wanted = message.get(key)
    if not isinstance(wanted, str):
        what = "the id of the tool call it answers" if role == "tool" else "the name of the function it answers"
        raise _Stop(f"{where}.{key}", f"expected {what}, got {_kind(wanted)}")
    if turn is None:
        raise _Stop(f"{where}.{key}", f"a {role} message before any assistant message: there is no call for it to answer")
    for call in turn.calls:
        if call.result is None and (call.id if role == "tool" else call.name) == wanted:
            return call
    made = [call.id if role == "tool" else call.name for call in turn.calls]
    pending = [repr(value) for call, value in zip(turn.calls, made) if call.result is None and value is not None]
    calls = f"its unanswered calls: {', '.join(pending)}" if pending else "it has no unanswered call" if made else "it made no tool call"
    raise _Stop(f"{where}.{key}", f"{key} {wanted!r} answers no call of the last assistant message ({messages_field}[{turn.index}]; {calls})")


def transcript_rounds(messages: list, options: Options, counts: Counter) -> tuple[str, list[dict[str, str]]]:
    """(opening text, rounds) of one transcript, as the module docstring maps them. Raises `_Stop`
    (field, message) at its first problem."""
    where = options.messages_field
    opening: list[str] = []
    turns: list[_Turn] = []
    for i, message in enumerate(messages):
        at = f"{where}[{i}]"
        if not isinstance(message, dict):
            raise _Stop(at, f"expected a message object with a role, got {_kind(message)}")
        role = message.get("role")
        if role not in _ROLES:
            raise _Stop(f"{at}.role", f"expected one of {', '.join(_ROLES)}, got {_kind(role)}")
        text = _content_text(message.get("content"), f"{at}.content")
        if role in _LEFT_OUT:
            counts["system messages left out"] += 1
        elif role == "user":
            (turns[-1].user_texts if turns else opening).append(text)
            counts["user messages after an assistant message" if turns else "opening user messages"] += 1
        elif role == "assistant":
            turns.append(_Turn(i, text, _calls(message, at)))
            counts["assistant messages"] += 1
        else:
            call = _answered_call(turns[-1] if turns else None, message, at, where)
            call.result = text
            counts["tool results"] += 1
    if not turns:
        raise _Stop(where, "no assistant message: a run needs at least one turn of the agent's")

    rounds = []
    for turn in turns:
        fields = split_text(turn.text, options, counts)
        if turn.calls:
            fields["action"] = "\n".join(call.rendered for call in turn.calls)
            counts["tool calls"] += len(turn.calls)
            counts["tool calls without a result"] += sum(call.result is None for call in turn.calls)
        observation = "\n\n".join(text for text in [*(call.result for call in turn.calls), *turn.user_texts] if text)
        if observation:
            fields["observation"] = observation
        if fields:
            rounds.append({name: fields[name] for name in ROUND_FIELDS if name in fields})
        else:
            counts["empty assistant messages (no round)"] += 1
    return "\n\n".join(text for text in opening if text), rounds


# --- records to runs -------------------------------------------------------------------------


def record_run(file: str, label: str, index: int, line: int | None, record: object, options: Options, counts: Counter) -> tuple[dict | None, list[Problem]]:
    """The run of one record, or the problems that keep it from being one."""
    if not isinstance(record, dict):
        return None, [Problem(file, f"expected a JSON object (one run), got {_kind(record)}", record=index, line=line)]
    problems: list[Problem] = []

    def problem(field_name: str, message: str) -> None:
        problems.append(Problem(file, message, record=index, line=line, field=field_name))

    task_id = field_value(record, options.task_field)
    if task_id is None:
        problem(options.task_field, "missing (or null); runs are grouped into tasks by this field (--task-field)")
    elif isinstance(task_id, bool) or not isinstance(task_id, (str, int)) or (isinstance(task_id, str) and not task_id.strip()):
        problem(options.task_field, f"expected a string or an integer naming the task, got {_kind(task_id)}")

    outcome = field_value(record, options.outcome_field)
    succeeded = None
    if outcome is None and options.outcome_optional:
        pass
    elif outcome is None:
        problem(options.outcome_field, "missing (or null); the run's outcome is read from this field (--outcome-field)")
    elif not isinstance(outcome, (int, float)):
        problem(options.outcome_field, f"expected 1 or 0, true or false, or a reward with a success threshold, got {_kind(outcome)}")
    elif options.success_threshold is not None:
        succeeded = outcome >= options.success_threshold
    elif outcome in (0, 1):
        succeeded = outcome == 1
    else:
        problem(options.outcome_field, f"outcome {outcome} is neither 1 (succeeded) nor 0 (failed); give a success threshold (--success-threshold T: reward >= T succeeded) to read it as a reward")

    messages = field_value(record, options.messages_field)
    opening, rounds = "", []
    if messages is None:
        problem(options.messages_field, "missing (or null); expected the transcript, a list of chat messages (--messages-field)")
    elif not isinstance(messages, list) or not messages:
        problem(options.messages_field, f"expected a non-empty list of chat messages, got {_kind(messages)}")
    else:
        try:
            opening, rounds = transcript_rounds(messages, options, counts)
        except _Stop as stop:
            problem(*stop.args)
    if problems:
        return None, problems

    task_id = options.task_prefix + (task_id.strip() if isinstance(task_id, str) else str(task_id))
    if options.opening_message == "round":
        task = f"{options.task_field} {task_id}"
        rounds = ([{"observation": opening}] if opening else []) + rounds
    elif opening:
        task = opening
    else:
        problem(options.messages_field, "no user message with text before the first assistant message: the task is the opening user message (with --opening-message round it is the task field)")
        return None, problems
    if not rounds:
        problem(options.messages_field, "no assistant message has text or tool calls: nothing to make a round of")
        return None, problems
    run = {
        "run_id": f"{label}:{index}",
        "task_id": task_id,
        "task": task,
        "outcome": None if outcome is None else 1 if succeeded else 0,
        "source": f"{SOURCE}:{label}",
        "metadata": {"file": Path(file).name, "record": index, "outcome": outcome},
        "rounds": rounds,
    }
    if run["outcome"] is None:
        del run["outcome"]
    return run, []


@dataclass
class FileCounts:
    label: str
    records: int = 0
    succeeded: int = 0
    failed: int = 0
    runs: int = 0
    rounds: int = 0
    tool_calls: int = 0


@dataclass
class ImportSummary:
    options: Options
    files: list[FileCounts] = field(default_factory=list)
    messages: Counter = field(default_factory=Counter)  # how the messages were read, see transcript_rounds


def compile_pattern(pattern: str | re.Pattern | None, name: str) -> re.Pattern | None:
    """A pattern as given (already compiled) or compiled with re.DOTALL; `ConfigError` if it is not a regex."""
    if pattern is None or isinstance(pattern, re.Pattern):
        return pattern
    try:
        return re.compile(pattern, re.DOTALL)
    except re.error as e:
        raise ConfigError(f"{name} {pattern!r} is not a valid regular expression: {e}") from None


def import_files(
    paths: list[str | Path],
    *,
    task_field: str = "task_id",
    outcome_field: str = "outcome",
    messages_field: str = "messages",
    success_threshold: float | None = None,
    opening_message: str = "task",
    task_prefix: str = "",
    reflection_pattern: str | re.Pattern | None = None,
    memory_pattern: str | re.Pattern | None = None,
    outcome_optional: bool = False,
) -> tuple[list[dict], ImportSummary]:
    """Read every file (all problems in all files are collected before raising `DataError`) and
    return their runs, in file and record order, with what was read. Bad options raise `ConfigError`.
    `outcome_optional` (for scoring runs, `pipeline score --from chat`): a record without the
    outcome field gives a run without `outcome` instead of a problem."""
    if opening_message not in OPENINGS:
        raise ConfigError(f"opening message {opening_message!r}: expected one of {', '.join(OPENINGS)}")
    if success_threshold is not None and not math.isfinite(success_threshold):
        raise ConfigError(f"success threshold {success_threshold}: expected a finite number")
    for name, value in (("task field", task_field), ("outcome field", outcome_field), ("messages field", messages_field)):
        if not value or any(not key for key in value.split(".")):
            raise ConfigError(f"{name} {value!r}: expected a field name, or a dotted path such as info.reward")
    options = Options(
        task_field, outcome_field, messages_field, success_threshold, opening_message, task_prefix,
        compile_pattern(reflection_pattern, "reflection pattern"), compile_pattern(memory_pattern, "memory pattern"), outcome_optional,
    )  # fmt: skip
    problems: list[Problem] = []
    runs: list[dict] = []
    summary = ImportSummary(options)
    labels = Counter(file_label(Path(path)) for path in paths)
    for path in map(Path, paths):
        file, label = str(path), file_label(path)
        if labels[label] > 1:
            problems.append(Problem(file, f"another file given has the same name {label!r}; run ids would clash (rename one)"))
            continue
        try:
            records = read_records(path)
        except DataError as e:
            problems += e.problems
            continue
        counts = FileCounts(label, records=len(records))
        summary.files.append(counts)
        calls_before = summary.messages["tool calls"]
        for index, line, record in records:
            run, record_problems = record_run(file, label, index, line, record, options, summary.messages)
            problems += record_problems
            if run is None:
                continue
            runs.append(run)
            counts.runs += 1
            counts.succeeded += run.get("outcome") == 1
            counts.failed += run.get("outcome") == 0
            counts.rounds += len(run["rounds"])
        counts.tool_calls = summary.messages["tool calls"] - calls_before
    if problems:
        raise DataError(problems)
    return runs, summary


def format_import_summary(summary: ImportSummary, runs: list[dict]) -> str:
    """Per file: records, succeeded/failed, runs, rounds, tool calls; the totals; how the messages
    were read; the tasks, how many have both outcomes, and how many of those cannot pair because
    their runs open with different user messages."""
    header = f"{'file':<40} {'records':>7} {'succeeded':>9} {'failed':>6} {'runs':>5} {'rounds':>6} {'tool calls':>10}"
    lines = [header]
    total = FileCounts("total")
    for counts in summary.files:
        lines.append(_summary_row(counts))
        for name in ("records", "succeeded", "failed", "runs", "rounds", "tool_calls"):
            setattr(total, name, getattr(total, name) + getattr(counts, name))
    lines.append(_summary_row(total))
    m = summary.messages
    opening = "the task" if summary.options.opening_message == "task" else "a first round"
    lines.append(
        f"messages: {m['assistant messages']} assistant ({m['tool calls']} tool calls, {m['tool calls without a result']} without a result), "
        f"{m['tool results']} tool results, {m['opening user messages']} opening user messages (as {opening}), "
        f"{m['user messages after an assistant message']} later user messages (as observations), {m['system messages left out']} system left out"
    )
    if summary.options.reflection_pattern is not None or summary.options.memory_pattern is not None:
        lines.append(f"patterns: {m['paragraphs to reflection']} paragraphs to reflection, {m['paragraphs to memory_store']} to memory_store")
    if m["empty assistant messages (no round)"]:
        lines.append(f"left out: {m['empty assistant messages (no round)']} empty assistant messages (no text, no calls, nothing after them)")

    outcomes: dict[str, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))  # task_id -> task -> outcomes
    for run in runs:
        if "outcome" in run:
            outcomes[run["task_id"]][run["task"]].add(run["outcome"])
    both = [task_id for task_id, texts in outcomes.items() if len(set().union(*texts.values())) == 2]
    unpaired = [task_id for task_id in both if not any(len(values) == 2 for values in outcomes[task_id].values())]
    lines.append(f"{len(outcomes)} tasks ({summary.options.task_field}); {len(both)} have both a succeeded and a failed run")
    if unpaired:
        lines.append(
            f"warning: in {len(unpaired)} of them the runs open with different user messages, so no succeeded run pairs with a failed one "
            "(runs pair within one task id and task text); --opening-message round makes the task the task id and pairs them"
        )
    return "\n".join(lines)


def _summary_row(counts: FileCounts) -> str:
    return (
        f"{counts.label[:40]:<40} {counts.records:>7} {counts.succeeded:>9} {counts.failed:>6} {counts.runs:>5} "
        f"{counts.rounds:>6} {counts.tool_calls:>10}"
    )


def _kind(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number", type(None): "null"}
    if value is None:
        return "null"
    return f"{names.get(type(value), type(value).__name__)} ({json.dumps(value, ensure_ascii=False)[:40]})"
