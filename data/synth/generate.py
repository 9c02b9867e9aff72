"""The driver of the synthetic data: tasks, one negative per (task, module), and the pairs."""

from collections.abc import Sequence

from data.synth.faults import FAULT_KINDS, apply_fault
from data.synth.tasks import Task, make_task
from data.trajectory import DEFAULT_MODULE_FIELDS, render_context, render_module

try:
    from data.schema import DEFAULT_MODULES
except ImportError:  # pragma: no cover - the schema module needs pyarrow
    DEFAULT_MODULES = ("reflection", "planner", "executor", "memory")


def generate_pairs(n_pairs: int, seed: int = 0, modules: Sequence[str] = DEFAULT_MODULES) -> list[dict]:
    """`n_pairs` hard synthetic preference pairs, spread evenly over `modules` (counts differ by at
    most one); pair i belongs to task i // len(modules) and module modules[i % len(modules)].
    Deterministic in `seed`."""
    modules = tuple(modules)
    if not modules or len(set(modules)) != len(modules):
        raise ValueError(f"modules must be distinct and not empty, got {modules}")
    unknown = [m for m in modules if m not in FAULT_KINDS]
    if unknown:
        raise ValueError(f"unknown modules {unknown}; known: {', '.join(FAULT_KINDS)}")
    if n_pairs < 0:
        raise ValueError("n_pairs must be >= 0")
    pairs: list[dict] = []
    m = len(modules)
    seen_tasks: set[str] = set()
    for ti in range((n_pairs + m - 1) // m):
        t = make_task(seed, ti)
        attempt = 0
        while t.task in seen_tasks:  # task strings are distinct
            attempt += 1
            t = make_task(seed, ti, attempt)
        seen_tasks.add(t.task)
        pos_context = render_context(t.task, t.positive_rounds)
        for module in modules[: min(m, n_pairs - ti * m)]:
            negative = _negative(t, module)
            pairs.append({
                "pair_id": f"synth-s{seed}-t{ti:06d}-{module}",
                "target_module": module,
                "task": t.task,
                "task_family": t.family.name,
                "positive": {
                    "trajectory_full_context": pos_context,
                    "module_k_all_rounds": render_module(t.positive_rounds, DEFAULT_MODULE_FIELDS[module]),
                    "outcome": 1,
                },
                "negative": {
                    "trajectory_full_context": render_context(t.task, negative),
                    "module_k_all_rounds": render_module(negative, DEFAULT_MODULE_FIELDS[module]),
                    "outcome": 0,
                },
            })
    return pairs


def _negative(t: Task, module: str) -> list[dict[str, str]]:
    """N_k's rounds: the first of the module's fault kinds, in an order drawn per task and module,
    that applies to this task."""
    order = list(FAULT_KINDS[module])
    t.rng.shuffle(order)
    for kind in order:
        rounds = apply_fault(t, module, kind)
        if rounds is not None:
            return rounds
    raise RuntimeError(f"could not make a {module} fault for {t.task!r}")  # pragma: no cover
