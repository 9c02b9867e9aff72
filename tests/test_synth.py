"""Synthetic pairs: deterministic, balanced, complete, and not separable by shallow cues."""

import re
from collections import Counter, defaultdict

import numpy as np
import pytest

from data.synth import (
    DEFAULT_MODULES,
    FAMILY_NAMES,
    FAULT_KINDS,
    apply_fault,
    generate_pairs,
    make_task,
)
from data.synth.rounds import CAUSES
from data.trajectory import (
    DEFAULT_MODULE_FIELDS,
    module_texts_from_trajectory,
    render_module,
)

SECTION_TAGS = ("reflection", "plan", "action", "tool results", "memory query", "memory result", "memory store")
MODULE_TAGS = {
    "reflection": ("reflection",),
    "planner": ("plan",),
    "executor": ("action", "tool results"),
    "memory": ("memory query", "memory result", "memory store"),
}
ROUND = re.compile(r"^\[Round (\d+)\]$", re.M)


def _module_text(pair, side):
    return pair[side]["module_k_all_rounds"]


def test_same_seed_same_pairs_and_different_seed_differs():
    a = generate_pairs(200, seed=0)
    b = generate_pairs(200, seed=0)
    c = generate_pairs(200, seed=1)
    assert a == b
    assert [p["task"] for p in a] != [p["task"] for p in c]
    assert sum(x["negative"] != y["negative"] for x, y in zip(a, c)) > 150
    assert {p["pair_id"] for p in a}.isdisjoint({p["pair_id"] for p in c})
    # Asking for more pairs keeps the ones a smaller request made, even mid-task.
    assert generate_pairs(42, seed=0) == a[:42]


def test_modules_balanced_and_fields_complete():
    n = 1001
    pairs = generate_pairs(n, seed=3)
    assert len(pairs) == n
    counts = Counter(p["target_module"] for p in pairs)
    assert set(counts) == set(DEFAULT_MODULES)
    assert max(counts.values()) - min(counts.values()) <= 1

    assert len({p["pair_id"] for p in pairs}) == n
    assert len(FAMILY_NAMES) >= 20
    assert len({p["task_family"] for p in pairs}) == len(FAMILY_NAMES)
    rounds_seen = Counter()
    for p in pairs:
        assert set(p) == {"pair_id", "target_module", "task", "task_family", "positive", "negative"}
        assert re.fullmatch(r"synth-s3-t\d{6}-" + p["target_module"], p["pair_id"])
        assert p["task_family"] in FAMILY_NAMES
        assert isinstance(p["task"], str) and p["task"].strip()
        for side, outcome in (("positive", 1), ("negative", 0)):
            s = p[side]
            assert set(s) == {"trajectory_full_context", "module_k_all_rounds", "outcome"}
            assert s["outcome"] == outcome and type(s["outcome"]) is int
            context, text = s["trajectory_full_context"], s["module_k_all_rounds"]
            assert isinstance(context, str) and isinstance(text, str) and context.strip() and text.strip()
            assert context.startswith(f"Task: {p['task']}\n")
            n_rounds = len(ROUND.findall(context))
            rounds_seen[n_rounds] += 1
            assert n_rounds >= 3
            for tag in SECTION_TAGS:  # every round has every section
                assert context.count(f"<{tag}>") == n_rounds and context.count(f"</{tag}>") == n_rounds
            # The module text is that module's sections, round by round, as they appear in the context.
            assert len(ROUND.findall(text)) == n_rounds
            for tag in SECTION_TAGS:
                assert (f"<{tag}>" in text) == (tag in MODULE_TAGS[p["target_module"]])
            assert module_texts_from_trajectory(context)[p["target_module"]] == text
            assert "\n\n" not in context  # the one layout: one newline between rounds
        assert _module_text(p, "positive") != _module_text(p, "negative")
    assert min(rounds_seen) >= 3 and max(rounds_seen) <= 10 and len(rounds_seen) >= 3

    only = generate_pairs(10, seed=0, modules=("planner", "memory"))
    assert [p["target_module"] for p in only] == ["planner", "memory"] * 5
    with pytest.raises(ValueError):
        generate_pairs(4, modules=("critic",))


def test_contexts_repeat_across_modules():
    pairs = generate_pairs(400, seed=5)
    by_task = defaultdict(list)
    for p in pairs:
        by_task[p["pair_id"].rsplit("-", 1)[0]].append(p)
    assert len(by_task) == 100
    for group in by_task.values():
        assert len(group) == 4
        assert len({p["positive"]["trajectory_full_context"] for p in group}) == 1
        assert len({p["task"] for p in group}) == 1
        # Each module's negative is its own faulty trajectory.
        assert all(p["negative"]["trajectory_full_context"] != p["positive"]["trajectory_full_context"] for p in group)
    distinct_positive = {p["positive"]["trajectory_full_context"] for p in pairs}
    assert len(distinct_positive) == 100 < len(pairs)
    assert len({p["task"] for p in pairs}) == 100  # tasks are distinct strings


def test_not_trivially_separable():
    pytest.importorskip("sklearn")
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupShuffleSplit

    pairs = generate_pairs(2000, seed=0)
    families = [p["task_family"] for p in pairs]
    train, test = next(GroupShuffleSplit(n_splits=1, test_size=0.25, random_state=0).split(pairs, groups=families))
    assert not {families[i] for i in train} & {families[i] for i in test}
    pos = [_module_text(p, "positive") for p in pairs]
    neg = [_module_text(p, "negative") for p in pairs]

    def per_module(correct):
        out = defaultdict(list)
        for i, ok in zip(test, correct):
            out[pairs[i]["target_module"]].append(ok)
        return {m: round(float(np.mean(v)), 3) for m, v in sorted(out.items())}

    # (a) Length: a tie is not a win, in either direction.
    longer = [len(pos[i]) > len(neg[i]) for i in test]
    shorter = [len(pos[i]) < len(neg[i]) for i in test]
    results = {"longer module text wins": longer, "shorter module text wins": shorter}

    # (b) Bag of words over module text, trained on single responses of the training families.
    on_training_pairs = {}
    for name, vectorizer in (("bag-of-words LR (counts)", CountVectorizer()), ("bag-of-words LR (tf-idf)", TfidfVectorizer())):
        x_train = vectorizer.fit_transform([pos[i] for i in train] + [neg[i] for i in train])
        y_train = [1] * len(train) + [0] * len(train)
        model = LogisticRegression(solver="liblinear", max_iter=1000).fit(x_train, y_train)

        def pairwise(indices):
            p_pos = model.predict_proba(vectorizer.transform([pos[i] for i in indices]))[:, 1]
            p_neg = model.predict_proba(vectorizer.transform([neg[i] for i in indices]))[:, 1]
            return list(p_pos > p_neg)  # ties count as wrong

        results[name] = pairwise(test)
        on_training_pairs[name] = float(np.mean(pairwise(train)))

    print(f"\nheld-out pairwise accuracy on {len(test)} pairs of {len(set(families[i] for i in test))} unseen families:")
    for name, correct in results.items():
        print(f"  {name:28s} {np.mean(correct):.3f}  by module {per_module(correct)}")

    # Measured on seed 0 (2000 pairs, 520 held out from 7 families), to the layout of data.trajectory;
    # seeds 1-3 land within 0.03 of these. Margin 0.05 either side: a change to the generator that
    # moves a shortcut further than that has changed how hard the data is, and the numbers in docs/results/demo-and-synthetic.md.
    measured = {
        "longer module text wins": 0.446,
        "shorter module text wins": 0.421,
        "bag-of-words LR (counts)": 0.488,
        "bag-of-words LR (tf-idf)": 0.512,
    }
    for name, correct in results.items():
        assert abs(np.mean(correct) - measured[name]) <= 0.05, (name, np.mean(correct))
    # The shortcut models do learn the training families' wording (they are not scoring noise),
    # they just do not transfer: the faults are only visible against the task. Measured on the
    # training pairs: 0.820 (counts) and 0.747 (tf-idf); margin 0.05.
    assert abs(on_training_pairs["bag-of-words LR (counts)"] - 0.820) <= 0.05, on_training_pairs
    assert abs(on_training_pairs["bag-of-words LR (tf-idf)"] - 0.747) <= 0.05, on_training_pairs


# --- one fault at a time ---------------------------------------------------------------------

ERROR = re.compile(r"^error \d{3}: ")
CALLED_TOOL = re.compile(r"^(?:refresh_token\(\); )?(\w+)\(")
SIDE_EFFECT_TOOLS = {"create_booking", "create_refund", "create_order", "send_email", "create_event", "create_ticket", "http_post"}


def faulty(module, kind, n_tasks=8):
    """(task, P's rounds, N's rounds) for the first `n_tasks` tasks of seed 0 where the fault applies."""
    found = []
    for index in range(400):
        task = make_task(seed=0, index=index)
        negative = apply_fault(task, module, kind)
        if negative is not None:
            found.append((task, task.positive_rounds, negative))
        if len(found) == n_tasks:
            return found
    raise AssertionError(f"only {len(found)} tasks of seed 0 take the fault {module}/{kind}")


def plan_positions(plan, items):
    return [plan.find(item) for item in items]


def in_order(plan, items):
    """Every item is in the plan, each after the one before."""
    start = 0
    for item in items:
        start = plan.find(item, start)
        if start < 0:
            return False
        start += len(item)
    return True


def tools(rounds, succeeded_only=False):
    return [CALLED_TOOL.match(r["action"]).group(1) for r in rounds if not (succeeded_only and ERROR.match(r["observation"]))]


def stores_after_an_error(task, rounds):
    fact_keys = [step["key"] for step in task.rsteps]
    return [r for r in rounds if ERROR.match(r["observation"]) and any(key in r["memory_store"] for key in fact_keys)]


def changed_lookups(positive, negative):
    assert len(positive) == len(negative)  # a memory fault keeps the calls
    assert [r["memory_store"] for r in positive] == [r["memory_store"] for r in negative]
    return [(p, n) for p, n in zip(positive, negative) if p["memory_result"] != n["memory_result"]]


def check_planner_missing(task, positive, negative):
    assert [pos >= 0 for pos in plan_positions(negative[0]["plan"], task.items)].count(False) == 1
    assert len(negative) < len(positive)  # the step's rounds are gone too


def check_planner_swap(task, positive, negative):
    assert min(plan_positions(negative[0]["plan"], task.items)) >= 0  # the same steps ...
    assert not in_order(negative[0]["plan"], task.items) and in_order(positive[0]["plan"], task.items)  # ... in another order


def check_planner_sibling(task, positive, negative):
    assert -1 in plan_positions(negative[0]["plan"], task.items)  # steps about other entities ...
    assert len(negative) == len(positive)  # ... carried out with the same errors and retries


def check_planner_extra(task, positive, negative):
    assert in_order(negative[0]["plan"], task.items)  # every step, in order ...
    assert len(negative) == len(positive) + 1  # ... plus one more, with its own round


def check_executor_wrong_tool(task, positive, negative):
    assert len(negative) == len(positive)
    assert sum(p != n for p, n in zip(tools(positive), tools(negative))) == 1


def check_executor_wrong_args(task, positive, negative):
    calls = {r["action"] for r in positive}
    changed = [r["action"] for r in negative if r["action"] not in calls]
    assert changed and all(CALLED_TOOL.match(action).group(1) in tools(positive) for action in changed)


def check_executor_ignored_error(task, positive, negative):
    # The agent stores the step's fact after an error, as if the call had worked; P never does.
    assert stores_after_an_error(task, negative) and not stores_after_an_error(task, positive)


def check_executor_duplicate_call(task, positive, negative):
    more = Counter(tools(negative, succeeded_only=True)) - Counter(tools(positive, succeeded_only=True))
    assert len(more) == 1 and set(more) <= SIDE_EFFECT_TOOLS and sum(more.values()) == 1


def check_memory_stale(task, positive, negative):
    (p, n), = changed_lookups(positive, negative)
    assert re.sub(r"\d+", "#", p["memory_result"]) == re.sub(r"\d+", "#", n["memory_result"])  # only a number differs


def check_memory_other_entity(task, positive, negative):
    (p, n), = changed_lookups(positive, negative)
    assert p["memory_query"] == n["memory_query"]  # the right question, another entity's record


def check_memory_irrelevant(task, positive, negative):
    (p, n), = changed_lookups(positive, negative)
    looked_up = task.attempts[positive.index(p)]["dep"]
    assert looked_up in n["memory_query"] and looked_up not in n["memory_result"]  # a record about something else


def check_memory_never_stored(task, positive, negative):
    keys = [step["key"] for step in task.rsteps]

    def stored(rounds):
        return {key for key in keys for r in rounds if key in r["memory_store"]}

    assert len(stored(positive) - stored(negative)) == 1 and stored(negative) <= stored(positive)


def check_reflection_wrong_cause(task, positive, negative):
    (r,) = [i for i, (p, n) in enumerate(zip(positive, negative)) if p["reflection"] != n["reflection"]]
    true_cause, _, arg = task.attempts[r]["diag"]
    failed_tool = task.attempts[r - 1]["tool"]
    named = {kind for kind, phrases in CAUSES.items() for phrase in phrases if phrase.format(arg=arg, tool=failed_tool) in negative[r]["reflection"]}
    assert len(named) == 1 and true_cause not in named
    assert ERROR.match(negative[r]["observation"])  # so the retry fails the same way


def check_reflection_repeat(task, positive, negative):
    (r,) = [i for i, (p, n) in enumerate(zip(positive, negative)) if p["reflection"] != n["reflection"]]
    assert negative[r]["action"] == negative[r - 1]["action"] != positive[r]["action"]  # the fix that did not help, again
    assert negative[r]["observation"] == negative[r - 1]["observation"]


@pytest.mark.parametrize("module, kind", [(module, kind) for module, kinds in FAULT_KINDS.items() for kind in kinds])
def test_each_fault_kind_changes_its_module_where_expected(module, kind):
    fields = DEFAULT_MODULE_FIELDS[module]
    for task, positive, negative in faulty(module, kind):
        assert render_module(negative, fields) != render_module(positive, fields)
        globals()[f"check_{module}_{kind}"](task, positive, negative)


def test_fault_kinds_cover_every_module_and_unknown_kinds_are_refused():
    assert set(FAULT_KINDS) == set(DEFAULT_MODULES)
    with pytest.raises(ValueError, match="no fault 'swap' for module 'memory'"):
        apply_fault(make_task(seed=0, index=0), "memory", "swap")
