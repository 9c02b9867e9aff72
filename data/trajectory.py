"""The tagged trajectory format: one writer and one parser, shared by real runs, synthetic pairs and scoring.

A trajectory is a task and a list of rounds; a round is a dict of round fields (`ROUND_FIELDS`), each
a text. Written out (`render_context`), it is the task line, then each round under a `[Round N]`
header with its fields as tags in `ROUND_FIELDS` order, one newline between everything:

    Task: Find the cheapest direct flight from Oslo to Rome on 12 May and book it.
    [Round 1]
    <reflection>No attempts yet; start by listing direct flights.</reflection>
    <plan>1. search flights 2. compare prices 3. book the cheapest</plan>
    <action>search_flights(origin='OSL', dest='FCO', date='2025-05-12', direct=True)</action>
    <tool results>3 flights: SK4711 EUR 189, DY1870 EUR 142, AZ609 EUR 231</tool results>
    <memory store>cheapest direct OSL-FCO 12 May: DY1870 EUR 142</memory store>
    [Round 2]
    <memory query>cheapest direct flight found</memory query>
    <memory result>DY1870 EUR 142</memory result>
    <action>book_flight(flight='DY1870')</action>
    <tool results>booked DY1870, ref QX7P2</tool results>

A module's text (`render_module`, the pairs' `module_k_all_rounds`) is the same without the task
line, keeping only the module's fields (`DEFAULT_MODULE_FIELDS`) and only the rounds where the module
wrote something, under their own round numbers. Blank fields and rounds with no text are not written.

Parsing is the inverse: `parse_trajectory(render_context(task, rounds)) == (task, rounds)` and
`module_texts_from_trajectory(render_context(task, rounds))[m] == render_module(rounds, fields of m)`
for rounds without blank fields or trailing empty rounds. Nothing is escaped, so a text must not
hold its own closing tag or a line that is a round header.

    from data.trajectory import render_context, parse_trajectory, module_texts_from_trajectory
    text = render_context("Book a flight", [{"plan": "search, then book"}, {"action": "book('DY1870')"}])
    task, rounds = parse_trajectory(text)            # "Book a flight", [{"plan": ...}, {"action": ...}]
    module_texts_from_trajectory(text)               # {"planner": "[Round 1]\\n<plan>search, then book</plan>", ...}
"""

import re
from collections.abc import Iterable, Mapping, Sequence

# Round fields in the order they are rendered within a round, and the tag each is rendered with.
ROUND_TAGS = {
    "reflection": "reflection",
    "plan": "plan",
    "memory_query": "memory query",
    "memory_result": "memory result",
    "action": "action",
    "observation": "tool results",
    "memory_store": "memory store",
}
ROUND_FIELDS = tuple(ROUND_TAGS)

# Which round fields make up each module's text (config key `data.module_fields`).
DEFAULT_MODULE_FIELDS = {
    "reflection": ["reflection"],
    "planner": ["plan"],
    "executor": ["action", "observation"],
    "memory": ["memory_query", "memory_result", "memory_store"],
}

_TASK_PREFIX = "Task: "
ROUND_HEADER = re.compile(r"^\[Round ([1-9]\d*)\][ \t]*$", re.MULTILINE)
_FIELD_OF_TAG = {tag: name for name, tag in ROUND_TAGS.items()}
_SECTION = re.compile("<({})>(.*?)</\\1>".format("|".join(re.escape(tag) for tag in ROUND_TAGS.values())), re.DOTALL)


# --- writing ---------------------------------------------------------------------------------


def render_round(round_: Mapping[str, str], fields: Sequence[str] = ROUND_FIELDS) -> str:
    """The tagged sections of one round, for the given fields, in `ROUND_FIELDS` order ('' if none)."""
    wanted = set(fields)
    return "\n".join(f"<{tag}>{round_[name]}</{tag}>" for name, tag in ROUND_TAGS.items() if name in wanted and _has_text(round_.get(name)))


def render_context(task: str, rounds: Sequence[Mapping[str, str]]) -> str:
    """`trajectory_full_context`: the task line, then every round with all its sections."""
    return "\n".join([f"{_TASK_PREFIX}{task}", *_render_numbered(enumerate(rounds, start=1), ROUND_FIELDS)])


def render_module(rounds: Sequence[Mapping[str, str]], fields: Sequence[str]) -> str:
    """`module_k_all_rounds`: the module's sections of each round it wrote in ('' if none)."""
    return "\n".join(_render_numbered(enumerate(rounds, start=1), fields))


def _render_numbered(numbered_rounds: Iterable[tuple[int, Mapping[str, str]]], fields: Sequence[str]) -> list[str]:
    """Each round with text in `fields`, under its `[Round N]` header."""
    parts = []
    for number, round_ in numbered_rounds:
        sections = render_round(round_, fields)
        if sections:
            parts.append(f"[Round {number}]\n{sections}")
    return parts


def _has_text(value: str | None) -> bool:
    return bool(value and value.strip())


# --- parsing ---------------------------------------------------------------------------------


def parse_trajectory(text: str) -> tuple[str | None, list[dict[str, str]]]:
    """The task and the rounds of a tagged trajectory, as `render_context` writes it.

    The task is the text before the first round after `Task: ` (None without a task line). Each
    round is placed by its header number, so a gap in the numbering reads as empty rounds. Blank
    sections are skipped; a field written twice in one round keeps both texts, joined by a newline.
    A trajectory without headers is read as round 1 (from its first section on)."""
    task, numbered = _numbered_rounds(text)
    rounds: list[dict[str, str]] = []
    for number, round_ in numbered:
        rounds += [{} for _ in range(number - len(rounds))]
        for name, value in round_.items():
            previous = rounds[number - 1].get(name)
            rounds[number - 1][name] = value if previous is None else f"{previous}\n{value}"
    return task, [{name: round_[name] for name in ROUND_FIELDS if name in round_} for round_ in rounds]


def module_texts_from_trajectory(trajectory: str, module_fields: Mapping[str, Sequence[str]] | None = None) -> dict[str, str]:
    """Each module's text (`module_k_all_rounds`) in a trajectory written in the tagged style of the
    pair format: `[Round N]` headers, then sections such as `<plan>...</plan>` or `<tool results>...</tool results>`.
    A module's text is its own sections (`module_fields`, default `DEFAULT_MODULE_FIELDS`), under the
    header of each round it wrote in, exactly as `render_module` (and so `pipeline pairs` and the
    synthetic data) writes it. Modules with no section are left out; text before the first header
    (the task line) is not part of any module; a trajectory without headers is read as round 1."""
    module_fields = DEFAULT_MODULE_FIELDS if module_fields is None else module_fields
    _, numbered = _numbered_rounds(trajectory)
    # Rounds keep the numbers their headers give them (not their positions), so a trajectory that
    # starts at round 3 is cut as written, and a huge round number costs nothing.
    texts = {module: "\n".join(_render_numbered(numbered, fields)) for module, fields in module_fields.items()}
    return {module: text for module, text in texts.items() if text}


def _numbered_rounds(text: str) -> tuple[str | None, list[tuple[int, dict[str, str]]]]:
    """The task line and (header number, round) for each round, in the order they are written."""
    headers = [(int(match.group(1)), match.start(), match.end()) for match in ROUND_HEADER.finditer(text)]
    if not headers:
        first_section = _SECTION.search(text)
        headers = [(1, first_section.start(), first_section.start())] if first_section else []
    preamble = text[: headers[0][1]] if headers else text
    task = None
    if preamble.startswith(_TASK_PREFIX):
        task = preamble[len(_TASK_PREFIX) :].removesuffix("\n") if headers else preamble[len(_TASK_PREFIX) :]
    numbered = []
    for (number, _, body_start), next_header in zip(headers, headers[1:] + [None]):
        body = text[body_start : next_header[1] if next_header else len(text)]
        round_: dict[str, str] = {}
        for section in _SECTION.finditer(body):
            name, value = _FIELD_OF_TAG[section.group(1)], section.group(2)
            if _has_text(value):
                round_[name] = value if name not in round_ else f"{round_[name]}\n{value}"
        numbered.append((number, round_))
    return task, numbered
