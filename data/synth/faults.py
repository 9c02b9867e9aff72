"""The faults of each module: how a negative trajectory N_k differs from the task's P.

Each module's fault function takes a task and a fault kind and returns N_k's (plan items,
attempts, memory overrides), or None where that kind cannot happen in this task (e.g. reflection
"repeat" needs a first fix that did not help). A fault carries its plausible consequences later on:
a failing observation, a memory miss, the agent carrying on regardless. `apply_fault` renders
one named fault as rounds; `FAULT_KINDS` lists the kinds of each module:

    task = make_task(seed=0, index=7)
    negative = apply_fault(task, "planner", "swap")     # rounds, or None where "swap" cannot apply
"""

import random
import re

from data.synth.families import ALL_TOOLS, FAMILIES, STEPS_BY_TOOL, render_step
from data.synth.rounds import (
    ERROR_KINDS,
    ERROR_MESSAGES,
    apply_fix,
    error_text,
    make_attempts,
    render_rounds,
)
from data.synth.tasks import Task
from data.trajectory import DEFAULT_MODULE_FIELDS, render_module

_NUMBER_IN_TEXT = re.compile(r"\d+(?:\.\d+)?")
# A negative with fewer rounds is too short to be a trajectory worth judging.
_MIN_ROUNDS = 3


# --- planner ---------------------------------------------------------------------------------


def _first_attempt(attempts: list[dict], item: int) -> int:
    return next(i for i, a in enumerate(attempts) if a["item"] == item)


def _consequence_error(a: dict) -> None:
    """The call fails because an input it needs is missing; the agent carries on regardless.
    (A call that already fails and is retried keeps its own error.)"""
    if not a["ok"]:
        return
    a["result"] = ERROR_MESSAGES["bad_format"].format(arg=a["args"][0][0], tool=a["tool"])
    a["ok"] = False
    a["believed"] = True


def _planner_fault(t: Task, kind: str) -> tuple[list[str], list[dict], dict[int, tuple]] | None:
    """A step missing, two adjacent steps swapped, the plans of a sibling task, or a step of another family added."""
    n = len(t.items)
    atts = [dict(a) for a in t.attempts]
    items = list(t.items)
    rng = t.rng
    if kind == "missing":
        if n < 3:
            return None
        j = rng.randrange(1, n)
        atts = [a for a in atts if a["item"] != j]
        for a in atts:
            if a["item"] > j:
                a["item"] -= 1
        del items[j]
        if j < n - 1:
            _consequence_error(atts[_first_attempt(atts, j)])
        return items, atts, {}
    if kind == "swap":
        j = rng.randrange(0, n - 1)
        first = [a for a in atts if a["item"] == j]
        second = [a for a in atts if a["item"] == j + 1]
        before = [a for a in atts if a["item"] < j]
        after = [a for a in atts if a["item"] > j + 1]
        for a in second:
            a["item"] = j
        for a in first:
            a["item"] = j + 1
        _consequence_error(second[0])
        items[j], items[j + 1] = items[j + 1], items[j]
        return items, before + second + first + after, {}
    if kind == "sibling":
        for _ in range(4):
            sp = t.sibling_params()
            rsteps = [render_step(s, sp) for s in t.steps]
            sib_items = [rs["plan"] for rs in rsteps]
            if sib_items != items:
                break
        else:
            return None
        atts = make_attempts(rsteps, t.family.prior[0].format_map(sp), t.errors)
        return sib_items, atts, {}
    if kind == "extra":
        other = rng.choice([f for f in FAMILIES if f is not t.family])
        rs = render_step(rng.choice(other.steps), other.sample(rng))
        j = rng.randrange(1, n + 1)
        pos = len(atts) if j == n else _first_attempt(atts, j)
        for a in atts[pos:]:
            a["item"] += 1
        dep = atts[pos - 1]["fact"][0] if atts[pos - 1]["fact"] else atts[pos - 1]["dep"]
        extra = {
            "item": j, "dep": dep, "tool": rs["tool"], "args": rs["args"], "wrapped": None, "extras": (), "prefix": "",
            "result": rs["result"], "ok": True, "believed": True, "fact": (rs["key"], rs["value"]), "diag": None,
        }
        items.insert(j, rs["plan"])
        atts.insert(pos, extra)
        return items, atts, {}
    raise ValueError(kind)


# --- executor --------------------------------------------------------------------------------


_SIDE_EFFECT_TOOLS = frozenset(
    ("create_booking", "create_refund", "create_order", "send_email", "create_event", "create_ticket", "http_post")
)


def _ok_attempts(atts: list[dict]) -> list[int]:
    return [i for i, a in enumerate(atts) if a["ok"] and a["diag"] is None]


def _executor_fault(t: Task, kind: str) -> tuple[list[str], list[dict], dict[int, tuple]] | None:
    """A wrong tool, a wrong argument, an error ignored, or a side-effecting call sent twice."""
    atts = [dict(a) for a in t.attempts]
    rng = t.rng
    if kind == "wrong_tool":
        i = rng.choice(_ok_attempts(atts))
        a = atts[i]
        # A tool that is the right one for a step of another task.
        family, step = rng.choice(STEPS_BY_TOOL[rng.choice([x for x in ALL_TOOLS if x != a["tool"]])])
        a["tool"] = step.tool
        if rng.random() < 0.5:
            # It rejects the arguments or the caller; the agent carries on regardless.
            a["ok"] = False
            a["result"] = error_text(rng.choice(("bad_format", "permission")), a)
        else:
            # It does its own job and returns something that does not answer the step.
            a["result"] = step.result.format_map(family.sample(rng))
        return t.items, atts, {}
    if kind == "duplicate_call":
        # A side-effecting call that had succeeded is sent again (as if it had failed): a second
        # booking, refund, order or email.
        cands = [i for i in _ok_attempts(atts) if atts[i]["tool"] in _SIDE_EFFECT_TOOLS]
        if not cands:
            return None
        i = rng.choice(cands)
        step = t.steps[atts[i]["item"]]
        fresh = t.sibling_params()
        p2 = dict(fresh, **{k: t.params[k] for k in step.arg_slots})
        dup = dict(atts[i], result=step.result.format_map(p2), fact=(step.key.format_map(p2), step.value.format_map(p2)))
        dup["dep"] = atts[i]["fact"][0]
        fix = rng.choice(ERROR_KINDS)
        if fix != "bad_format":
            dup = apply_fix(dup, fix)
        atts.insert(i + 1, dup)
        return t.items, atts, {}
    if kind == "wrong_args":
        # Either a call that went through first time, or a step that P only got through after a
        # transient error: there the faulty run has no error, just one call with a wrong argument.
        retries = [i for i, a in enumerate(atts) if a["diag"] is not None and a["ok"]]
        cands = retries if rng.random() < 0.5 else _ok_attempts(atts)
        rng.shuffle(cands)
        for i in cands:
            step = t.steps[atts[i]["item"]]
            slots = sorted(step.arg_slots)
            rng.shuffle(slots)
            for slot in slots:
                fresh = t.sibling_params()
                if fresh[slot] != t.params[slot]:
                    rs = render_step(step, dict(t.params, **{slot: fresh[slot]}))
                    if rs["args"] == t.rsteps[atts[i]["item"]]["args"]:
                        continue
                    atts[i] = dict(atts[i], args=rs["args"], result=rs["result"], fact=(rs["key"], rs["value"]),
                                   diag=None, wrapped=None, extras=(), prefix="")
                    if i in retries:
                        atts = [a for j, a in enumerate(atts) if j == i or a["item"] != atts[i]["item"]]
                    return t.items, atts, {}
        return None
    if kind == "ignored_error":
        if rng.random() < 0.5:
            # Drop the retry: the agent moves on after the error as if the call had worked.
            failed = [i for i, a in enumerate(atts) if not a["ok"] and a["diag"] is None]
            f = rng.choice(failed)
            item = atts[f]["item"]
            fact = t.attempts[max(i for i, a in enumerate(t.attempts) if a["item"] == item)]["fact"]
            atts[f] = dict(atts[f], believed=True, fact=fact)
            atts = [a for j, a in enumerate(atts) if j == f or a["item"] != item]
        else:
            i = rng.choice(_ok_attempts(atts))
            a = atts[i]
            a["ok"] = False
            a["result"] = error_text(rng.choice(ERROR_KINDS), a)
        return t.items, atts, {}
    raise ValueError(kind)


# --- memory ----------------------------------------------------------------------------------


def _perturb_number(s: str, rng: random.Random) -> str:
    dec = len(s.split(".")[1]) if "." in s else 0
    x = float(s)
    for _ in range(10):
        f = rng.uniform(0.04, 0.3) * rng.choice((-1, 1))
        if dec:
            y = f"{max(x * (1 + f), 0.01):.{dec}f}"
        else:
            d = max(1, round(abs(x * f)))
            y = str(max(0, int(x) + (d if f > 0 or x - d < 0 else -d)))
        if y != s:
            return y
    return s + "1"


def _memory_lookups(t: Task) -> list[tuple[str, str | None]]:
    """(key, value found) for every round of P."""
    memory = {t.prior[0]: t.prior[1]} if t.prior_present else {}
    out = []
    for a in t.attempts:
        out.append((a["dep"], memory.get(a["dep"])))
        if a["believed"] and a["fact"]:
            memory[a["fact"][0]] = a["fact"][1]
    return out


def _memory_fault(t: Task, kind: str) -> tuple[list[str], list[dict], dict[int, tuple]] | None:
    """A stale value, another entity's record, an irrelevant record, or a key fact never stored."""
    rng = t.rng
    atts = [dict(a) for a in t.attempts]
    looks = _memory_lookups(t)
    found = [i for i, (_, v) in enumerate(looks) if v is not None]
    if kind == "stale":
        cands = [i for i in found if _NUMBER_IN_TEXT.search(looks[i][1])]
        if not cands:
            return None
        i = rng.choice(cands)
        key, val = looks[i]
        nums = list(_NUMBER_IN_TEXT.finditer(val))
        m = rng.choice(nums)
        new = _perturb_number(m.group(), rng)
        stale = val[: m.start()] + new + val[m.end():]
        # The agent acts on the stale number where its call uses it.
        a = atts[i]
        a["args"] = [(k, v.replace(m.group(), new) if v == m.group() else v) for k, v in a["args"]]
        return t.items, atts, {i: ("mr", key, stale)}
    if kind == "other_entity":
        # Another entity's record of the same kind: for the looked-up fact, or where P's memory had
        # no note before the task started.
        cands = found + ([0] * len(found) if not t.prior_present else [])
        if not cands:
            return None
        i = rng.choice(cands)
        key = looks[i][0]
        sp = t.sibling_params()
        if key == t.prior[0]:
            k2, v2 = t.family.prior[0].format_map(sp), t.family.prior[1].format_map(sp)
        else:
            src = next(s for s, rs in zip(t.steps, t.rsteps) if rs["key"] == key)
            k2, v2 = src.key.format_map(sp), src.value.format_map(sp)
        if (k2, v2) == (key, looks[i][1]):
            return None
        return t.items, atts, {i: ("mr", k2, v2)}
    if kind == "irrelevant":
        # A record that does not answer the lookup: another fact of this task, or (often where P's
        # memory had nothing) a note left by an unrelated task.
        i = 0 if (not t.prior_present and rng.random() < 0.6) else rng.randrange(len(atts))
        key = looks[i][0]
        if i == 0 and not t.prior_present:
            other = rng.choice([f for f in FAMILIES if f is not t.family])
            op = other.sample(rng)
            k2, v2 = other.prior[0].format_map(op), other.prior[1].format_map(op)
        else:
            # Only facts the agent could have stored by then.
            earlier = {a["fact"] for a in atts[:i] if a["believed"] and a["fact"]}
            if t.prior_present:
                earlier.add(t.prior)
            others = sorted(kv for kv in earlier if kv[0] != key)
            if not others:
                return None
            k2, v2 = rng.choice(others)
        return t.items, atts, {i: ("mr", k2, v2)}
    if kind == "never_stored":
        needed = {a["dep"] for a in atts}
        cands = [i for i, a in enumerate(atts) if a["believed"] and a["fact"] and a["fact"][0] in needed]
        if not cands:
            return None
        i = rng.choice(cands)
        over: dict[int, tuple] = {}
        if i > 0 and looks[i][1] is not None and rng.random() < 0.5:
            # It stores again what it just looked up instead of the new fact.
            over[i] = ("ms", looks[i][0], looks[i][1])
        else:
            over[i] = ("ms_none",)
        if looks[i][1] is not None and rng.random() < 0.5:
            # The later lookup of the missing fact returns the nearest older record instead of nothing.
            later = next(j for j in range(i + 1, len(atts)) if atts[j]["dep"] == atts[i]["fact"][0])
            over[later] = ("mr", looks[i][0], looks[i][1])
        return t.items, atts, over
    raise ValueError(kind)


# --- reflection ------------------------------------------------------------------------------


def _reflection_fault(t: Task, kind: str) -> tuple[list[str], list[dict], dict[int, tuple]] | None:
    """The diagnosis that fixed an error blames a wrong cause, or repeats a fix that did not help."""
    rng = t.rng
    atts = [dict(a) for a in t.attempts]
    # The fault sits at the diagnosis that, in P, fixed the error; in N_k the retry it leads to fails
    # the same way and the agent moves on as if it had worked.
    fixes = [i for i, a in enumerate(atts) if a["diag"] is not None and a["ok"]]
    if kind == "repeat":
        # Only where P had a first fix that did not help: the reflection proposes it once more.
        fixes = [i for i in fixes if atts[i - 1]["diag"] is not None]
        if not fixes:
            return None
    r = rng.choice(fixes)
    fail, retry = atts[r - 1], atts[r]
    true_kind, _, arg = retry["diag"]
    if kind == "repeat":
        new = dict(fail)  # the same call as the one that just failed
        new["diag"] = (true_kind, fail["diag"][1], arg)
    else:
        tried = fail["diag"][1] if fail["diag"] else None
        wrong = rng.choice([k for k in ERROR_KINDS if k != true_kind and k != tried])
        new = apply_fix(fail, wrong)
        new["diag"] = (wrong, wrong, arg)
    new.update(result=fail["result"], ok=False, believed=True, fact=retry["fact"])
    atts[r] = new
    return t.items, atts, {}


# --- one fault, by name ----------------------------------------------------------------------

FAULT_KINDS: dict[str, tuple[str, ...]] = {
    "planner": ("missing", "swap", "sibling", "extra"),
    "executor": ("wrong_tool", "wrong_args", "ignored_error", "duplicate_call"),
    "memory": ("stale", "other_entity", "irrelevant", "never_stored"),
    "reflection": ("wrong_cause", "repeat"),
}
_FAULT_OF_MODULE = {"planner": _planner_fault, "executor": _executor_fault, "memory": _memory_fault, "reflection": _reflection_fault}


def apply_fault(task: Task, module: str, kind: str) -> list[dict[str, str]] | None:
    """The rounds of N_k: the task's trajectory P with one fault of `kind` in `module` (one of
    `FAULT_KINDS[module]`). None where this kind cannot apply to the task, or leaves too few rounds,
    or leaves the module's text as in P three draws in a row. Draws from the task's generator."""
    if kind not in FAULT_KINDS.get(module, ()):
        raise ValueError(f"no fault {kind!r} for module {module!r}; known: {FAULT_KINDS}")
    positive_text = render_module(task.positive_rounds, DEFAULT_MODULE_FIELDS[module])
    for _ in range(3):
        made = _FAULT_OF_MODULE[module](task, kind)
        if made is None:
            return None
        items, attempts, mem_over = made
        if len(attempts) < _MIN_ROUNDS:
            return None
        style = task.style + [task.rng.getrandbits(28) for _ in range(len(attempts) - len(task.style))]
        rounds = render_rounds(items, attempts, task.memory_before, style, mem_over)
        if render_module(rounds, DEFAULT_MODULE_FIELDS[module]) != positive_text:
            return rounds
    return None
