"""Runs from AutoGPT benchmark reports: `agbenchmark`'s `report.md`, parsed into the run format.

    pipeline import autogpt reports/*/report.md --out runs.jsonl
    pipeline pairs runs.jsonl --out pairs.json

    from data.autogpt import parse_report, report_runs
    report = parse_report("20240305T020814_full_run.report.md")   # raises data.DataError naming file and line
    runs = report_runs(report)                                     # run records, see data/runs.py

A report lists challenges (`### ReadFile ✅`, a description, a Task block quoting the task text and
the reference answer) and, under `#### Attempts`, each attempt (`1. **✅ Passed** in **33.7
seconds** and **4 steps**`, its cost, the failure reason) with its numbered steps. A step as the
agent wrote it:

    2. `read_file(filename='file_to_read.txt')` returned:      <- the previous command's output
       ```
       Hello World!
       ```
       Now writing the read content to 'output.txt'.              <- the agent's thought (one paragraph)
       Next Command: write_file(filename='output.txt', ...)      <- its command (may run over lines)

Each step becomes one round: the thought as `plan`, the command as `action`, and the output the
next step echoes for it as `observation`. Special steps, as they occur in AutoGPT's March 2024
reports:

- A step without `Next Command:` ends with the question the agent put to the user: its action is
  written `ask_user(question='...')`, and it gets no observation (the report shows no answer).
- The step after `finish(...)` only repeats the finish reason: it becomes the observation of the
  finish round, not a round of its own.
- "An error occurred while proposing the next action: ..." is kept as a round with only that
  observation; the output of the command before it, echoed by a later step, goes to that command.

The task key is the challenge: `task_id` is its name and `task` its task text, so attempts at the
same challenge in different reports pair with each other. `run_id` is `<report>:<challenge>:<attempt>`
where `<report>` is the file name without `.report.md`/`.md` (the folder name for a plain
`report.md`). Pass or fail, failure reason, time, cost, difficulty and the reference answer go to
`metadata` and never into rounds. Attempts with no steps (the server failed before the agent ran;
reported as "None steps") are left out and counted.
"""

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from data.load import DataError, Problem, read_utf8

SOURCE = "autogpt"

_CHALLENGE = re.compile(r"^### (?P<name>\S+)(?: (?P<badge>.*))?$")
_ATTEMPT = re.compile(r"^(?P<number>\d+)\. \*\*(?P<badge>\S+) (?P<verdict>Passed|Failed)\*\* in \*\*(?P<seconds>[\d.]+) seconds\*\* and \*\*(?P<steps>\d+|None) steps?\*\*\s*$")
_ATTEMPT_LIKE = re.compile(r"^\d+\. \*\*")
_STEP = re.compile(r"^   (?P<number>\d+)\. (?P<text>.*)$")
_STEP_INDENT = " " * 6
_FIELD = re.compile(r"^- \*\*(?P<name>[^*]+):\*\* (?P<value>.*)$")
_COST = re.compile(r"^   - \*\*Cost:\*\* `\$(?P<cost>[\d.]+)`")
_FAILURE_REASON = "   - **Failure reason:**"
_STEPS_SUMMARY = "<summary><strong>Steps</strong></summary>"
_TASK_SUMMARY = "<summary><strong>Task</strong>"
_NEXT_COMMAND = "Next Command: "
_PROPOSAL_ERROR = "An error occurred while proposing the next action"


@dataclass
class Step:
    number: int
    line: int
    lines: list[str] = field(default_factory=list)  # the step's text, indentation removed

    @property
    def text(self) -> str:
        return "\n".join(self.lines).strip()


@dataclass
class Attempt:
    number: int
    line: int
    passed: bool
    seconds: float
    steps_reported: int | None  # None: the report says "None steps"
    cost_usd: float | None = None
    failure_reason: str | None = None
    steps: list[Step] = field(default_factory=list)


@dataclass
class Challenge:
    name: str
    line: int
    task: str = ""
    reference_answer: str = ""
    details: dict[str, str] = field(default_factory=dict)  # Success rate, Difficulty, Categories, ...
    attempts: list[Attempt] = field(default_factory=list)


@dataclass
class Report:
    path: Path
    label: str  # names the report inside run ids
    challenges: list[Challenge]


# --- parsing the markdown --------------------------------------------------------------------


def report_label(path: Path) -> str:
    """`20240305T020814_full_run.report.md` -> `20240305T020814_full_run`; `<run>/report.md` -> `<run>`."""
    name = path.name
    for suffix in (".report.md", ".md"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return path.resolve().parent.name if name == "report" else name


def parse_report(path: str | Path) -> Report:
    """Parse one `report.md`. Raises `DataError` listing every problem with its file and line."""
    path = Path(path)
    file = str(path)
    text = read_utf8(path)

    problems: list[Problem] = []
    challenges: list[Challenge] = []
    challenge: Challenge | None = None
    attempt: Attempt | None = None
    step: Step | None = None
    block = None  # what the current lines belong to: task, reference, failure, steps, or None
    header_not_understood = False  # the last attempt header was reported: skip its steps quietly

    def problem(line: int, message: str) -> None:
        problems.append(Problem(file, message, line=line))

    for number, line in enumerate(text.splitlines(), start=1):
        if block == "unread steps":  # of an attempt whose header was already reported
            block = None if line.startswith("</details>") else block
            continue
        if block == "steps":
            if line.startswith("</details>"):
                block, step = None, None
                continue
            match = _STEP.match(line)
            if match:
                step = Step(int(match["number"]), number, [match["text"]])
                attempt.steps.append(step)
            elif not line.strip():
                if step is not None:
                    step.lines.append("")
            elif line.startswith(_STEP_INDENT) and step is not None:
                step.lines.append(line[len(_STEP_INDENT) :])
            else:
                problem(number, f"unexpected line inside the steps of attempt {attempt.number} (steps are `   N. ...` with their text indented 6 spaces): {line[:60]!r}")
            continue

        if line.startswith(("# ", "## ")):
            challenge, attempt, block = None, None, None
            continue
        match = _CHALLENGE.match(line)
        if match:
            challenge = Challenge(match["name"], number)
            challenges.append(challenge)
            attempt, block = None, None
            continue
        if challenge is None:
            continue

        if block in ("task", "reference"):
            if line.startswith(">"):
                quoted = line[1:].removeprefix(" ")
                if block == "task":
                    challenge.task += quoted + "\n"
                else:
                    challenge.reference_answer += quoted + "\n"
                continue
            if line.strip() == "Reference answer:":
                block = "reference"
                continue
            if line.strip() == "</details>":
                block = None
                continue
        if block == "failure":
            if line.strip().startswith(">"):
                attempt.failure_reason += line.strip()[1:].removeprefix(" ") + "\n"
                continue
            block = None

        if _TASK_SUMMARY in line:
            block = "task"
        elif line.strip() == "#### Attempts":
            attempt = None
        elif _ATTEMPT_LIKE.match(line):
            match = _ATTEMPT.match(line)
            header_not_understood = not match
            if not match:
                problem(number, f"attempt header not understood (expected `N. **✅ Passed** in **S seconds** and **K steps**`): {line[:80]!r}")
                attempt = None
                continue
            steps = None if match["steps"] == "None" else int(match["steps"])
            attempt = Attempt(int(match["number"]), number, match["verdict"] == "Passed", float(match["seconds"]), steps)
            challenge.attempts.append(attempt)
        elif attempt is not None and _COST.match(line):
            attempt.cost_usd = float(_COST.match(line)["cost"])
        elif attempt is not None and line.rstrip() == _FAILURE_REASON:
            attempt.failure_reason = ""
            block = "failure"
        elif _STEPS_SUMMARY in line:
            if attempt is None and not header_not_understood:
                problem(number, "steps outside of an attempt")
            block = "steps" if attempt is not None else "unread steps"
        elif attempt is None and _FIELD.match(line.strip()):
            field_match = _FIELD.match(line.strip())
            challenge.details[field_match["name"]] = field_match["value"]

    if block == "steps":
        problem(len(text.splitlines()), "the file ends inside a steps block (truncated?): `</details>` missing")
    if not challenges and not problems:
        problem(1, "no challenges found (`### Name` headings); is this an agbenchmark report.md?")
    for challenge in challenges:
        problems += _check_challenge(file, challenge)
    if problems:
        raise DataError(problems)
    for challenge in challenges:
        challenge.task = challenge.task.strip()
        challenge.reference_answer = challenge.reference_answer.strip()
        for attempt in challenge.attempts:
            attempt.failure_reason = attempt.failure_reason.strip() if attempt.failure_reason else None
    return Report(path, report_label(path), challenges)


def _check_challenge(file: str, challenge: Challenge) -> list[Problem]:
    problems = []
    if not challenge.task.strip():
        problems.append(Problem(file, f"challenge {challenge.name!r} has no task text (a `> ` quote in its Task block)", line=challenge.line))
    for attempt in challenge.attempts:
        numbers = [step.number for step in attempt.steps]
        if numbers != list(range(1, len(numbers) + 1)):
            problems.append(Problem(file, f"attempt {attempt.number} of {challenge.name!r}: steps numbered {numbers[:10]}, expected 1, 2, 3, ...", line=attempt.line))
        elif (attempt.steps_reported or 0) != len(numbers):
            problems.append(Problem(file, f"attempt {attempt.number} of {challenge.name!r} reports {attempt.steps_reported} steps but lists {len(numbers)}", line=attempt.line))
    return problems


# --- steps to rounds -------------------------------------------------------------------------


@dataclass
class StepCounts:
    """How the steps of the parsed attempts were read; printed by `pipeline import autogpt`."""

    steps: int = 0
    rounds: int = 0
    commands: int = 0  # `Next Command:` steps
    questions: int = 0  # ask_user steps
    finish_echoes: int = 0  # steps that only repeat the finish reason
    proposal_errors: int = 0
    unmatched_echoes: int = 0  # "`cmd` returned:" for a command no earlier step issued

    def add(self, other: "StepCounts") -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def attempt_rounds(steps: list[Step]) -> tuple[list[dict[str, str]], StepCounts]:
    """The rounds of one attempt (plan, action, observation), and how its steps were read."""
    rounds: list[dict[str, str]] = []
    counts = StepCounts(steps=len(steps))
    pending: dict[str, str] | None = None  # the round whose command's output has not been shown yet
    for step in steps:
        text = step.text
        if pending is not None and pending["action"].startswith("finish("):
            pending["observation"] = text
            pending = None
            counts.finish_echoes += 1
            continue
        output, text = _split_echo(text, pending["action"] if pending else None)
        if output is not None:
            if pending is not None:
                if output:
                    pending["observation"] = output
                pending = None
            else:
                counts.unmatched_echoes += 1
        if text.startswith(_PROPOSAL_ERROR):
            rounds.append({"observation": text})
            counts.proposal_errors += 1
            continue
        thought, action, is_question = _split_command(text, echoed=output is not None)
        round_ = {name: value for name, value in (("plan", thought), ("action", action)) if value}
        if not round_:
            continue
        rounds.append(round_)
        if is_question:
            counts.questions += 1
        elif action:
            counts.commands += 1
            pending = round_
    counts.rounds = len(rounds)
    return rounds, counts


def _split_echo(text: str, command: str | None) -> tuple[str | None, str]:
    """("output", rest) when the step opens with "`command` returned:", else (None, text)."""
    prefix = f"`{command}` returned:" if command else None
    if prefix and text.startswith(prefix):
        body = text[len(prefix) :]
    else:
        match = re.match(r"`[^\n]*` returned:", text)
        if not match:
            return None, text
        body = text[match.end() :]
    # The output starts on the echo's line (short ones) or below it (empty, fenced or multi-line
    # ones). After it comes the agent's thought, one paragraph, then its command or, with no
    # command, its question to the user (another paragraph). The output is everything before.
    head, tail = _split_tail(body.strip())
    paragraphs = head.split("\n\n") if head else []
    after = 1 if tail or (paragraphs and paragraphs[-1].startswith(_PROPOSAL_ERROR)) else 2
    has_output = (
        bool(body.split("\n", 1)[0].strip())
        or (bool(paragraphs) and paragraphs[0].startswith(("```", "Action failed")))
        or len(paragraphs) > after
    )
    if not has_output:
        return "", text[len(text) - len(body) :].strip()
    split = max(1, len(paragraphs) - after)
    rest = "\n\n".join(paragraphs[split:] + ([tail] if tail else []))
    return _unfence("\n\n".join(paragraphs[:split])), rest


def _split_tail(text: str) -> tuple[str, str]:
    """(before, "Next Command: ...") at the last line that starts the command; (text, "") if none."""
    lines = text.split("\n")
    starts = [i for i, line in enumerate(lines) if line.startswith(_NEXT_COMMAND)]
    if not starts:
        return text, ""
    return "\n".join(lines[: starts[-1]]).strip(), "\n".join(lines[starts[-1] :]).strip()


def _split_command(text: str, echoed: bool) -> tuple[str, str, bool]:
    """(thought, action, is_question) of a step's text after the echo."""
    before, tail = _split_tail(text)
    if tail:
        return before, tail[len(_NEXT_COMMAND) :].strip(), False
    paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
    if not paragraphs:
        return "", "", False
    # No command: the agent asked the user; the question is the last paragraph.
    question = paragraphs[-1]
    return "\n\n".join(paragraphs[:-1]), f"ask_user(question={question!r})", True


def _unfence(text: str) -> str:
    text = text.strip()
    if text.startswith("```") and text.endswith("```") and "\n" in text:
        text = text[3 : -3].strip()
    return text


# --- reports to runs -------------------------------------------------------------------------


@dataclass
class ImportSummary:
    reports: list[dict] = field(default_factory=list)  # per report: file, challenges, attempts, ...
    steps: StepCounts = field(default_factory=StepCounts)


def report_runs(report: Report) -> tuple[list[dict], Counter, StepCounts]:
    """Run records (data/runs.py format) for every attempt with steps; the report's counts
    (challenges, attempts, passed, failed, attempts without steps, runs); how its steps were read."""
    runs = []
    counts = Counter()
    steps = StepCounts()
    for challenge in report.challenges:
        counts["challenges"] += 1
        for attempt in challenge.attempts:
            counts["attempts"] += 1
            counts["passed" if attempt.passed else "failed"] += 1
            rounds, step_counts = attempt_rounds(attempt.steps)
            steps.add(step_counts)
            if not rounds:
                counts["attempts without steps"] += 1
                continue
            metadata = {
                "report": report.path.name,
                "challenge": challenge.name,
                "attempt": attempt.number,
                "passed": attempt.passed,
                "failure_reason": attempt.failure_reason,
                "seconds": attempt.seconds,
                "cost_usd": attempt.cost_usd,
                "steps": attempt.steps_reported,
                "difficulty": challenge.details.get("Difficulty", "").strip("`") or None,
                "categories": re.findall(r"`([^`]+)`", challenge.details.get("Categories", "")),
                "reference_answer": challenge.reference_answer or None,
            }
            runs.append(
                {
                    "run_id": f"{report.label}:{challenge.name}:{attempt.number}",
                    "task_id": challenge.name,
                    "task": challenge.task,
                    "outcome": 1 if attempt.passed else 0,
                    "source": f"{SOURCE}:{report.label}",
                    "metadata": metadata,
                    "rounds": rounds,
                }
            )
    counts["runs"] = len(runs)
    return runs, counts, steps


def import_reports(paths: list[str | Path]) -> tuple[list[dict], ImportSummary]:
    """Parse every report (all problems in all files are collected before raising `DataError`)
    and return their runs, in file order, with what was read."""
    problems: list[Problem] = []
    reports = []
    for path in paths:
        try:
            reports.append(parse_report(path))
        except DataError as e:
            problems += e.problems
    labels = Counter(report.label for report in reports)
    for report in reports:
        if labels[report.label] > 1:
            problems.append(Problem(str(report.path), f"another report given has the same name {report.label!r}; run ids would clash (rename one)"))
    if problems:
        raise DataError(problems)
    runs, summary = [], ImportSummary()
    for report in reports:
        records, counts, steps = report_runs(report)
        runs += records
        summary.steps.add(steps)
        summary.reports.append({"label": report.label, **counts, "steps": steps.steps, "rounds": steps.rounds})
    return runs, summary


def format_import_summary(summary: ImportSummary, runs: list[dict]) -> str:
    """Per report: challenges, attempts passed/failed, runs, steps, rounds; then the totals, and how
    many challenges have both a passed and a failed run across all reports."""
    header = f"{'report':<28} {'challenges':>10} {'attempts':>8} {'passed':>6} {'failed':>6} {'runs':>5} {'steps':>6} {'rounds':>6}"
    lines = [header]
    total = Counter()
    for counts in summary.reports:
        total.update({k: v for k, v in counts.items() if isinstance(v, int)})
        lines.append(_summary_row(counts["label"][:28], counts))
    lines.append(_summary_row("total", total))
    s = summary.steps
    lines.append(
        f"steps read as: {s.commands} commands, {s.questions} questions to the user (ask_user), "
        f"{s.finish_echoes} finish echoes (folded into the finish round), {s.proposal_errors} proposal errors, "
        f"{s.unmatched_echoes} outputs of a command not found earlier"
    )
    if total["attempts without steps"]:
        lines.append(f"left out: {total['attempts without steps']} attempts without steps")
    outcomes: dict[tuple[str, str], set[int]] = {}
    for run in runs:
        outcomes.setdefault((run["task_id"], run["task"]), set()).add(run["outcome"])
    both = sum(1 for values in outcomes.values() if len(values) == 2)
    lines.append(f"{len(outcomes)} distinct challenges (name + task text); {both} have both a passed and a failed run")
    return "\n".join(lines)


def _summary_row(label: str, counts: Counter | dict) -> str:
    return (
        f"{label:<28} {counts.get('challenges', 0):>10} {counts.get('attempts', 0):>8} {counts.get('passed', 0):>6} "
        f"{counts.get('failed', 0):>6} {counts.get('runs', 0):>5} {counts.get('steps', 0):>6} {counts.get('rounds', 0):>6}"
    )
