"""Scoring recipe: a JSON Lines file of trajectories in, the same records with a reward per module out.

    pipeline score ckpt/ trajectories.jsonl --out scored.jsonl [--cache embeddings/] [--normalize]

One record per line:

    {"context": "Task: ...\\n[Round 1]\\n<plan>...</plan>\\n<action>...</action>\\n...",
     "modules": {"planner": "[Round 1]\\n<plan>...</plan>", "executor": "[Round 1]\\n<action>...</action>..."},
     "run_id": "any other field is passed through"}

- `context` (string): the trajectory the module texts are judged in, as in the pair format's
  `trajectory_full_context`.
- `modules` (object, at least one entry): module name -> that module's text (`module_k_all_rounds`);
  every name must be a module of the checkpoint. Give only the modules you want scored.
- Any other field is written back unchanged. Blank lines are skipped.

The output holds the records in input order, each with `"scores": {"planner": 0.41, ...}` added (an
existing `scores` field is replaced): the heads' rewards, or (r - mean) / std per module with
`--normalize`. A checkpoint trained with `--ensemble K` also adds `"uncertainty": {"planner": 0.05, ...}`:
the members' standard deviation per module, in the units of the scores (pipeline/rewards.py); a
single-model checkpoint writes no `uncertainty`.
A checkpoint of the `rounds` view also adds `"round_rewards": {"planner": [0.12,
0.29], ...}`: each module's reward split over the pieces of its text (its `[Round N]` blocks, in
order), summing to the module's score (pipeline/rewards.py says how). The whole input is validated first; a bad record stops the run with every problem's
file, line and field, and nothing is written. The output is written to a temporary file and renamed.
"""

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from data.files import atomic_path
from data.load import DataError, JSONProblem, Problem, parse_json, read_utf8
from pipeline.rewards import RewardScorer, ScoringError


@dataclass
class ScoredFile:
    records: int
    rows: int  # (record, module) pairs scored
    encoded: int  # texts that went through the encoder
    from_cache: int  # texts read from the embedding cache


def read_records(path: Path, modules: Sequence[str], refusal: Callable[[str], str | None] | None = None) -> list[dict]:
    """The records of a JSON Lines file; `DataError` listing every problem (file, line, field).
    `refusal(module)`: why a module is not scored (`RewardScorer.refusal`: an untrained head, no
    normalisation), a problem of each record that names it."""
    file = str(path)
    text = read_utf8(path)
    records, problems = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = parse_json(line)
        except json.JSONDecodeError as e:
            problems.append(Problem(file, f"not valid JSON: {e.msg} at column {e.colno}", line=number))
            continue
        except JSONProblem as e:  # NaN or Infinity would pass through into the output, which is then not JSON
            problems.append(Problem(file, e.message, line=number, field=e.field))
            continue
        found = _record_problems(record, modules, refusal)
        problems += [Problem(file, message, line=number, field=field) for field, message in found]
        records.append(record)
    if problems:
        raise DataError(problems)
    if not records:
        raise DataError([Problem(file, 'the file is empty (no records); expected JSON Lines, one {"context": ..., "modules": {...}} per line')])
    return records


def _record_problems(record: object, modules: Sequence[str], refusal: Callable[[str], str | None] | None = None) -> list[tuple[str | None, str]]:
    if not isinstance(record, dict):
        return [(None, f'expected a JSON object {{"context": ..., "modules": {{...}}}}, got {type(record).__name__}')]
    problems = []
    if "context" not in record:
        problems.append(("context", "missing: the trajectory the module texts are judged in"))
    elif not isinstance(record["context"], str):
        problems.append(("context", f"must be a string, got {type(record['context']).__name__}"))
    texts = record.get("modules")
    if texts is None:
        problems.append(("modules", 'missing: an object of module name -> module text, e.g. {"planner": "..."}'))
    elif not isinstance(texts, dict) or not texts:
        problems.append(("modules", f"must be a non-empty object of module name -> module text, got {json.dumps(texts)[:60]}"))
    else:
        for name, text in texts.items():
            if name not in modules:
                problems.append((f"modules.{name}", f"unknown module {name!r} (this checkpoint has: {', '.join(modules)})"))
            elif not isinstance(text, str):
                problems.append((f"modules.{name}", f"must be a string, got {type(text).__name__}"))
            elif refusal is not None and (why := refusal(name)):
                problems.append((f"modules.{name}", why))
    return problems


def score_records(scorer: RewardScorer, records: Sequence[dict], batch_size: int = 256, progress: bool = False) -> list[dict]:
    """Copies of `records` with `scores` added (and `round_rewards` for a checkpoint of the rounds
    view), scored `batch_size` (record, module) rows per call."""
    rows = [(i, module, record["context"], text) for i, record in enumerate(records) for module, text in record["modules"].items()]
    scores: list[dict] = [{} for _ in records]
    uncertainty: list[dict] = [{} for _ in records]
    rounds: list[dict] = [{} for _ in records]
    per_round = scorer.view.attention
    for start in tqdm(range(0, len(rows), batch_size), desc="scoring", unit="batch", disable=not progress):
        chunk = rows[start : start + batch_size]
        texts = ([r[2] for r in chunk], [r[3] for r in chunk], [r[1] for r in chunk])
        scored = scorer.rewards(*texts)  # one pass of the heads: rewards, spread and round shares
        rewards, spread, shares = scored.rewards, scored.uncertainty, scored.round_rewards
        for k, ((i, module, _, _), reward, std) in enumerate(zip(chunk, rewards, spread)):
            scores[i][module] = float(reward)
            uncertainty[i][module] = float(std)
            if per_round:
                rounds[i][module] = [float(x) for x in shares[k]]
    extra = {"uncertainty": uncertainty} if scorer.members > 1 else {}
    if per_round:
        extra["round_rewards"] = rounds
    return [{**record, "scores": s, **{name: values[j] for name, values in extra.items()}} for j, (record, s) in enumerate(zip(records, scores))]


def _refuse_non_finite(scored: Sequence[dict], records_path: Path) -> None:
    """A NaN or infinite reward is refused before anything is written: JSON has no such number."""
    bad = [(i, module, value) for i, record in enumerate(scored) for module, value in record["scores"].items() if not math.isfinite(value)]
    if bad:
        i, module, value = bad[0]
        raise ScoringError(
            f"{len(bad)} reward(s) are not finite numbers (first: {records_path}, record {i}, module {module!r}: {value}); "
            "nothing was written. NaN vectors in the cache are the usual cause: run `pipeline cache verify` and `pipeline cache repair`, "
            "or score without --cache"
        )


def score_file(scorer: RewardScorer, records_path: Path, out: Path, batch_size: int = 256, progress: bool = False) -> ScoredFile:
    records = read_records(records_path, scorer.modules, scorer.refusal)
    encoded, from_cache = scorer.encoded, scorer.from_cache
    scored = score_records(scorer, records, batch_size, progress)
    _refuse_non_finite(scored, records_path)
    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n" for record in scored)
    return ScoredFile(len(scored), sum(len(r["modules"]) for r in records), scorer.encoded - encoded, scorer.from_cache - from_cache)
