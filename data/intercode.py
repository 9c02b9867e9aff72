"""Runs from InterCode's result files (princeton-nlp/intercode, `data/results/`), in the run format.

    pipeline import intercode results/*.json.gz --out runs.jsonl
    pipeline pairs runs.jsonl --out pairs.json

    from data.intercode import import_files, format_import_summary
    runs, summary = import_files(["sql__gpt-4__ic_sql_multiturn_gpt-4_10_turns.json.gz"])  # raises data.DataError
    print(format_import_summary(summary, runs))

A result file (`.json`, or gzipped `.json.gz`) is one JSON object: one entry per attempt keyed by
its index (in Plan & Solve files under `"logs"`, beside `"meta"`), each with `environment`,
`dataset`, `task_id`, `query` (the task text), `turn_history` (`actions`, `observations`,
`rewards`, `valid_action`, and `thoughts` for ReAct or `steps` for Plan & Solve) and `summary`
(`max_reward`, ...).

Each attempt becomes a run. `task` is the query; `task_id` is `<environment>/<dataset>/<task_id>`
(`ic_sql/dev_spider/852`), the same in every file, so attempts at one task by different models
and strategies pair with each other; `run_id` is `<file>:<attempt>` (the file name without
`.json[.gz]`); `source` is `intercode <environment> <model> <strategy>` read from the file name
(`intercode sql gpt-4 multiturn 10 turns`). The outcome is the paper's: `summary.max_reward == 1`
succeeded, anything lower (a partial Bash score of 0.7 too) failed. Each turn is a round: the ReAct
thought (`thoughts[i]`) or the Plan & Solve step (`steps[i]`) as `plan`, the action as `action`,
the execution output as `observation`. Plan & Solve runs one plan step per turn, so `steps[i]` is
the step turn i carried out; with refinement (`plan_solve_refine`) the turns after the plan are
refinement turns and have no step, hence no `plan`. `max_reward`, the turns, model, strategy and
file go to `metadata`, which is never rendered.

Nothing that gives the outcome away reaches the rounds:

- `rewards`, `valid_action`, `summary`, `info` (the gold output and the reward breakdown) and
  `hardness` are not read into rounds.
- Grader messages are cut out of observations: the Python tests' verdicts ("Test case did not
  pass. Please try again", "Failed 2/3 Test Cases. ...", "Failed Test Case: assert ...") and, on a
  pass, the executor's result (`{'output': '', 'error': ''}`: no failed submission ever shows it);
  the CTF flag checks ("Submitted flag is incorrect. Keep trying!", "The submitted flag is
  correct.").
- The multi-turn prompt showed the agent its reward after every turn, and some models repeat it
  in their own text ("the reward is 0.0", `Reward: 1.0`, `echo "Reward: ..."`), almost only in
  failed attempts, with the feedback line around it ("Try something different to generate SQL
  command to get a reward of 1."), sometimes cut off before the word; the environment then echoes
  it back in error messages. Every sentence that mentions a reward or starts that feedback line is
  removed, from actions, thoughts, steps and observations, without a marker (a marker would itself
  mark failures). A sentence here ends at a line break, at `.`, `!` or `?`
  followed by a space, at a run of two or more spaces (how some files flattened line breaks), or
  before a `Reward:` label; the rest of the text is kept as it was.
- The PaLM models' turn `blocked` (their API refused to answer; the harness then ended the episode,
  always in failure) is not something the agent wrote and is dropped.

A round left with no text is dropped. What was removed is counted, split by succeeded and failed
attempts, and printed.

Left out, with a count and the reason in the summary:

- Attempts in the human player's layout (`trajectory` and `query_idx` instead of `turn_history`,
  the file `sql__human__...`): a person at the keyboard, not an agent's modules, and its
  observations are printed differently, so its runs would be told apart by format alone.
- Whole files where the harness ran the model's Markdown fences as commands: more than half of
  their attempts get "BASH: command not found" (`bash__gpt-3.5__ic_bash_plan_solve_fs_1` and
  `..._plan_solve_refine_3_turns`); none of their attempts succeeds, so they would add failures
  that a fence alone identifies.
- Attempts with no turns.
"""

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from data.load import DataError, JSONProblem, Problem, parse_json, read_text_maybe_gzipped

SOURCE = "intercode"

# Models as InterCode's file names spell them; a name that gives none is read from its folder.
_MODELS = ("gpt-4", "gpt-3.5", "text-davinci-003", "chat-bison-001", "text-bison-001", "starchat", "vicuna")
_STRATEGIES = (("plan_solve_refine", "plan_solve refine"), ("plan_solve", "plan_solve"), ("react", "react"), ("multiturn", "multiturn"))
_TURNS = re.compile(r"(\d+)_turns")
_PER_TURN = ("observations", "thoughts", "steps")  # lists read beside `actions`, one entry per turn at most

# The harness's placeholder for a turn PaLM's API refused to answer; the episode ends on it.
_BLOCKED = "blocked"
# A result file whose harness ran the model's Markdown fences (```BASH) as commands.
_FENCE_RUN = "BASH: command not found"
_HUMAN_LAYOUT = "a human player's layout (trajectory, query_idx), not an agent's"

_GRADER_MESSAGES = re.compile(
    r"Test case did not pass\. Please try again\.?"
    r"|Failed \d+/\d+ Test Cases\. Please try again\.?"
    r"|Failed Test Case: .*?Please try again\.?"
    r"|Submitted flag is incorrect\. Keep trying!"
    r"|The submitted flag is correct\.",
    re.DOTALL,
)
# What the Python environment shows for a submission that passed its tests.
_PYTHON_PASS = re.compile(r"\{'(?:output|error)': .*\}", re.DOTALL)

# A sentence about the reward: the word itself, or the prompt's feedback line around it ("Try
# something different to generate SQL command to get a reward of 1.", "Do NOT generate any output
# or reward ..."), which models repeat, sometimes cut off before the word.
_REWARD = re.compile(r"reward|try something different to generate|do not generate any output", re.IGNORECASE)
_SENTENCE_BREAK = re.compile(r"(\n+|(?<=[.!?])[ \t]+|[ \t]{2,}|[ \t]+(?=reward\s*:))", re.IGNORECASE)


# --- reading files ---------------------------------------------------------------------------


def file_label(path: Path) -> str:
    """`sql__gpt-4__ic_sql_multiturn_gpt-4_10_turns.json.gz` -> `sql__gpt-4__ic_sql_multiturn_gpt-4_10_turns`."""
    name = path.name
    for suffix in (".json.gz", ".json", ".gz"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_result_file(path: str | Path) -> dict:
    """The JSON object of a result file, gzipped or not (told apart by content). Raises `DataError`
    naming the file when it cannot be read, decompressed or parsed, or is not an object."""
    file = str(path)
    text = read_text_maybe_gzipped(path, "; expected an InterCode result file, .json or .json.gz")
    try:
        data = parse_json(text)
    except json.JSONDecodeError as e:
        raise DataError([Problem(file, f"not valid JSON: {e.msg}", line=e.lineno)]) from None
    except JSONProblem as e:
        raise DataError([Problem(file, e.message, line=e.line_in(text), field=e.field)]) from None
    if not isinstance(data, dict):
        raise DataError([Problem(file, f"expected a JSON object of attempts keyed by index, got {_kind(data)}")])
    return data


def file_attempts(data: dict) -> tuple[str, dict]:
    """(path prefix, attempts by key): Plan & Solve files keep them under `logs`, others at the top."""
    if isinstance(data.get("logs"), dict):
        return "logs.", data["logs"]
    return "", {key: value for key, value in data.items() if key != "meta"}


# --- cleaning text ---------------------------------------------------------------------------


def remove_reward_sentences(text: str) -> tuple[str, int]:
    """The text without the sentences that mention a reward, and how many were removed. The kept
    sentences keep their own separators, so nothing shows where one was taken out."""
    parts = _SENTENCE_BREAK.split(text)
    kept: list[str] = []
    gap = ""  # the separator to put before the next kept sentence
    removed = 0
    for index in range(0, len(parts), 2):
        sentence = parts[index]
        after = parts[index + 1] if index + 1 < len(parts) else ""
        if _REWARD.search(sentence):
            removed += 1
            # Across a removed sentence, keep the stronger break: "SELECT 1 Reward: 0\nSELECT 2"
            # stays two lines.
            gap = after if after.count("\n") > gap.count("\n") else gap
            continue
        if kept:
            kept.append(gap)
        kept.append(sentence)
        gap = after
    return "".join(kept).strip(), removed


def remove_grader_messages(observation: str, environment: str) -> tuple[str, int]:
    """The observation without the grader's verdicts, and how many were cut out."""
    if environment == "ic_python" and _PYTHON_PASS.fullmatch(observation.strip()):
        return "", 1
    cleaned, count = _GRADER_MESSAGES.subn("", observation)
    return cleaned.strip(), count


# --- attempts to runs ------------------------------------------------------------------------


@dataclass
class FileCounts:
    label: str
    attempts: int = 0
    succeeded: int = 0
    failed: int = 0
    runs: int = 0
    rounds: int = 0
    skipped: str | None = None  # why the whole file was left out


@dataclass
class ImportSummary:
    files: list[FileCounts] = field(default_factory=list)
    skipped_attempts: Counter = field(default_factory=Counter)  # reason -> attempts left out
    # (what, "succeeded"|"failed") -> count, e.g. ("reward sentences in agent text", "failed")
    removed: Counter = field(default_factory=Counter)


def describe_file(label: str) -> tuple[str, str]:
    """(model, strategy) from a result file's name: `bash__gpt-4__ic_bash_multiturn_gpt-4_10_turns_fs_1`
    -> ("gpt-4", "multiturn 10 turns"). The model the experiment name gives wins over its folder
    (`python__gpt-3.5__ic_python_multiturn_gpt-4_7_turns` is gpt-4); files without a strategy in
    their name ran InterCode's default, multi-turn "try again"."""
    parts = label.split("__")
    experiment = parts[-1]
    model = next((name for name in _MODELS if name in experiment), None)
    if model is None:
        model = parts[1] if len(parts) == 3 else "unknown"
    strategy = next((name for key, name in _STRATEGIES if key in experiment), "multiturn")
    turns = _TURNS.search(experiment)
    if turns:
        strategy += f" {turns[1]} turns"
    if experiment.endswith("_handicap"):
        strategy += " handicap"
    return model, strategy


def _check_attempt(file: str, where: str, attempt: object) -> list[Problem]:
    """Problems with an attempt in the agents' layout, each naming its field."""
    if not isinstance(attempt, dict):
        return [Problem(file, f"expected an attempt object, got {_kind(attempt)}", field=where)]
    problems = []
    for name in ("environment", "dataset", "query"):
        if not isinstance(attempt.get(name), str) or not attempt[name].strip():
            problems.append(Problem(file, f"expected a non-empty string, got {_kind(attempt.get(name))}", field=f"{where}.{name}"))
    if not isinstance(attempt.get("task_id"), (int, str)) or isinstance(attempt.get("task_id"), bool):
        problems.append(Problem(file, f"expected a number or string, got {_kind(attempt.get('task_id'))}", field=f"{where}.task_id"))
    summary = attempt.get("summary")
    max_reward = summary.get("max_reward") if isinstance(summary, dict) else None
    if not isinstance(max_reward, (int, float)) or isinstance(max_reward, bool):
        problems.append(Problem(file, f"expected a number, got {_kind(max_reward)}", field=f"{where}.summary.max_reward"))
    history = attempt.get("turn_history")
    if not isinstance(history, dict):
        return problems + [Problem(file, f"expected an object with actions and observations, got {_kind(history)}", field=f"{where}.turn_history")]
    for name in ("actions", *_PER_TURN):
        value = history.get(name)
        if value is None and name != "actions":
            continue
        path = f"{where}.turn_history.{name}"
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            problems.append(Problem(file, f"expected a list of strings, got {_kind(value)}", field=path))
        elif name != "actions" and isinstance(history.get("actions"), list) and len(value) > len(history["actions"]):
            problems.append(Problem(file, f"{len(value)} entries for {len(history['actions'])} actions; expected one per turn at most", field=path))
    if "observations" not in history:
        problems.append(Problem(file, "missing (or null)", field=f"{where}.turn_history.observations"))
    return problems


def _attempt_rounds(attempt: dict, outcome: str, removed: Counter) -> list[dict[str, str]]:
    """The rounds of one attempt with the outcome's traces removed (counted into `removed`)."""
    history = attempt["turn_history"]
    environment = attempt["environment"]
    plans = history.get("thoughts") or history.get("steps") or []
    observations = history["observations"]
    rounds = []
    for turn, action in enumerate(history["actions"]):
        if action.strip() == _BLOCKED and turn >= len(observations):
            removed["blocked turns (harness placeholder)", outcome] += 1
            continue
        texts = {"plan": plans[turn] if turn < len(plans) else "", "action": action}
        for name, text in texts.items():
            texts[name], count = remove_reward_sentences(text)
            removed["reward sentences in agent text", outcome] += count
        observation = observations[turn] if turn < len(observations) else ""
        observation, count = remove_grader_messages(observation, environment)
        removed["grader messages in observations", outcome] += count
        texts["observation"], count = remove_reward_sentences(observation)
        removed["reward sentences in observations", outcome] += count
        round_ = {name: text for name, text in texts.items() if text}
        if round_:
            rounds.append(round_)
        else:
            removed["rounds left empty", outcome] += 1
    return rounds


def file_runs(path: Path, data: dict, summary: ImportSummary) -> list[dict]:
    """Run records of one parsed result file (its problems raised as `DataError`), counted into `summary`."""
    file, label = str(path), file_label(path)
    prefix, attempts = file_attempts(data)
    if not attempts:
        raise DataError([Problem(file, "no attempts found; expected an InterCode result file (attempts keyed by index, or under \"logs\")")])
    counts = FileCounts(label)
    summary.files.append(counts)
    agent_attempts = {}
    problems = []
    human = 0
    for key, attempt in attempts.items():
        counts.attempts += 1
        if isinstance(attempt, dict) and "turn_history" not in attempt and "trajectory" in attempt:
            human += 1
            continue
        problems += _check_attempt(file, f"{prefix}{key}", attempt)
        agent_attempts[key] = attempt
    if problems:
        raise DataError(problems)
    if not agent_attempts:
        counts.skipped = _HUMAN_LAYOUT
        return []
    if human:
        summary.skipped_attempts[_HUMAN_LAYOUT] += human

    fence_runs = sum(any(_FENCE_RUN in text for text in attempt["turn_history"]["observations"]) for attempt in agent_attempts.values())
    if fence_runs * 2 > len(agent_attempts):
        succeeded = sum(attempt["summary"]["max_reward"] == 1 for attempt in agent_attempts.values())
        counts.skipped = f"the harness ran Markdown fences as commands ({fence_runs} of {len(agent_attempts)} attempts get {_FENCE_RUN!r}; {succeeded} succeed)"
        return []

    model, strategy = describe_file(label)
    runs = []
    for key, attempt in agent_attempts.items():
        max_reward = attempt["summary"]["max_reward"]
        succeeded = max_reward == 1
        outcome = "succeeded" if succeeded else "failed"
        counts.succeeded += succeeded
        counts.failed += not succeeded
        if not attempt["turn_history"]["actions"]:
            summary.skipped_attempts["no turns"] += 1
            continue
        rounds = _attempt_rounds(attempt, outcome, summary.removed)
        if not rounds:
            summary.skipped_attempts["no text left: only the blocked placeholder, or only reward talk"] += 1
            continue
        environment = attempt["environment"]
        dataset = Path(attempt["dataset"]).stem
        runs.append(
            {
                "run_id": f"{label}:{key}",
                "task_id": f"{environment}/{dataset}/{attempt['task_id']}",
                "task": attempt["query"],
                "outcome": 1 if succeeded else 0,
                "source": f"{SOURCE} {environment.removeprefix('ic_')} {model} {strategy}",
                "metadata": {
                    "file": path.name,
                    "attempt": key,
                    "max_reward": max_reward,
                    "turns": len(attempt["turn_history"]["actions"]),
                    "model": model,
                    "strategy": strategy,
                },
                "rounds": rounds,
            }
        )
        counts.rounds += len(rounds)
    counts.runs = len(runs)
    return runs


def import_files(paths: list[str | Path]) -> tuple[list[dict], ImportSummary]:
    """Read every result file (all problems in all files are collected before raising `DataError`)
    and return their runs, in file order, with what was read, left out and removed."""
    problems: list[Problem] = []
    runs: list[dict] = []
    summary = ImportSummary()
    labels = Counter(file_label(Path(path)) for path in paths)
    for path in map(Path, paths):
        if labels[file_label(path)] > 1:
            problems.append(Problem(str(path), f"another file given has the same name {file_label(path)!r}; run ids would clash (rename one)"))
            continue
        try:
            runs += file_runs(path, read_result_file(path), summary)
        except DataError as e:
            problems += e.problems
    if problems:
        raise DataError(problems)
    return runs, summary


def format_import_summary(summary: ImportSummary, runs: list[dict]) -> str:
    """Per file: attempts, succeeded/failed, runs, rounds (or why it was left out); the totals; the
    attempts left out and why; what was removed, by outcome; the tasks and how many have both outcomes."""
    header = f"{'file':<64} {'attempts':>8} {'succeeded':>9} {'failed':>6} {'runs':>5} {'rounds':>6}"
    lines = [header]
    total = FileCounts("total")
    skipped_files = []
    for counts in summary.files:
        if counts.skipped:
            skipped_files.append(counts)
            lines.append(f"{counts.label[:64]:<64} {counts.attempts:>8}  left out: {counts.skipped}")
            continue
        lines.append(_summary_row(counts))
        for name in ("attempts", "succeeded", "failed", "runs", "rounds"):
            setattr(total, name, getattr(total, name) + getattr(counts, name))
    lines.append(_summary_row(total))
    if skipped_files:
        attempts = sum(counts.attempts for counts in skipped_files)
        lines.append(f"files: {len(summary.files)} read, {len(skipped_files)} left out ({attempts} attempts), each with its reason above")
    for reason, count in sorted(summary.skipped_attempts.items()):
        lines.append(f"attempts left out: {count} ({reason})")
    kinds = sorted({kind for kind, _ in summary.removed})
    if kinds:
        lines.append("removed (in succeeded / failed attempts):")
        for kind in kinds:
            lines.append(f"  {kind}: {summary.removed[kind, 'succeeded']} / {summary.removed[kind, 'failed']}")
    outcomes: dict[str, set[int]] = {}
    for run in runs:
        outcomes.setdefault(run["task_id"], set()).add(run["outcome"])
    both = sum(1 for values in outcomes.values() if len(values) == 2)
    lines.append(f"{len(outcomes)} tasks (environment/dataset/task_id); {both} have both a succeeded and a failed run")
    return "\n".join(lines)


def _summary_row(counts: FileCounts) -> str:
    return f"{counts.label[:64]:<64} {counts.attempts:>8} {counts.succeeded:>9} {counts.failed:>6} {counts.runs:>5} {counts.rounds:>6}"


def _kind(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)
