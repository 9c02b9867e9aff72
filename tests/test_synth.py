"""Synthetic pairs: deterministic, balanced, complete, and not separable by shallow cues."""

import re
from collections import Counter, defaultdict

import numpy as np
import pytest

from data.synth import DEFAULT_MODULES, FAMILY_NAMES, generate_pairs
from data.trajectory import module_texts_from_trajectory

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
    for name, vectorizer in (("bag-of-words LR (counts)", CountVectorizer()), ("bag-of-words LR (tf-idf)", TfidfVectorizer())):
        x_train = vectorizer.fit_transform([pos[i] for i in train] + [neg[i] for i in train])
        y_train = [1] * len(train) + [0] * len(train)
        model = LogisticRegression(solver="liblinear", max_iter=1000).fit(x_train, y_train)
        p_pos = model.predict_proba(vectorizer.transform([pos[i] for i in test]))[:, 1]
        p_neg = model.predict_proba(vectorizer.transform([neg[i] for i in test]))[:, 1]
        results[name] = list(p_pos > p_neg)  # ties count as wrong

    print(f"\nheld-out pairwise accuracy on {len(test)} pairs of {len(set(families[i] for i in test))} unseen families:")
    for name, correct in results.items():
        print(f"  {name:28s} {np.mean(correct):.3f}  by module {per_module(correct)}")

    for name, correct in results.items():
        assert np.mean(correct) < 0.95, name
    # The shortcut models do learn something from the training families' wording (they are not
    # scoring noise), they just do not transfer: the faults are only visible against the task.
    for name in ("bag-of-words LR (counts)", "bag-of-words LR (tf-idf)"):
        assert np.mean(results[name]) > 0.0
    assert 0.05 < np.mean(longer) and 0.05 < np.mean(shorter)
