"""The tagged trajectory format: what the writer writes, the parser gives back."""

import pytest

from data.trajectory import (
    DEFAULT_MODULE_FIELDS,
    ROUND_FIELDS,
    module_texts_from_trajectory,
    parse_trajectory,
    render_context,
    render_module,
)

FLIGHT = [
    {
        "reflection": "No attempts yet; start by listing direct flights.",
        "plan": "1. search flights 2. compare prices 3. book the cheapest",
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
EVERY_FIELD = [{name: f"{name} of round {i}" for name in ROUND_FIELDS} for i in range(1, 4)]
ONLY_ONE_MODULE = [{"plan": "search, then book"}, {"reflection": "the search worked"}, {"plan": "book it"}]
MULTILINE = [
    {"plan": "1. search flights\n2. compare prices\n\n3. book", "action": "run_python(code='''\nx = 1\n''')", "observation": "ok\n"},
    {"reflection": "  leading and trailing spaces are text too  ", "memory_store": "fare = 142\nref = QX7P2"},
]

RUNS = {"flight": FLIGHT, "every field": EVERY_FIELD, "only one module": ONLY_ONE_MODULE, "multiline": MULTILINE}


@pytest.mark.parametrize("rounds", RUNS.values(), ids=RUNS.keys())
def test_context_parses_back_to_its_task_and_rounds(rounds):
    for task in ("Book the cheapest flight.", "Two lines:\nbook it, then email it"):
        assert parse_trajectory(render_context(task, rounds)) == (task, rounds)


@pytest.mark.parametrize("rounds", RUNS.values(), ids=RUNS.keys())
def test_module_texts_cut_from_a_context_are_what_render_module_writes(rounds):
    texts = module_texts_from_trajectory(render_context("Book a flight", rounds))
    written = {module: render_module(rounds, fields) for module, fields in DEFAULT_MODULE_FIELDS.items()}
    assert texts == {module: text for module, text in written.items() if text}


def test_blank_fields_and_empty_rounds_are_not_written_and_read_back_as_absent():
    rounds = [{"plan": "search", "action": "", "observation": "   "}, {}, {"reflection": "", "action": "book()"}]
    context = render_context("Book", rounds)
    assert context == "Task: Book\n[Round 1]\n<plan>search</plan>\n[Round 3]\n<action>book()</action>"
    assert parse_trajectory(context) == ("Book", [{"plan": "search"}, {}, {"action": "book()"}])
    assert module_texts_from_trajectory(context) == {"planner": "[Round 1]\n<plan>search</plan>", "executor": "[Round 3]\n<action>book()</action>"}
    assert render_module(rounds, DEFAULT_MODULE_FIELDS["memory"]) == ""


def test_one_newline_between_rounds_and_sections_in_round_field_order():
    written_backwards = {"memory_store": "s", "observation": "o", "action": "a", "memory_result": "mr", "memory_query": "mq", "plan": "p", "reflection": "r"}
    rounds = [written_backwards, {"plan": "p2"}]
    assert render_context("T", rounds) == (
        "Task: T\n[Round 1]\n<reflection>r</reflection>\n<plan>p</plan>\n<memory query>mq</memory query>\n<memory result>mr</memory result>\n"
        "<action>a</action>\n<tool results>o</tool results>\n<memory store>s</memory store>\n[Round 2]\n<plan>p2</plan>"
    )


def test_partial_and_untitled_trajectories():
    # Round numbers are kept as written, as a policy's partial trajectory has them.
    assert module_texts_from_trajectory("[Round 3]\n<plan>book</plan>") == {"planner": "[Round 3]\n<plan>book</plan>"}
    assert parse_trajectory("[Round 2]\n<plan>book</plan>") == (None, [{}, {"plan": "book"}])
    # Without headers the text is round 1; without sections it is only a task.
    assert parse_trajectory("<plan>search first</plan>") == (None, [{"plan": "search first"}])
    assert parse_trajectory("Task: Book it\n<plan>search first</plan>") == ("Book it", [{"plan": "search first"}])
    assert parse_trajectory(render_context("Book it", [])) == ("Book it", [])
    assert parse_trajectory("no tags at all") == (None, [])
    assert module_texts_from_trajectory("no tags at all") == {}
    # A field written twice in a round keeps both texts.
    assert parse_trajectory("[Round 1]\n<plan>a</plan>\n<plan>b</plan>") == (None, [{"plan": "a\nb"}])


def test_module_fields_choose_the_sections_of_a_module():
    context = render_context("Book", FLIGHT)
    texts = module_texts_from_trajectory(context, {"acting": ["action"], "nothing": ["unknown_field"]})
    assert texts == {"acting": "[Round 1]\n<action>" + FLIGHT[0]["action"] + "</action>\n[Round 2]\n<action>" + FLIGHT[1]["action"] + "</action>"}
