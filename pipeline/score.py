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

Runs (data/runs.py, outcome optional; told apart from score records by content, or imported from
logs with --from autogpt|intercode|chat) are scored by `score_runs`: one record per run with each
module's reward, each round's, the run's total and the modules left out (its docstring says what a
round's reward is under each view); `ranking` is the table of best and worst runs.
"""

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data.files import atomic_path
from data.load import DataError, JSONProblem, Problem, file_kind, parse_json, read_utf8
from data.runs import Run, check_module_fields
from data.text_table import aligned_table
from data.trajectory import render_context, render_module, render_round
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
    if "context" not in record and "modules" not in record:
        return [(None, f"neither 'context' nor 'modules': this is not a score record. pipeline score reads {ACCEPTED}")]
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


def _refuse_non_finite(scored: Sequence[dict], records_path: Path | str) -> None:
    """A NaN or infinite reward is refused before anything is written: JSON has no such number."""
    rounds = lambda record: [(m, v) for m, values in record.get("round_rewards", {}).items() for v in values if v is not None]  # noqa: E731
    bad = [(i, module, value) for i, record in enumerate(scored) for module, value in [*record["scores"].items(), *rounds(record)] if not math.isfinite(value)]
    if bad:
        i, module, value = bad[0]
        raise ScoringError(
            f"{len(bad)} reward(s) are not finite numbers (first: {records_path}, record {i}{_run_id(scored[i])}, module {module!r}: {value}); "
            "nothing was written. NaN vectors in the cache are the usual cause: run `pipeline cache verify` and `pipeline cache repair`, "
            "or score without --cache"
        )


def _run_id(record: dict) -> str:
    return f" (run_id {record['run_id']!r})" if isinstance(record.get("run_id"), str) else ""


def score_file(scorer: RewardScorer, records_path: Path, out: Path, batch_size: int = 256, progress: bool = False) -> ScoredFile:
    records = read_records(records_path, scorer.modules, scorer.refusal)
    encoded, from_cache = scorer.encoded, scorer.from_cache
    scored = score_records(scorer, records, batch_size, progress)
    _refuse_non_finite(scored, records_path)
    _write_jsonl(scored, out)
    return ScoredFile(len(scored), sum(len(r["modules"]) for r in records), scorer.encoded - encoded, scorer.from_cache - from_cache)


def _write_jsonl(records: Sequence[dict], out: Path) -> None:
    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n" for record in records)


# --- runs ------------------------------------------------------------------------------------

ACCEPTED = (
    'score records ({"context": ..., "modules": {...}}, one per line) or runs (data/runs.py: run_id, task, rounds; outcome optional), '
    "told apart by content; AutoGPT reports, InterCode result files or chat transcripts with --from autogpt|intercode|chat"
)
LEFT_OUT = {
    "untrained": "untrained head (no training pairs)",
    "normalization": "no stored mean/std to normalise with",
    "no text": "no text in this run",
}


def input_kind(paths: Sequence[Path], source_format: str | None) -> str:
    """What the files to score hold: `source_format` (--from) when given; else "runs" or "score
    records", told apart by content (a file of no telling kind is read as the others' kind, or as
    score records, whose reader then names what is wrong). Pairs and a mix are refused with a pointer."""
    if source_format is not None:
        return source_format
    kinds = {Path(path): file_kind(path) for path in paths}
    pairs = [path for path, kind in kinds.items() if kind == "pairs"]
    if pairs:
        raise ScoringError(
            f"{pairs[0]} holds preference pairs, which `pipeline evaluate CHECKPOINT {pairs[0]} --cache CACHE --out REPORT` scores "
            f"(accuracy, baselines); pipeline score reads {ACCEPTED}"
        )
    known = {kind for kind in kinds.values() if kind is not None}
    if len(known) > 1:
        raise ScoringError(f"the files mix runs and score records ({', '.join(f'{p}: {k}' for p, k in kinds.items() if k)}); score one kind at a time")
    kind = known.pop() if known else "score records"
    if kind == "score records" and len(paths) > 1:
        raise ScoringError(f"score records are read from one file at a time, got {len(paths)} files; several files are read together as runs")
    return kind


def import_runs(kind: str, paths: Sequence[Path], **chat_options) -> list[dict]:
    """Run records from logs `pipeline import` reads (autogpt, intercode, chat), for scoring: a
    chat record without an outcome is a run without one."""
    if kind == "autogpt":
        from data.autogpt import import_reports

        runs, _ = import_reports(list(paths))
    elif kind == "intercode":
        from data.intercode import import_files

        runs, _ = import_files(list(paths))
    elif kind == "chat":
        from data.chat import import_files

        runs, _ = import_files(list(paths), **chat_options, outcome_optional=True)
    else:
        raise ValueError(f"no importer for {kind!r}")
    if not runs:
        raise DataError([Problem(", ".join(map(str, paths)), f"no runs to score in these {kind} files")])
    return runs


def module_fields_of(scorer: RewardScorer, configured: dict[str, list[str]], explicit: bool) -> dict[str, list[str]]:
    """Which round fields make up each module's text: the config's when it sets data.module_fields
    (`explicit`), else those the checkpoint was trained with (its training config), else the config's."""
    trained = scorer.record.training_config.get("data", {}).get("module_fields")
    fields = configured if explicit or not trained else trained
    check_module_fields(scorer.modules, fields)
    return fields


def score_runs(
    scorer: RewardScorer, runs: Sequence[Run], module_fields: dict[str, list[str]], batch_size: int = 256, progress: bool = False, round_rewards: bool = True
) -> list[dict]:
    """One record per run, in input order: run_id, task_id, task, outcome and source (when the run
    has them), `scores` (each module's reward of the whole run, for the modules the scorer answers
    for and the run wrote text for), `round_rewards` (per module, one entry per round of the run:
    null where the module wrote nothing), `total` (the mean of `scores`; null when it is empty),
    `modules_left_out` ({module: why}); `uncertainty` for an ensemble.

    A module's text and the context are rendered as `pipeline pairs` renders them. Round rewards:
    a checkpoint of the rounds view splits each module's reward over the pieces of its text
    (attention share x reward, `RewardScorer.rewards`), summed here per round, so a module's
    rounds add up to its score; other views score each round's module text alone
    (`[Round k]` and its sections) in the context of the run up to and including round k, a
    reward of its own that adds up to nothing, and costs one more context per round to encode
    (`round_rewards=False` leaves them out; the rounds view's shares cost nothing and stay)."""
    scorable = set(scorer.scorable_modules)
    shares = scorer.view.attention
    rows = []  # (run index, module, round number or None for the whole run, context, module text)
    records, left_out = [], []
    for i, run in enumerate(runs):
        record = {"run_id": run.run_id, **({"task_id": run.task_id} if run.task_id is not None else {}), "task": run.task}
        if run.outcome is not None:
            record["outcome"] = int(run.outcome) if run.outcome in (0.0, 1.0) else run.outcome
        if run.source is not None:
            record["source"] = run.source
        records.append(record)
        context, why = render_context(run.task, run.rounds), {}
        for module in scorer.modules:
            text = render_module(run.rounds, module_fields[module])
            if module not in scorable:
                why[module] = LEFT_OUT["untrained" if module not in scorer.trained_modules and not scorer.allow_untrained else "normalization"]
            elif not text:
                why[module] = LEFT_OUT["no text"]
            else:
                rows.append((i, module, None, context, text))
                if round_rewards and not shares:
                    for k, round_ in enumerate(run.rounds, start=1):
                        sections = render_round(round_, module_fields[module])
                        if sections:
                            rows.append((i, module, k, render_context(run.task, run.rounds[:k]), f"[Round {k}]\n{sections}"))
        left_out.append(why)

    scores: list[dict] = [{} for _ in runs]
    spread: list[dict] = [{} for _ in runs]
    rounds: list[dict] = [{} for _ in runs]
    for start in tqdm(range(0, len(rows), batch_size), desc="scoring", unit="batch", disable=not progress):
        chunk = rows[start : start + batch_size]
        scored = scorer.rewards([r[3] for r in chunk], [r[4] for r in chunk], [r[1] for r in chunk])
        for k, (i, module, number, _, text) in enumerate(chunk):
            per_round = rounds[i].setdefault(module, [None] * len(runs[i].rounds))
            if number is not None:
                per_round[number - 1] = float(scored.rewards[k])
                continue
            scores[i][module], spread[i][module] = float(scored.rewards[k]), float(scored.uncertainty[k])
            if shares:
                for piece_round, share in zip(scorer.view.piece_rounds(text, "module"), scored.round_rewards[k]):
                    if piece_round is not None and 1 <= piece_round <= len(per_round):
                        per_round[piece_round - 1] = (per_round[piece_round - 1] or 0.0) + float(share)
                for number_, round_ in enumerate(runs[i].rounds, start=1):  # a round whose pieces the view dropped got no share
                    if per_round[number_ - 1] is None and render_round(round_, module_fields[module]):
                        per_round[number_ - 1] = 0.0
    out = []
    for record, s, u, r, why in zip(records, scores, spread, rounds, left_out):
        ordered = [m for m in scorer.modules if m in s]
        record = {**record, "scores": {m: s[m] for m in ordered}}
        if round_rewards or shares:
            record["round_rewards"] = {m: r[m] for m in ordered}
        record["total"] = float(np.mean([s[m] for m in ordered])) if ordered else None
        if scorer.members > 1:
            record["uncertainty"] = {m: u[m] for m in ordered}
        out.append({**record, "modules_left_out": why})
    return out


@dataclass
class ScoredRuns:
    records: list[dict]
    rows: int  # (run, module) pairs scored, besides the rounds scored alone
    encoded: int
    from_cache: int


def score_runs_file(
    scorer: RewardScorer, runs: Sequence[Run], out: Path, module_fields: dict[str, list[str]], batch_size: int = 256, progress: bool = False, round_rewards: bool = True
) -> ScoredRuns:
    encoded, from_cache = scorer.encoded, scorer.from_cache
    scored = score_runs(scorer, runs, module_fields, batch_size, progress, round_rewards)
    _refuse_non_finite(scored, "the runs")
    _write_jsonl(scored, out)
    return ScoredRuns(scored, sum(len(r["scores"]) for r in scored), scorer.encoded - encoded, scorer.from_cache - from_cache)


def ranking(records: Sequence[dict], shown: int = 3) -> str:
    """The runs of highest and lowest total, as a table (all of them when few), and how many have no total."""
    ranked = sorted((r for r in records if r["total"] is not None), key=lambda r: -r["total"])
    rows = list(enumerate(ranked, start=1))
    if len(rows) > 2 * shown:
        rows = rows[:shown] + [("...", None)] + rows[-shown:]
    table = [
        [rank, "", "", "", ""] if record is None else
        [rank, record["run_id"], record.get("task_id", record["task"])[:40], f"{record['total']:.3f}", record.get("outcome", "-")]
        for rank, record in rows
    ]  # fmt: skip
    lines = [aligned_table(["rank", "run_id", "task", "total", "outcome"], table, left_columns=3)] if ranked else []
    missing = len(records) - len(ranked)
    if missing:
        lines.append(f"{missing} run(s) have no total: none of their modules could be scored (see modules_left_out)")
    return "\n".join(lines)
