"""One synthetic task: a family filled in with sampled parameters, and its successful trajectory P.

P runs the task's steps in order; 1-2 of them first fail with a tool error and are retried with the
right fix, sometimes only after a first fix that did not help. Everything about a task is drawn
from its own `random.Random`, seeded with (seed, task index), which the faults go on drawing from.
"""

import random
from dataclasses import dataclass
from functools import cached_property

from data.synth.families import FAMILIES, Family, Step, render_step
from data.synth.rounds import ERROR_KINDS, make_attempts, render_rounds


@dataclass
class Task:
    """A task and its successful trajectory P, as attempts (see `data.synth.rounds`)."""

    rng: random.Random
    family: Family
    params: dict
    steps: list[Step]  # the steps this task runs (optional ones may be left out)
    rsteps: list[dict]
    errors: dict[int, tuple[str, str | None]]  # step index -> (error kind, first fix or None), see `make_attempts`
    task: str
    prior: tuple[str, str]
    prior_present: bool
    style: list[int]
    attempts: list[dict]
    items: list[str]

    @property
    def memory_before(self) -> tuple[str, str] | None:
        """The note memory holds when the task starts, if it holds one."""
        return self.prior if self.prior_present else None

    @cached_property
    def positive_rounds(self) -> list[dict[str, str]]:
        """P's rounds, each a dict of round fields."""
        return render_rounds(self.items, self.attempts, self.memory_before, self.style)

    def sibling_params(self) -> dict:
        """Parameters of another task of the same family (other entities and numbers)."""
        return self.family.sample(self.rng)


def make_task(seed: int, index: int, attempt: int = 0) -> Task:
    """Task `index` of `seed` (`attempt` > 0 draws another one where the first repeats a task string)."""
    rng = random.Random(f"synth:{seed}:{index}" + (f":{attempt}" if attempt else ""))
    family = FAMILIES[rng.randrange(len(FAMILIES))]
    params = family.sample(rng)
    steps = [s for s in family.steps if not (s.optional and rng.random() < 0.35)]
    rsteps = [render_step(s, params) for s in steps]
    n_err = 1 if rng.random() < 0.6 else 2
    errors = {}
    for i in sorted(rng.sample(range(len(steps)), n_err)):
        kind = rng.choice(ERROR_KINDS)
        errors[i] = (kind, rng.choice([k for k in ERROR_KINDS if k != kind]) if rng.random() < 0.4 else None)
    prior = (family.prior[0].format_map(params), family.prior[1].format_map(params))
    attempts = make_attempts(rsteps, prior[0], errors)
    style = [rng.getrandbits(28) for _ in range(len(attempts) + 2)]
    return Task(
        rng=rng, family=family, params=params, steps=steps, rsteps=rsteps, errors=errors,
        task=family.task.format_map(params), prior=prior, prior_present=rng.random() < 0.5, style=style,
        attempts=attempts, items=[rs["plan"] for rs in rsteps],
    )
