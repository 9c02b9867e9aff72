"""Recipe of `pipeline fit`: from one's own agent logs to a reward checkpoint ready to serve, in one command.

    pipeline fit runs.jsonl --out fit/                          # runs (data/runs.py) or pairs, told apart by content
    pipeline fit logs/*.jsonl --from chat --out fit/            # or logs `pipeline import` reads (autogpt, intercode, chat)
    pipeline fit runs.jsonl --out fit/ --cache embeddings/      # share one embedding cache between fits

It runs the verbs one after another, each exactly as it runs alone and reading the same config
(OUT/config.yaml: `--config` with fit's flags applied):

    [import KIND]  the logs as runs                                  -> OUT/runs.jsonl
    pairs          validate the runs, mine pairs (or: validate the pairs given)  -> OUT/pairs.jsonl
    split          train / val / test by task                        -> OUT/split/
    embed          every unique text once                            -> OUT/cache/ (or --cache)
    train-heads    the heads, validated on the val split            -> OUT/checkpoint/
    evaluate       on val (stores the reward normalisation in the checkpoint) -> OUT/report-val/
    evaluate       on test: tasks the heads never saw                -> OUT/report-test/

and ends with the `pipeline serve` and `pipeline score` commands for the checkpoint. OUT/fit.json
records the inputs, their kind, and (once done) those commands. Before the split it checks that the
pairs come from enough tasks to fill train, val and test, and refuses with what is needed if not.
"""

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from data import UserError, load_pairs
from data.files import json_text, write_text_atomic
from data.load import file_kind
from data.splits import SPLITS, split_pairs
from pipeline.config import Config

FIT_FILES = ("fit.json", "config.yaml")  # what fit writes first: a folder holding both is one of ours
IMPORTERS = {"autogpt": "AutoGPT benchmark reports", "intercode": "InterCode result files", "chat": "chat transcripts"}
KINDS = ("runs", "pairs", *IMPORTERS)
ACCEPTED = (
    "runs (JSON Lines, one run per line with run_id, task, outcome and rounds: data/runs.py) or pairs (records with "
    "pair_id, target_module, positive and negative); for AutoGPT reports, InterCode result files or chat transcripts "
    "give --from autogpt|intercode|chat"
)


@dataclass
class Step:
    """One verb of the recipe: its name as typed (`import chat`), what it is for, its arguments."""

    verb: str
    purpose: str
    arguments: dict


def input_kind(files: tuple[Path, ...], source: str | None) -> str:
    """What FILES hold: `source` (--from) when given; else runs or pairs, told apart by content.
    A file whose kind cannot be told is read as the others' kind (its reader then names what is
    wrong with it); runs and pairs together, score records, or no file of a known kind are refused."""
    if source is not None:
        return source
    kinds = {path: file_kind(path) for path in files}
    known = {kind for kind in kinds.values() if kind is not None}
    if "score records" in known:
        records = ", ".join(str(p) for p, kind in kinds.items() if kind == "score records")
        raise UserError(f"{records}: records of contexts and module texts are what `pipeline score` reads, not training data; fit takes {ACCEPTED}")
    if known == {"runs", "pairs"}:
        runs = " ".join(shlex.quote(str(p)) for p, kind in kinds.items() if kind == "runs")
        pairs = " ".join(shlex.quote(str(p)) for p, kind in kinds.items() if kind == "pairs")
        raise UserError(
            f"the files mix runs ({runs}) and pairs ({pairs}); fit takes one kind. To train on both, mine the runs first "
            f"and fit on the pair files together: `pipeline pairs {runs} --out mined.jsonl`, then `pipeline fit mined.jsonl {pairs} --out DIR`"
        )
    if not known:
        shown = ", ".join(str(p) for p in files)
        raise UserError(f"cannot tell what {shown} hold(s) from the first record: fit takes {ACCEPTED}; --from runs or --from pairs reads them as that kind and names every problem")
    return known.pop()


@dataclass
class FitPlan:
    """The steps of one fit, where each writes, and the commands that use what it made."""

    files: tuple[Path, ...]
    kind: str  # one of KINDS
    out: Path
    cache: Path
    test: bool  # data.test_fraction > 0: a test split to report on
    import_options: dict = field(default_factory=dict)  # the importer's options (--from chat)
    mining: dict = field(default_factory=dict)  # pipeline pairs' max_pairs_per_task, success_threshold, seed
    overwrite: bool = False

    @property
    def runs_files(self) -> tuple[Path, ...]:
        """The runs the pairs are mined from (none when pairs were given)."""
        if self.kind in IMPORTERS:
            return (self.out / "runs.jsonl",)
        return self.files if self.kind == "runs" else ()

    @property
    def pair_files(self) -> tuple[Path, ...]:
        return (self.out / "pairs.jsonl",) if self.runs_files else self.files

    @property
    def checkpoint(self) -> Path:
        return self.out / "checkpoint"

    def split_file(self, name: str) -> Path:
        return self.out / "split" / f"{name}.jsonl"

    def report(self, name: str) -> Path:
        return self.out / f"report-{name}"

    @property
    def total_steps(self) -> int:
        return len(self.data_steps()) + 4 + self.test

    def data_steps(self) -> list[Step]:
        """Import (logs only), then mine pairs from the runs, or validate the pairs given."""
        steps = []
        if self.kind in IMPORTERS:
            files = {"reports" if self.kind == "autogpt" else "files": self.files}
            steps.append(Step(f"import {self.kind}", f"the {IMPORTERS[self.kind]} as runs", {**files, "out": self.runs_files[0], **self.import_options}))
        if self.runs_files:
            purpose = "validate the runs; pair, per task and module, a run that succeeded against one that failed"
            steps.append(Step("pairs", purpose, {"files": self.runs_files, "out": self.pair_files[0], **self.mining}))
        else:
            steps.append(Step("validate", "check the pairs and summarise them", {"files": self.files}))
        return steps

    def split_step(self) -> Step:
        return Step("split", "train / val / test, no task in two splits", {"files": self.pair_files, "out": self.out / "split", "overwrite": self.overwrite})

    def embed_step(self) -> Step:
        files = tuple(self.split_file(name) for name in SPLITS if name != "test" or self.test)
        return Step("embed", f"every unique text once into the cache {self.cache} (stage 0)", {"files": files, "cache_dir": self.cache})

    def model_steps(self, namespace: str) -> list[Step]:
        """Train on the embed step's vectors (its namespace: a shared cache may hold several), then evaluate."""
        evaluate = {"checkpoint": self.checkpoint, "cache_dir": self.cache, "overwrite": self.overwrite}
        steps = [
            Step("train-heads", "one head per module on the cached vectors, the epoch chosen on val", {
                "files": (self.split_file("train"),), "val_file": self.split_file("val"), "cache_dir": self.cache,
                "namespace_id": namespace, "out": self.checkpoint, "overwrite": self.overwrite,
            }),
            Step("evaluate", "on validation (stores the reward normalisation in the checkpoint)", {**evaluate, "files": (self.split_file("val"),), "out": self.report("val")}),
        ]  # fmt: skip
        if self.test:
            steps.append(Step("evaluate", "on test (tasks the heads never saw): the reward against baselines", {**evaluate, "files": (self.split_file("test"),), "out": self.report("test")}))
        return steps

    def commands(self) -> dict[str, str]:
        """The `pipeline serve` and `pipeline score` command lines for the checkpoint: with its
        cache, and --normalize when evaluation stored a normalisation. Scoring is shown on the runs
        fit read (a placeholder RUNS.jsonl when it was given pairs)."""
        options = ["--cache", str(self.cache), *(["--normalize"] if self.normalized() else [])]
        runs = [str(p) for p in self.runs_files] or ["RUNS.jsonl"]
        return {
            "serve": shlex.join(["pipeline", "serve", str(self.checkpoint), *options]),
            "score": shlex.join(["pipeline", "score", str(self.checkpoint), *runs, "--out", str(self.out / "scored.jsonl"), *options]),
        }

    def normalized(self) -> bool:
        """Whether the checkpoint stores a reward normalisation (the validation report stored it)."""
        from heads.checkpoint import read_normalization  # torch: only when asked

        return bool(read_normalization(self.checkpoint))

    def record(self, **more) -> None:
        """OUT/fit.json: what this fit read and made."""
        record = {"files": [str(p) for p in self.files], "kind": self.kind, "cache": str(self.cache), **more}
        write_text_atomic(self.out / "fit.json", json_text(record, indent=2) + "\n")


def check_enough_pairs(pair_files: tuple[Path, ...], config: Config, test: bool) -> None:
    """Refuse, saying what is needed, unless splitting the pairs by task (as the split step will)
    fills train, val and (when data.test_fraction > 0) test."""
    data = config.data
    if data.val_fraction <= 0:
        raise UserError("fit needs validation tasks to choose the epoch and store the reward normalisation: set data.val_fraction above 0")
    pairs = load_pairs(pair_files, data.modules)
    parts = split_pairs(pairs, data.val_fraction, data.test_fraction, data.split_seed, data.group_by)
    needed = [name for name in SPLITS if name != "test" or test]
    empty = [name for name in needed if parts[name].height == 0]
    if not empty:
        return
    group = "task" if data.group_by == "task" else f"{data.group_by} value"
    given = ", ".join(f"{name} {parts[name][data.group_by].n_unique()}" for name in SPLITS)
    raise UserError(
        f"too little data to fit: the {pairs.height} pairs come from {pairs[data.group_by].n_unique()} {group}(s), and split by "
        f"{data.group_by} they leave {' and '.join(empty)} empty ({group}s per split: {given}). Fit trains on some {group}s, "
        f"chooses the epoch and the normalisation on others{' and tests on yet others' if test else ''}, so it needs pairs from at "
        f"least {len(needed)} {group}s (tasks with both a succeeded and a failed run), and dozens for numbers that mean much. "
        "Add runs of more tasks, adjust data.val_fraction / data.test_fraction"
        + (", or set data.test_fraction: 0 to fit without a test report" if test else "")
    )
