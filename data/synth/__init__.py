"""Hard synthetic preference pairs for per-module reward models.

`generate_pairs(n_pairs, seed)` returns pairs in the user pair format (see `data.schema`), plus a
`task_family` field:

    {"pair_id": "synth-s0-t000012-planner", "target_module": "planner", "task": "...",
     "task_family": "invoice_reconciliation",
     "positive": {"trajectory_full_context": "...", "module_k_all_rounds": "...", "outcome": 1},
     "negative": {"trajectory_full_context": "...", "module_k_all_rounds": "...", "outcome": 0}}

How a pair is made. Each task comes from one of 25 parametrised task families (flight booking,
invoice reconciliation, bug triage, ...); task strings are distinct. For the task we build one
successful multi-round trajectory P: one round per step of a 3-4 step plan, plus retry rounds for
the 1-2 tool errors every trajectory recovers from (sometimes only after a first fix that did not
help), 4-8 rounds in all. Every round carries all seven round fields (reflection, plan, memory
query and result, action, tool results, memory store), written out by `data.trajectory` in the
one layout real runs have too. For each module k we then derive N_k = P with one realistic fault
of module k, plus its plausible consequences later on (a failing observation, a memory miss, the
agent carrying on regardless):

- planner:    a step is missing; two adjacent steps are swapped; the plans are for a sibling task
              (same family, other entities); an irrelevant step from another family is added.
- executor:   a wrong tool (one that is right for a step of another family; it errors or returns
              something beside the point); a wrong argument (another entity, or a number like the
              right one); an ignored error (the agent moves on after an error as if the call had
              worked, skipping the retry it needed); a side-effecting call sent twice (a second
              booking, refund, order, ticket or email).
- memory:     a stale value (a number close to the stored one); another entity's record; an
              irrelevant record (another fact of the task, or a note left by an unrelated task);
              a key fact never stored (nothing, or the old fact again, is stored; a later lookup
              misses or returns the older record).
- reflection: the diagnosis that fixed an error in P blames the wrong cause instead (and applies
              that cause's fix, so the retry fails the same way); or, after a fix that did not
              help, it proposes that same fix again.

Pair i for module k is (P's context, P's module-k text) vs (N_k's context, N_k's module-k text);
P's context is therefore shared by the task's pairs for all modules.

Why it is hard. Negatives are written with exactly the vocabulary positives use: every tool, step,
entity, error message, cause and fix phrase appears in positives elsewhere (positives have errors,
diagnoses, retries, empty memory lookups and "nothing to store" rounds too), and there is no
sentence only negatives use. The wrongness is relative to the task and the context: a swapped plan
has the same words, a stale value is a number like the right one, a wrong tool is right for other
tasks, a wrong diagnosis is the right one for other errors. Where a fault adds an error to the
module text, another removes one (a wrong argument that went through without the error P had to
recover from), and faults lengthen the negative (an extra step, a duplicate call) about as often as
they shorten it (a missing step, a dropped retry, a fact never stored), so counting errors or
characters says little. Phrasing comes from several paraphrases per sentence kind,
drawn once per task and round and shared by P and its negatives, so a pair differs only where the
fault and its consequences are.

Everything is drawn from `random.Random` seeded with (seed, task index): same seed, same pairs; and
the first pairs of a larger request are the pairs of a smaller one.

The package, by concern: `families` (the task families and their samplers), `tasks` (one task and
its P), `rounds` (attempts and the round dicts they are written as; the text is `data.trajectory`'s),
`faults` (the faults of each module; `apply_fault` applies one named fault kind to a task), and
`generate` (the pairs).

    from data.synth import FAULT_KINDS, apply_fault, generate_pairs, make_task
    pairs = generate_pairs(1000, seed=0)
    negative_rounds = apply_fault(make_task(seed=0, index=3), "executor", "duplicate_call")
"""

from data.synth.families import FAMILY_NAMES
from data.synth.faults import FAULT_KINDS, apply_fault
from data.synth.generate import DEFAULT_MODULES, generate_pairs
from data.synth.tasks import Task, make_task

__all__ = ["DEFAULT_MODULES", "FAMILY_NAMES", "FAULT_KINDS", "Task", "apply_fault", "generate_pairs", "make_task"]
