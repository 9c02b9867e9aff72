"""The `pipeline` command: one verb per step of JSON pairs -> cache -> heads -> report -> rewards.

    pipeline synth --pairs 2000 --seed 0 --out pairs.json
    pipeline validate pairs.json
    pipeline split pairs.json --out splits/
    pipeline demo --out demo-run/
    pipeline fit runs.jsonl --out fit/      # your own runs to a checkpoint, then the serve/score commands

Every verb takes `--config FILE.yaml` (see pipeline/config.py); its flags override the file.
"""

import errno
import logging
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cache import EmbeddingCache
from data import UserError, load_pairs, pairs_from_records, write_pairs
from data.files import check_output_file, check_output_folder, read_once
from data.guards import check_writable_folder
from data.splits import SPLITS, format_split_summary, split_pairs, split_summary
from data.summary import format_summary, summarize_pairs
from data.text_table import aligned_table
from pipeline import __version__
from pipeline.config import CONFIG_SECTIONS, INT_MAX, SETTINGS, load_config

if TYPE_CHECKING:
    from heads.checkpoint import CheckpointRecord


class _EchoHandler(logging.Handler):
    """Log records of the `pipeline` loggers as plain lines on stderr (whichever stderr is current)."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(self.format(record), err=True)


class _Group(click.Group):
    """The `pipeline` entry point. Turns the user's mistakes (`data.UserError`: input, config,
    cache, checkpoint, encoder) and the disk's (full, read-only, no permission, busy: `disk_error`)
    into one line and exit code 1; any other exception is a bug and keeps its traceback."""

    def main(self, *args, **kwargs):
        # OpenMP threads that spin while waiting made CPU inference 10x slower on 2-vCPU cloud
        # machines (MiniLM, 130 texts: 11-16 s with the default, 1.2 s with PASSIVE). It must be set
        # before torch loads its OpenMP runtime: verbs import torch only when they run, after this.
        # A setting of the user's wins; importing this module sets nothing.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        # what the recipes log at INFO (which encoder folder a checkpoint loaded) is part of a verb's output
        log = logging.getLogger("pipeline")
        if not any(isinstance(h, _EchoHandler) for h in log.handlers):
            log.addHandler(_EchoHandler())
            log.setLevel(logging.INFO)
        return super().main(*args, **kwargs)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as e:
            raise click.ClickException(str(e)) from e
        except Exception as e:
            message = disk_error(e)
            if message is None:
                raise
            raise click.ClickException(message) from e


# What the disk refuses, the words the OS (and safetensors, pyarrow, duckdb, polars, which wrap it in
# their own exceptions) says it with, and what the user can do about it.
_DISK_ERRORS = {
    errno.ENOSPC: ("No space left on device", "free space on that disk (or choose another --out or --cache on a disk with room) and run it again"),
    errno.EDQUOT: ("Disk quota exceeded", "free space within your quota (or choose another --out or --cache) and run it again"),
    errno.EROFS: ("Read-only file system", "choose another --out or --cache on a writable file system"),
    errno.EACCES: ("Permission denied", "fix the permissions of that path (or choose another --out or --cache) and run it again"),
    errno.EPERM: ("Operation not permitted", "fix the permissions of that path (or choose another --out or --cache) and run it again"),
    errno.EBUSY: ("Device or resource busy", "wait until no other program holds that path (or choose another --out) and run it again"),
}
_KEPT = (
    "nothing half-written is left: outputs are written to a temporary file and renamed; "
    "the cache stays valid (what was embedded before is kept) and a rerun continues"
)


def disk_error(error: BaseException) -> str | None:
    """One line for an exception that is, or was raised while handling or because of (its
    `__cause__` / `__context__` chain), a full, read-only, forbidden or busy file system; None
    for anything else. An OSError is known by its errno; a library's own exception (safetensors'
    SafetensorError, pyarrow's, duckdb's IOException) by the OS's words in its message."""
    seen: set[int] = set()
    pending = [error]
    while pending:
        e = pending.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        code = getattr(e, "errno", None) if isinstance(e, OSError) else None
        if code not in _DISK_ERRORS:
            text = str(e)
            code = next((c for c, (words, _) in _DISK_ERRORS.items() if words.lower() in text.lower()), None)
        if code is not None:
            words, remedy = _DISK_ERRORS[code]
            filename = getattr(e, "filename", None) if isinstance(e, OSError) else None
            where = f" ({_shown_path(filename)})" if filename else ""
            return f"{words}{where}: {_KEPT}. To go on, {remedy}"
        pending += [e.__cause__, e.__context__]
    return None


def _shown_path(filename: object) -> str:
    """The path an error names, as the output it was for: `.NAME.abc123.tmp` beside NAME is
    atomic_path's temporary file for NAME."""
    path = Path(os.fsdecode(filename)) if isinstance(filename, (str, bytes, os.PathLike)) else Path(str(filename))
    match = re.fullmatch(r"\.(.+)\.[^.]+\.(?:tmp|old)", path.name)
    return f"writing {path.with_name(match.group(1))}" if match else str(path)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="pipeline")
def main() -> None:
    """Train per-module reward models (reflection, planner, executor, memory) for LLM agents and
    serve their scores to RL frameworks."""


def config_option(function):
    return click.option(
        "--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help=f"YAML config (sections {', '.join(CONFIG_SECTIONS)}; docs/reference/config.md); flags override it.",
    )(function)


class SettingOption(click.Option):
    """A flag that overrides a config key (`setting_option`)."""

    def __init__(self, *args, key: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.key = key


def setting_option(*decls: str, key: str, help: str | None = None, **attrs):
    """A flag that overrides the config key `key`. Its default is None: the config's value (the
    file's, else the key's default). Its type, choices and range, and the help's closing
    `[key: default]`, come from the key's declaration in pipeline/config.py; so does the help's
    text unless `help` is given."""
    setting = SETTINGS[key]
    if setting.choices:
        attrs.setdefault("type", click.Choice(setting.choices))
    elif setting.number is not None:
        attrs.setdefault("type", _number_range(setting))
    help = f"{help or setting.description} [{key}: {setting.shown_default()}]"
    return click.option(*decls, cls=SettingOption, key=key, default=None, help=help, **attrs)


def _number_range(setting) -> click.ParamType:
    """A number key's bounds as a click range. The cap of every int key at INT_MAX is left to the
    config, which refuses a larger value all the same: in every range of --help it would be noise."""
    bounds = setting.bounds
    high = bounds.get("le", bounds.get("lt"))
    return (click.IntRange if setting.number is int else click.FloatRange)(
        min=bounds.get("ge", bounds.get("gt")), max=None if high == INT_MAX else high, min_open="gt" in bounds, max_open="lt" in bounds,
    )  # fmt: skip


def setting_flags() -> dict[str, dict[str, list[str]]]:
    """The flags that override each config key, with the verbs that take them, for the config
    reference: {"stage_0.epochs": {"--epochs": ["fit", "train-heads"]}}."""
    found: dict[str, dict[str, list[str]]] = {}

    def visit(command: click.Command, name: str) -> None:
        for param in command.params:
            if isinstance(param, SettingOption):
                found.setdefault(param.key, {}).setdefault("/".join(param.opts + param.secondary_opts), []).append(name)
        for child, subcommand in sorted(getattr(command, "commands", {}).items()):
            visit(subcommand, f"{name} {child}".strip())

    visit(main, "")
    return found


def overwrite_option(help: str):
    return click.option("--overwrite", is_flag=True, help=help)


def _read_once(ctx: click.Context, param: click.Parameter, paths: tuple[Path, ...]) -> tuple[Path, ...]:
    """A file argument's paths without repeats: the same file given twice (by path, another path
    or a symlink) is read once, and the verb says so in one line."""
    return tuple(read_once(paths, say=lambda line: click.echo(line, err=True)))


def input_files(name: str = "files", required: bool = True):
    """FILES arguments: existing files, each read once however often it is given."""
    return click.argument(name, nargs=-1, required=required, callback=_read_once, type=click.Path(exists=True, dir_okay=False, path_type=Path))


pair_files = input_files()

MAX_PAIRS_PER_TASK, MINING_SEED = 8, 0  # `pipeline pairs`' defaults, which `fit` passes on
CHAT_OPTIONS = ("task_field", "outcome_field", "messages_field", "opening_message", "task_prefix", "reflection_pattern", "memory_pattern")


def chat_options(note: str = ""):
    """The chat importer's options (`pipeline import chat`, and `fit` / `score` with --from chat)."""

    def decorate(function):
        options = [
            click.option("--task-field", default="task_id", show_default=True, help=f"{note}Field naming the task (a string or an integer); a dotted path reads nested objects."),
            click.option("--outcome-field", default="outcome", show_default=True, help=f"{note}Field with the outcome: 1/0 or true/false, or a reward with --success-threshold."),
            click.option("--messages-field", default="messages", show_default=True, help=f"{note}Field with the transcript, a list of chat messages."),
            click.option("--opening-message", type=click.Choice(["task", "round"]), default="task", show_default=True,
                         help=f"{note}The user messages before the first assistant message: the run's task, or a first round of their own (the task then being '<task field> <value>', so runs of a task pair even when their openings differ, as in tau-bench)."),
            click.option("--task-prefix", default="", help=f"{note}Put before every task id (e.g. airline/), so that tasks of benchmarks that number theirs alike stay apart in `pipeline pairs`."),
            click.option("--reflection-pattern", metavar="REGEX", help=f"{note}Paragraphs of assistant text where this matches go to reflection (its first group if it has one), not plan."),
            click.option("--memory-pattern", metavar="REGEX", help=f"{note}Paragraphs of assistant text where this matches go to memory_store (its first group if it has one), not plan."),
        ]  # fmt: skip
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


def refuse_unused(ctx: click.Context, names: tuple[str, ...], why: str) -> None:
    """A usage error naming the options among `names` given on the command line that do not apply (`why`)."""
    from click.core import ParameterSource

    given = [f"--{name.replace('_', '-')}" for name in names if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)]
    if given:
        raise click.UsageError(f"{', '.join(given)}: {why}")


@main.command()
@click.option("--pairs", "n_pairs", type=click.IntRange(min=1), default=1000, show_default=True, help="Number of pairs.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same pairs.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Output: .json (array), .jsonl or .parquet.")
@overwrite_option("Replace OUT (and OUT's .config.yaml) even when it is not synthetic pairs synth wrote.")
@config_option
def synth(n_pairs: int, seed: int, out: Path, config_path: Path | None, overwrite: bool = False) -> None:
    """Write hard synthetic pairs.

    Positive and negative share the task and most of their text; the negative carries a realistic
    fault of its module (a misordered plan, a wrong tool, a stale memory, a wrong diagnosis).
    """
    from data.synth import generate_pairs

    config = load_config(config_path)
    check_output_file(out, [p for p in (config_path,) if p], "synthetic pairs", overwrite, CONFIG_SECTIONS)
    pairs = pairs_from_records(generate_pairs(n_pairs, seed=seed, modules=config.data.modules), config.data.modules, source="synth")
    write_pairs(pairs, out)
    config.save(out.with_name(f"{out.stem}.config.yaml"))
    click.echo(f"wrote {pairs.height} pairs over {pairs['task'].n_unique()} tasks to {out}")


@main.command()
@pair_files
@config_option
def validate(files: tuple[Path, ...], config_path: Path | None) -> None:
    """Check pair files and summarise them.

    Prints pairs per module, tasks, text lengths and reuse; or lists every problem with its file,
    record, pair_id and field, and exits 1.
    """
    config = load_config(config_path)
    pairs = load_pairs(files, config.data.modules)
    click.echo(f"{len(files)} file(s) OK")
    click.echo(format_summary(summarize_pairs(pairs, config.data.modules)))


@main.command()
@pair_files
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder for train/val/test.jsonl.")
@setting_option("--val-fraction", key="data.val_fraction")
@setting_option("--test-fraction", key="data.test_fraction")
@setting_option("--seed", key="data.split_seed")
@setting_option("--group-by", key="data.group_by")
@overwrite_option("Write into OUT even when it holds other files (its train/val/test.jsonl and config.yaml are replaced).")
@config_option
def split(files, out: Path, val_fraction, test_fraction, seed, group_by, overwrite, config_path) -> None:
    """Split pairs into train/val/test grouped by task.

    No task lands in two splits; each module keeps near its fraction in every split. Deterministic.
    """
    config = load_config(
        config_path,
        {"data.val_fraction": val_fraction, "data.test_fraction": test_fraction, "data.split_seed": seed, "data.group_by": group_by},
    )
    check_output_folder(out, SPLIT_FILES, "split folder", overwrite)
    pairs = load_pairs(files, config.data.modules)
    settings = config.data
    parts = split_pairs(pairs, settings.val_fraction, settings.test_fraction, settings.split_seed, settings.group_by)
    for name in SPLITS:
        write_pairs(parts[name], out / f"{name}.jsonl")
    config.save(out / "config.yaml")
    click.echo(f"wrote {', '.join(f'{name}.jsonl' for name in SPLITS)} to {out}")
    click.echo(format_split_summary(split_summary(parts, settings.modules, settings.group_by)))


SPLIT_FILES = (*(f"{name}.jsonl" for name in SPLITS), "config.yaml")


class StepRunner:
    """Runs verbs one after another as the numbered steps of a recipe (`demo`, `fit`): a header
    saying which verb and what it is for, the verb's own output, then how long it took. Every step
    reads the recipe's config file; `run_step(...)` returns what the verb's function returns."""

    def __init__(self, ctx: click.Context, config_path: Path, total: int):
        self.ctx, self.config_path, self.total, self.number = ctx, config_path, total, 0

    def __call__(self, name: str, purpose: str, command: click.Command, arguments: dict):
        self.number += 1
        click.secho(f"\n[{self.number}/{self.total}] pipeline {name} — {purpose}", bold=True)
        started = time.perf_counter()
        result = self.ctx.invoke(command, **{"config_path": self.config_path, **arguments})
        click.echo(f"({time.perf_counter() - started:.0f} s)")
        return result


DEMO_FILES = ("config.yaml", "config-no-logistic-baseline.yaml")  # the demo writes them first


@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder for everything the demo makes.")
@click.option("--pairs", "n_pairs", type=click.IntRange(min=1), default=1000, show_default=True, help="Synthetic pairs to make.")
@click.option("--encoder", default="minilm", show_default=True, help="Encoder for the embed step.")
@click.option("--max-tokens", type=click.IntRange(min=8), default=256, show_default=True, help="Token limit for contexts and module texts.")
@click.option("--finetune-steps", type=click.IntRange(min=1), default=4, show_default=True, help="Optimiser steps of the stage 1 finetune.")
@overwrite_option("Write into OUT even when it holds other files; each step's file or folder of its own name is replaced.")
@config_option
@click.pass_context
def demo(ctx: click.Context, out: Path, n_pairs: int, encoder: str, max_tokens: int, finetune_steps: int, overwrite: bool, config_path: Path | None) -> None:
    """Run the pipeline end to end on synthetic pairs.

    synth -> validate -> split -> embed (the bundled MiniLM by default) -> train-heads -> evaluate
    (on validation, which stores the reward normalisation, then on test) -> a short finetune of
    encoder and heads (stage 1) -> evaluate it on test, each step exactly as its own verb would run
    it. Reports: OUT/report-val, OUT/report-test, OUT/report-finetuned-test.
    """
    check_writable_folder(out, "--out")  # a folder that cannot be written is refused before minutes of work
    check_output_folder(out, DEMO_FILES, "demo folder", overwrite)
    pairs_file, splits, cache = out / "pairs.json", out / "splits", out / "cache"
    config = load_config(config_path, {"model.encoder": encoder, "model.max_context_tokens": max_tokens, "model.max_module_tokens": max_tokens})
    demo_config = config.save(out / "config.yaml")
    # for stage 1 the logistic-regression baseline would first embed every training text with the
    # fine-tuned encoder: two minutes on 2 CPU cores, eight times what the test texts take
    stage_1_evaluation_config = config.override({"evaluation.logistic_baseline": False}).save(out / "config-no-logistic-baseline.yaml")
    train, val, test = (splits / f"{name}.jsonl" for name in SPLITS)
    steps = [
        ("synth", f"{n_pairs} hard synthetic pairs (each negative carries a realistic fault of its module)", synth,
         {"n_pairs": n_pairs, "seed": 0, "out": pairs_file}),
        ("validate", "check the pairs and summarise them", validate, {"files": (pairs_file,)}),
        ("split", "train / val / test, no task in two splits", split, {"files": (pairs_file,), "out": splits, "overwrite": overwrite}),
        ("embed", "every unique text once into the cache (stage 0)", embed, {"files": (train, val, test), "cache_dir": cache}),
        ("train-heads", "one head per module on the cached vectors (stage 0)", train_heads,
         {"files": (train,), "val_file": val, "cache_dir": cache, "out": out / "checkpoint", "overwrite": overwrite}),
        ("evaluate", "on validation (stores the reward normalisation)", evaluate,
         {"checkpoint": out / "checkpoint", "files": (val,), "cache_dir": cache, "out": out / "report-val", "overwrite": overwrite}),
        ("evaluate", "on test (unseen tasks): the reward against its parts and the baselines", evaluate,
         {"checkpoint": out / "checkpoint", "files": (test,), "cache_dir": cache, "out": out / "report-test", "overwrite": overwrite}),
        ("finetune", f"encoder and heads together for {finetune_steps} optimiser steps (stage 1)", finetune,
         {"files": (train,), "val_file": val, "init": out / "checkpoint", "out": out / "finetuned", "max_steps": finetune_steps, "overwrite": overwrite}),
        ("evaluate", "the fine-tuned checkpoint on test (embeds with its own encoder; no logistic-regression baseline)", evaluate,
         {"checkpoint": out / "finetuned", "files": (test,), "cache_dir": cache, "out": out / "report-finetuned-test", "overwrite": overwrite, "config_path": stage_1_evaluation_config}),
    ]  # fmt: skip
    started = time.perf_counter()
    run_step = StepRunner(ctx, demo_config, len(steps))
    for name, purpose, command, arguments in steps:
        run_step(name, purpose, command, arguments)
    click.secho(f"\ndemo finished in {time.perf_counter() - started:.0f} s: outputs in {out}", bold=True)
    from heads.checkpoint import read_record

    click.secho(open_first_line(out / "report-test" / "report.md", read_record(out / "checkpoint")), bold=True)


def open_first_line(report: Path, record: "CheckpointRecord") -> str:
    """The demo's last line: which report to open first, and what the reward it reports is made of."""
    from heads.blend import blend_weights, reward_formula

    against = "its parts and the baselines" if blend_weights(record) else "the baselines"
    return f"open {report} first: the reward ({reward_formula(record)}) against {against} on unseen tasks"


@main.command()
@input_files()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder for everything fit makes (layout: pipeline/fit.py).")
@click.option("--from", "source_format", type=click.Choice(["runs", "pairs", "autogpt", "intercode", "chat"]),
              help="What FILES hold [default: runs or pairs, told apart by content]; autogpt, intercode, chat: logs `pipeline import` reads.")  # fmt: skip
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path), help="Embedding cache to use (and fill) [default: OUT/cache].")
@click.option("--max-pairs-per-task", type=click.IntRange(min=1), help=f"As `pipeline pairs`: most pairs per task and module [{MAX_PAIRS_PER_TASK}].")
@click.option("--success-threshold", type=float, help="As `pipeline pairs` (and `import chat`): read outcomes as rewards, succeeded when reward >= this.")
@click.option("--seed", type=int, help=f"As `pipeline pairs`: which pairs the cap keeps [{MINING_SEED}]. The split's seed is data.split_seed.")
@setting_option("--val-fraction", key="data.val_fraction")
@setting_option("--test-fraction", key="data.test_fraction", help="Share of pairs for test; 0: no test report.")
@setting_option("--group-by", key="data.group_by")
@setting_option("--encoder", key="model.encoder")
@setting_option("--view", key="features.view")
@setting_option("--epochs", key="stage_0.epochs")
@setting_option("--device", key="training.device")
@chat_options("With --from chat: ")
@overwrite_option("Write into OUT even when it holds other files; each step's file or folder of its own name is replaced.")
@config_option
@click.pass_context
def fit(ctx: click.Context, files, out, source_format, cache_dir, max_pairs_per_task, success_threshold, seed, val_fraction, test_fraction, group_by,
        encoder, view, epochs, device, overwrite, config_path, **chat) -> None:  # fmt: skip
    """From your agent's runs (or pairs) to a reward checkpoint, in one command.

    Runs the verbs in a row, each as it runs alone and reading one config (OUT/config.yaml: --config
    with these flags): [import KIND ->] pairs (or validate, for pairs) -> split -> embed ->
    train-heads -> evaluate on val (stores the reward normalisation) -> evaluate on test. Ends with
    the `pipeline serve` and `pipeline score` commands for OUT/checkpoint. Refuses, saying what is
    needed, when the pairs come from too few tasks to split into train, val and test.
    """
    from pipeline.fit import FIT_FILES, FitPlan, check_enough_pairs, input_kind

    config = load_config(config_path, {
        "data.val_fraction": val_fraction, "data.test_fraction": test_fraction, "data.group_by": group_by, "model.encoder": encoder,
        "features.view": view, "stage_0.epochs": epochs, "training.device": device,
    })  # fmt: skip
    check_writable_folder(out, "--out")  # before any step runs
    check_output_folder(out, FIT_FILES, "fit folder", overwrite)
    kind = input_kind(files, source_format)
    if kind != "chat":
        refuse_unused(ctx, CHAT_OPTIONS, "the chat importer's options, which apply only with --from chat")
    if kind == "pairs":
        refuse_unused(ctx, ("max_pairs_per_task", "success_threshold", "seed"), "they choose how pairs are mined from runs, and FILES are pairs already")
    mined = {"max_pairs_per_task": max_pairs_per_task, "seed": seed, "success_threshold": None if kind == "chat" else success_threshold}
    imported = {**chat, "success_threshold": success_threshold} if kind == "chat" else {}
    plan = FitPlan(files, kind, out, cache_dir or out / "cache", config.data.test_fraction > 0, imported,
                   {key: value for key, value in mined.items() if value is not None}, overwrite)  # fmt: skip
    fit_config = config.save(out / "config.yaml")
    plan.record(done=False)
    started = time.perf_counter()
    run_step = StepRunner(ctx, fit_config, plan.total_steps)
    run = lambda step: run_step(step.verb, step.purpose, _command(step.verb), step.arguments)  # noqa: E731
    for step in plan.data_steps():
        run(step)
    check_enough_pairs(plan.pair_files, config, plan.test)  # before the split: too few tasks is a refusal saying what is needed
    run(plan.split_step())
    embedded = run(plan.embed_step())
    for step in plan.model_steps(embedded.namespace):  # the namespace just filled: a shared cache may hold others
        run(step)

    commands = plan.commands()
    plan.record(done=True, seconds=round(time.perf_counter() - started, 1), checkpoint=str(plan.checkpoint), commands=commands)
    click.secho(f"\nfit finished in {time.perf_counter() - started:.0f} s: checkpoint in {plan.checkpoint}", bold=True)
    if "--normalize" in commands["serve"]:
        click.echo("its reward mean and std per module are stored (from the validation report): --normalize puts the modules on one scale")
    click.echo(f"serve the reward (POST /score, OpenRLHF's /get_reward):\n  {commands['serve']}")
    runs = "your runs (RUNS.jsonl: the run format, or --from autogpt|intercode|chat)" if kind == "pairs" else "runs"
    click.echo(f"score {runs}: each module's reward per run and per round, and the run's total:\n  {commands['score']}")
    report = plan.report("test" if plan.test else "val")
    click.secho(f"open {report / 'report.md'} first: the reward against baselines on {'tasks it never saw' if plan.test else 'the validation tasks'}", bold=True)


def _command(name: str) -> click.Command:
    """The verb `name` as typed (`pairs`, `import chat`)."""
    command = main
    for part in name.split():
        command = command.commands[part]
    return command


def _epoch_table(history: list[dict], modules: list[str]) -> str:
    """One row per epoch: losses, validation pairwise accuracy overall and per module (whole names)."""
    rows = []
    for record in history:
        val = record["val"]
        per_module = [_accuracy(val["modules"][m]["pairwise_accuracy"]) for m in modules]
        rows.append([record["epoch"], f"{record['train_loss']:.4f}", f"{val['loss']:.4f}", f"{val['pairwise_accuracy']:.3f}", *per_module])
    return aligned_table(["epoch", "train loss", "val loss", "val acc", *modules], rows, left_columns=0)


def _accuracy(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


@main.command()
@pair_files
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path), required=True, help="Embedding cache folder.")
@setting_option("--encoder", key="model.encoder")
@setting_option("--device", key="training.device")
@setting_option("--batch-size", key="model.batch_size")
@click.option("--shard", help="i/n: embed slice i of n of the missing texts (torchrun sets it from RANK/WORLD_SIZE).")
@setting_option("--view", key="features.view")
@config_option
def embed(files, cache_dir, encoder, device, batch_size, shard, view, config_path) -> None:
    """Embed every unique text once into the cache (stage 0).

    Texts already cached under this encoder's fingerprint are reused; a killed run resumes where it
    stopped. Ends with how many texts were new, reused and truncated. Under a view that cuts texts
    into pieces (chunks, rounds), the distinct pieces are what is embedded.
    """
    from pipeline.embed import embed_pairs, shard_from_environment  # torch loads only for verbs that need it

    config = load_config(config_path, {"model.encoder": encoder, "training.device": device, "model.batch_size": batch_size, "features.view": view})
    report = embed_pairs(files, cache_dir, config, shard_from_environment(shard))
    config.save(cache_dir / report.namespace / "config.yaml")
    click.echo(report.line())
    return report  # for recipes that run this verb as a step (fit reads the namespace)


@main.group("cache")
def cache_group() -> None:
    """Inspect, check and clean an embedding cache."""


cache_folder = click.argument("cache_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))


@cache_group.command("info")
@cache_folder
def cache_info(cache_dir: Path) -> None:
    """List namespaces: encoder, dimension, vectors, size on disk."""
    namespaces = EmbeddingCache(cache_dir).namespaces()
    if not namespaces:
        click.echo(f"{cache_dir}: no namespaces yet")
    for namespace in namespaces:
        info = namespace.info()
        click.echo(
            f"{info['namespace']}  {info['encoder']}  dim {info['dimension']} {info['dtype']}  "
            f"{info['vectors']} vectors in {info['shards']} shards, {info['bytes'] / 1e6:.1f} MB"
        )
    for folder in EmbeddingCache(cache_dir).old_scratch():
        click.echo(f"{folder}: scratch of a train-heads run of an earlier version, not vectors; `pipeline cache gc` removes it once an hour old")


@cache_group.command("verify")
@cache_folder
def cache_verify(cache_dir: Path) -> None:
    """Read every shard; check dimension, NaN, duplicate keys. Exit 1 on any problem."""
    problems = [p for namespace in EmbeddingCache(cache_dir).namespaces() for p in namespace.verify()]
    for problem in problems:
        click.echo(problem, err=True)
    if problems:
        raise click.ClickException(
            f"{len(problems)} problem(s) in {cache_dir}: run `pipeline cache repair {cache_dir}` to unlist the damaged shards "
            "(then `pipeline embed` encodes their texts again)"
        )
    click.echo(f"{cache_dir}: every shard reads back clean")


@cache_group.command("repair")
@cache_folder
def cache_repair(cache_dir: Path) -> None:
    """Unlist missing, unreadable or wrong shards (saying which), so the next `embed` re-encodes their texts.

    Also keeps one vector of a key stored more than once. Each namespace's manifest is rewritten
    atomically under the writer lock; a namespace whose manifest itself is damaged is refused.
    """
    namespaces = EmbeddingCache(cache_dir).namespaces()
    unlisted = dropped = 0
    for namespace in namespaces:
        shards, duplicates = namespace.repair(say=click.echo)
        unlisted, dropped = unlisted + shards, dropped + duplicates
    if unlisted or dropped:
        click.echo(f"{cache_dir}: unlisted {unlisted} shard(s), dropped {dropped} duplicate vector(s); run `pipeline embed` to encode the texts they held")
    else:
        click.echo(f"{cache_dir}: nothing to repair ({len(namespaces)} namespace(s) read back clean)")


@cache_group.command("gc")
@cache_folder
@pair_files
@config_option
def cache_gc(cache_dir: Path, files, config_path) -> None:
    """Drop vectors that the given pair files no longer reference (their texts, and the pieces
    every view cuts them into)."""
    from features.pairs import unique_texts
    from features.views import VIEWS, View, cut_texts

    config = load_config(config_path)
    texts = unique_texts(load_pairs(files, config.data.modules))
    keep = set(texts["key"].to_list())
    for name in VIEWS:
        view = View.from_config(config.override({"features.view": name}).features, config.model)
        keep.update(cut_texts(texts, view).table["key"].to_list())
    keep = sorted(keep)
    for namespace in EmbeddingCache(cache_dir).namespaces():
        dropped = namespace.gc(keep)
        click.echo(f"{namespace.id}: dropped {dropped} vectors, {len(namespace)} kept")
    for folder in EmbeddingCache(cache_dir).remove_old_scratch():
        click.echo(f"removed {folder}, scratch a killed train-heads run of an earlier version left in the cache")


def refuse_val_in_training(val_file: Path | None, files: tuple[Path, ...]) -> None:
    """--val must be pairs kept out of training: one of FILES (resolved) would validate the model
    on what it trained on, and early stopping and the reported accuracy would mean nothing."""
    from data.files import same_file

    trained_on = next((path for path in files if val_file is not None and same_file(path, val_file)), None)
    if trained_on is not None:
        raise UserError(f"--val {val_file} is the training file {trained_on}: validating on training pairs measures nothing; give pairs kept out of training, or leave --val out to carve them from FILES by task")


@main.command("train-heads")
@pair_files
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path), required=True, help="Embedding cache folder.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Checkpoint folder.")
@click.option("--val", "val_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Validation pairs (else carved from FILES by task).")
@setting_option("--epochs", key="stage_0.epochs")
@click.option("--encoder", help="Whose cached vectors to train on [model.encoder].")
@click.option("--namespace", "namespace_id", help="Cache namespace to read, when the cache holds several of the encoder.")
@click.option("--resume", type=click.Path(exists=True, file_okay=False, path_type=Path), help="Continue from this checkpoint's heads.")
@click.option("--embed-missing", is_flag=True, help="Embed texts the cache lacks instead of stopping.")
@setting_option("--device", key="training.device")
@click.option("--use-wandb", is_flag=True, help="Also log to Weights & Biases (offline unless WANDB_MODE says otherwise).")
@click.option("--search", is_flag=True, help="Try every setting of the config's `search` grid; keep the lowest validation loss (OUT/search.md).")
@setting_option("--ensemble", key="stage_0.ensemble")
@setting_option("--view", key="features.view")
@overwrite_option("Replace OUT even when it is not a checkpoint (config.json + heads.safetensors), and all it holds.")
@config_option
def train_heads(files, cache_dir, out, val_file, epochs, encoder, namespace_id, resume, embed_missing, device, use_wandb, search, ensemble, view, overwrite, config_path) -> None:
    """Train per-module heads on cached vectors (stage 0).

    Reads the cache only: seconds, not minutes. Validates per module every epoch, stops early,
    keeps the best epoch in OUT (heads.safetensors, config.json, metrics.jsonl). --search first
    tries the config's grid of head size, lr, weight decay, dropout and epochs; --ensemble K trains
    K members whose spread is the reward's uncertainty. The last line says what the checkpoint's
    reward is made of: the heads alone, or a blend of them with a linear and a TF-IDF part.
    """
    from pipeline.train_heads import train_heads as run

    config = load_config(config_path, {"stage_0.epochs": epochs, "model.encoder": encoder, "training.device": device, "stage_0.ensemble": ensemble, "features.view": view})
    refuse_val_in_training(val_file, files)
    result = run(
        files=files, cache_dir=cache_dir, out=out, config=config, val_file=val_file, resume=resume, namespace_id=namespace_id,
        embed_missing=embed_missing, search=search, use_wandb=use_wandb, say=click.echo, overwrite=overwrite,
    )  # fmt: skip
    if result.search is not None:
        from heads.search import table_rows

        click.echo(f"search: {len(result.search.rows)} settings ({sum(r['seconds'] for r in result.search.rows):.1f} s), * chosen by validation loss")
        click.echo(aligned_table(*table_rows(result.search.rows, result.search.best), left_columns=2))
    if result.members:
        validation = result.validation
        click.echo(
            f"ensemble of {len(result.members)} (members' best epochs {', '.join(str(f.best_epoch) for f in result.members)}): "
            f"val loss {validation['loss']:.4f}, val pairwise accuracy {validation['pairwise_accuracy']:.3f} of the members' mean; checkpoint in {out}"
        )
    else:
        if result.search is None:
            click.echo(_epoch_table(result.history, config.data.modules))
        click.echo(
            f"best epoch {result.best_epoch} of {len(result.history)}: val pairwise accuracy {result.validation['pairwise_accuracy']:.3f} (the heads), "
            f"{result.seconds_per_epoch:.2f} s/epoch; checkpoint in {out}"
        )
    click.echo(result.reward)  # last: what the checkpoint scores with, which may not be the heads above


@main.command()
@pair_files
@click.option("--init", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True, help="Stage 0 checkpoint: the heads to start from, and whose encoder to fine-tune.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Checkpoint folder.")
@click.option("--val", "val_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Validation pairs (else carved from FILES by task).")
@setting_option("--epochs", key="stage_1.epochs")
@setting_option("--batch-size", key="stage_1.batch_size")
@setting_option("--precision", key="stage_1.precision")
@setting_option("--gradient-checkpointing/--no-gradient-checkpointing", key="stage_1.gradient_checkpointing")
@click.option("--encoder", help="Local folder of the init checkpoint's encoder, when the name it recorded does not load here.")
@click.option("--resume", is_flag=True, help="Continue the unfinished run in OUT from its last saved state.")
@click.option("--max-steps", type=click.IntRange(min=1), help="Train at most this many optimiser steps in all (a short run), then validate and save.")
@setting_option("--save-every", "save_every_steps", key="stage_1.save_every_steps")
@setting_option("--device", key="training.device", help="cpu, cuda, cuda:1, ...; auto picks cuda when present (cuda:LOCAL_RANK under torchrun), else cpu.")
@overwrite_option("Write into OUT even when it holds other files or an unfinished run (files of the names finetune writes are replaced).")
@config_option
def finetune(files, init, out, val_file, epochs, batch_size, precision, gradient_checkpointing, encoder, resume, max_steps, save_every_steps, device, overwrite, config_path) -> None:
    """Fine-tune encoder and heads together on raw text (stage 1).

    Starts from a stage 0 checkpoint's heads and encoder; AdamW with encoder lr 1e-5 and heads lr
    1e-4, autocast, early stopping on task-grouped validation. Under torchrun it trains with
    DistributedDataParallel. OUT gets the fine-tuned encoder, heads.safetensors and config.json;
    `pipeline evaluate OUT ...` then embeds with the fine-tuned encoder into a fresh cache namespace.
    """
    from pipeline.finetune import finetune as run

    config = load_config(config_path, {
        "stage_1.epochs": epochs, "stage_1.batch_size": batch_size, "stage_1.precision": precision,
        "stage_1.gradient_checkpointing": gradient_checkpointing, "stage_1.save_every_steps": save_every_steps, "training.device": device,
    })  # fmt: skip
    refuse_val_in_training(val_file, files)
    result = run(files=files, init=init, out=out, config=config, val_file=val_file, encoder_name=encoder, resume=resume, max_steps=max_steps, overwrite=overwrite)
    if int(os.environ.get("RANK", 0)) != 0:
        return
    click.echo(f"precision {result.precision}")
    click.echo(_epoch_table(result.history, config.data.modules))
    click.echo(f"best epoch {result.best_epoch} of {result.epochs_run}: val pairwise accuracy {result.validation['pairwise_accuracy']:.3f}; checkpoint in {out}")


@main.command()
@click.argument("checkpoint", type=click.Path(exists=True, file_okay=False, path_type=Path))
@input_files(required=False)
@click.option("--runs", "runs_files", multiple=True, callback=_read_once, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Runs file (JSON Lines, data/runs.py; repeatable): report the best-of-N pick per task.")  # fmt: skip
@click.option("--success-threshold", type=float, help="Read the runs' outcomes as rewards: reward >= T succeeded.")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path), required=True, help="Embedding cache folder.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Report folder.")
@click.option("--encoder", help="Local folder of the checkpoint's encoder, when the name it recorded does not load here.")
@setting_option("--bootstrap", "bootstrap_samples", key="evaluation.bootstrap_samples")
@click.option("--store-normalization/--no-store-normalization", default=None,
              help="Store per-module reward mean/std in the checkpoint [default: only when FILES are its validation data].")  # fmt: skip
@setting_option("--device", key="training.device")
@overwrite_option("Replace OUT even when it is not a report folder (report.json + report.md), and all it holds.")
@config_option
def evaluate(checkpoint, files, runs_files, success_threshold, cache_dir, out, encoder, bootstrap_samples, store_normalization, device, overwrite, config_path) -> None:
    """Report a checkpoint's metrics, baselines and plots on pair FILES, and its best-of-N on runs.

    Says first what the checkpoint's reward is made of. Per module and overall: pairwise accuracy,
    AUC over single responses, score separation, calibration, length-debiased accuracy, bootstrap
    CIs over tasks, accuracy per source; the accuracy of each part of a blended reward alone; the
    same for a length heuristic, cosine(ctx, module), TF-IDF and a logistic regression on the heads'
    features; on pairs mined from runs, the source prior (who wrote each run) and the accuracy with
    it taken out. With --runs: the success rate of the run the heads pick per task, beside a random,
    the shortest and the longest run and the oracle. Needs FILES, --runs or both. Writes
    OUT/report.json, report.md and PNG plots.
    """
    from pipeline.evaluate import evaluate as run

    config = load_config(config_path, {"evaluation.bootstrap_samples": bootstrap_samples, "training.device": device})
    result = run(checkpoint, files, cache_dir, out, config, encoder, store_normalization, runs_files=runs_files, success_threshold=success_threshold, overwrite=overwrite)
    click.echo(f"vectors of the checkpoint's encoder {result.report['encoder']!r}: namespace {result.report['cache_namespace']} of {cache_dir}")
    for note in result.report["notes"]:
        click.echo(f"note: {note}")
    click.echo(result.table)
    stored = f"; per-module reward mean/std stored in {checkpoint / 'normalization.json'}" if result.normalization_stored else ""
    click.echo(f"report in {out} ({', '.join(['report.md', 'report.json', *result.report['plots']])}){stored}")


@main.command()
@click.argument("checkpoint", type=click.Path(exists=True, file_okay=False, path_type=Path))
@input_files("records")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Scored JSONL.")
@overwrite_option("Replace OUT (and OUT's .config.yaml) even when it is not a file `pipeline score` wrote; never one of RECORDS.")
@click.option("--from", "source_format", type=click.Choice(["runs", "autogpt", "intercode", "chat"]),
              help="Score runs from these: the run format, or logs `pipeline import` reads [default: score records or runs, told apart by content].")  # fmt: skip
@click.option("--success-threshold", type=float, help="With --from chat: read outcomes as rewards, as `pipeline import chat` does (outcomes are only passed through).")
@click.option("--round-rewards/--no-round-rewards", default=True, show_default=True,
              help="Runs: also score each round's module text alone, in the run up to that round (one more context per round to encode; a rounds-view checkpoint's per-round shares cost nothing and are always written).")  # fmt: skip
@chat_options("With --from chat: ")
@click.option("--cache", "cache_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), help="Embedding cache to read vectors from (never written).")
@setting_option("--normalize", key="serve.normalize", is_flag=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True, help="(record, module) rows per scorer call.")
@setting_option("--allow-untrained", key="serve.allow_untrained", is_flag=True)
@click.option("--encoder", help="Local folder of the checkpoint's encoder, when the name it recorded does not load here.")
@setting_option("--device", key="training.device")
@config_option
@click.pass_context
def score(ctx, checkpoint, records, out, overwrite, source_format, success_threshold, round_rewards, cache_dir, normalize, batch_size, allow_untrained, encoder, device, config_path,
          **chat) -> None:  # fmt: skip
    """Score a JSONL file of contexts and module texts, or runs.

    Score records, one per line: {"context": "...", "modules": {"planner": "...", ...}, ...}; other
    fields pass through, and OUT gets them with "scores": {"planner": reward, ...} added. Runs (the
    run format, outcome optional; or --from autogpt|intercode|chat): OUT gets one record per run,
    with each module's reward, each round's (round_rewards), the run's total (the mean over its
    scored modules) and the modules left out, and the best and worst runs are printed. Every record
    is checked first: a bad one stops the run naming file, line and field, and nothing is written.
    """
    from pipeline.rewards import load
    from pipeline.score import input_kind, score_file

    config = load_config(config_path, {"serve.normalize": normalize, "serve.allow_untrained": allow_untrained, "training.device": device})
    check_output_file(out, [*records, *(p for p in (config_path,) if p)], "scores", overwrite, CONFIG_SECTIONS)
    kind = input_kind(records, source_format)
    if kind != "chat":
        refuse_unused(ctx, (*CHAT_OPTIONS, "success_threshold"), "the chat importer's options, which apply only with --from chat")
    runs = _runs_to_score(kind, records, success_threshold, chat) if kind != "score records" else None
    scorer = load(
        checkpoint, cache_dir, normalize=config.serve.normalize, device=config.training.device, encoder=encoder,
        memory_size=config.serve.memory_size, allow_untrained=config.serve.allow_untrained,
    )  # fmt: skip
    if scorer.namespace is not None:
        scorer.namespace.check_shards()  # a damaged cache fails here, in one line, not at the first request
    if scorer.scorable_modules != scorer.modules or scorer.trained_modules != scorer.modules:
        click.echo(scorer.coverage())
    rewards = "normalised rewards" if config.serve.normalize else "rewards"
    # the config beside OUT says what scored it: the checkpoint's encoder, not the config's default
    config = config.override({"model.encoder": scorer.fingerprint.get("encoder")}, source=str(checkpoint))
    if runs is None:
        result = score_file(scorer, records[0], out, batch_size, progress=True)
        config.save(out.with_name(f"{out.stem}.config.yaml"))
        click.echo(f"scored {result.rows} module texts of {result.records} records ({rewards}; {result.encoded} texts encoded, {result.from_cache} read from the cache) into {out}")
        return
    from pipeline.score import module_fields_of, ranking, score_runs_file

    fields = module_fields_of(scorer, config.data.module_fields, "data.module_fields" in config.explicit)
    result = score_runs_file(scorer, runs, out, fields, batch_size, progress=True, round_rewards=round_rewards)
    config.save(out.with_name(f"{out.stem}.config.yaml"))
    per_round = (
        "round_rewards: each module's reward split over its rounds (rounds view); " if scorer.view.attention
        else "round_rewards: each round's module text scored alone, in the run up to that round; " if round_rewards else ""
    )  # fmt: skip
    click.echo(f"scored {len(runs)} runs ({result.rows} module texts, {rewards}; {per_round}{result.encoded} texts encoded, {result.from_cache} read from the cache) into {out}")
    mean_of = "normalised rewards" if scorer.normalize else "raw rewards (--normalize puts the modules on one scale)" if scorer.record.normalization else "raw rewards"
    click.echo(f"runs ranked by total, the mean of each run's scored modules' {mean_of}:")
    click.echo(ranking(result.records))


def _runs_to_score(kind: str, files: tuple[Path, ...], success_threshold: float | None, chat: dict):
    """The runs of FILES for `pipeline score`: read as runs (outcome optional), or imported first."""
    from data.runs import load_runs, runs_from_records
    from pipeline.score import import_runs

    if kind == "runs":
        return load_runs(files, outcome_optional=True)
    records = import_runs(kind, files, **({**chat, "success_threshold": success_threshold} if kind == "chat" else {}))
    click.echo(f"read {len(records)} runs from {len(files)} {kind} file(s)")
    return runs_from_records(records, source=f"runs imported from {kind}", outcome_optional=True)


@main.command()
@click.argument("checkpoint", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--cache", "cache_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), help="Embedding cache to read vectors from (never written).")
@setting_option("--normalize", key="serve.normalize", is_flag=True)
@setting_option("--module", key="serve.module")
@setting_option("--max-batch", key="serve.max_batch")
@setting_option("--max-wait-ms", key="serve.max_wait_ms")
@setting_option("--max-request-rows", key="serve.max_request_rows")
@setting_option("--max-body-bytes", key="serve.max_body_bytes")
@setting_option("--max-request-chars", key="serve.max_request_chars")
@setting_option("--max-pending", key="serve.max_pending")
@setting_option("--read-timeout", "read_timeout_s", key="serve.read_timeout_s")
@setting_option("--docs", key="serve.docs", is_flag=True)
@setting_option("--allow-untrained", key="serve.allow_untrained", is_flag=True)
@setting_option("--no-extra-logs", key="serve.extra_logs", is_flag=True, help="Leave extra_logs out of /get_reward's answers, for OpenRLHF 0.8.x, whose client fails on them.")
@click.option("--encoder", help="Local folder of the checkpoint's encoder, when the name it recorded does not load here.")
@setting_option("--device", key="training.device")
@config_option
def serve(checkpoint, host, port, cache_dir, normalize, module, max_batch, max_wait_ms, max_request_rows, max_body_bytes, max_request_chars, max_pending, read_timeout_s, docs, allow_untrained, no_extra_logs, encoder, device, config_path) -> None:
    """Serve rewards over HTTP (OpenRLHF, verl).

    POST /score, POST /get_reward (OpenRLHF's remote reward model), GET /health; requests that
    arrive together are scored in one batch. See pipeline/serve.py for the request formats.
    """
    from pipeline.rewards import load
    from pipeline.serve import listen, serve as run

    overrides = {
        "serve.normalize": normalize, "serve.module": module, "serve.max_batch": max_batch, "serve.max_wait_ms": max_wait_ms,
        "serve.max_request_rows": max_request_rows, "serve.max_body_bytes": max_body_bytes, "serve.max_pending": max_pending,
        "serve.max_request_chars": max_request_chars,
        "serve.read_timeout_s": read_timeout_s, "serve.docs": docs, "serve.allow_untrained": allow_untrained, "training.device": device,
        "serve.extra_logs": False if no_extra_logs else None,
    }  # fmt: skip
    config = load_config(config_path, overrides)
    settings = config.serve  # the server's limits and defaults
    sock = listen(host, port)  # a port in use fails here, in one line, before the model loads and anything says "serving"
    port = sock.getsockname()[1]  # --port 0: the free port picked
    scorer = load(
        checkpoint, cache_dir, normalize=settings.normalize, device=config.training.device, encoder=encoder,
        memory_size=settings.memory_size, allow_untrained=settings.allow_untrained,
    )  # fmt: skip
    if scorer.namespace is not None:
        scorer.namespace.check_shards()  # a damaged cache fails here, in one line, not at the first request
    if settings.module and settings.module not in scorer.modules:
        raise click.BadParameter(f"{settings.module!r} is not a module of {checkpoint} (it has: {', '.join(scorer.modules)})", param_hint="--module")
    if settings.module and scorer.refusal(settings.module):
        raise click.BadParameter(scorer.refusal(settings.module), param_hint="--module")
    scorer.warm_up()
    batching = f"micro-batches of up to {settings.max_batch} rows within {settings.max_wait_ms:g} ms" if settings.max_batch > 1 else "no micro-batching"
    if scorer.namespace is not None:
        click.echo(f"reading vectors of the checkpoint's encoder from {cache_dir}: {scorer.namespace.describe()} (namespace {scorer.namespace.id})")
    click.echo(scorer.coverage())
    if not settings.extra_logs:
        click.echo("/get_reward answers without extra_logs (serve.extra_logs: false, for OpenRLHF 0.8.x clients)")
    click.echo(f"serving {checkpoint} ({', '.join(scorer.scorable_modules)}; {'normalised' if scorer.normalize else 'raw'} rewards; {batching}) on http://{host}:{port}")
    run(scorer, settings, host, port, sock=sock)


# --- runs: import and pair mining (issue 9) ---


@main.command("pairs")
@input_files()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Output pairs: .json (array), .jsonl or .parquet.")
@click.option("--max-pairs-per-task", type=click.IntRange(min=1), default=MAX_PAIRS_PER_TASK, show_default=True, help="Most pairs per task and module.")
@click.option("--success-threshold", type=float, help="Read outcomes as rewards: succeeded when reward >= this (default: outcomes must be 1 or 0).")
@click.option("--seed", type=int, default=MINING_SEED, show_default=True, help="Which pairs the cap keeps; same seed, same pairs.")
@overwrite_option("Replace OUT (and OUT's .config.yaml) even when it is not pairs `pipeline pairs` mined; never one of FILES.")
@config_option
def pairs_command(files: tuple[Path, ...], out: Path, max_pairs_per_task: int, success_threshold: float | None, seed: int, config_path: Path | None,
                  overwrite: bool = False) -> None:  # fmt: skip
    """Mine preference pairs from runs that succeeded or failed.

    Runs are JSON Lines (format in data/runs.py; `pipeline import` makes them). For each task and
    module: a run that succeeded against a run that failed, each with its own full context;
    identical or empty module texts are skipped, at most --max-pairs-per-task pairs per task and
    module. Which round fields make up each module: data.module_fields in the config.
    """
    from data.runs import format_mining_report, load_runs, mine_pairs

    config = load_config(config_path)
    check_output_file(out, [*files, *(p for p in (config_path,) if p)], "mined pairs", overwrite, CONFIG_SECTIONS)
    runs = load_runs(files, success_threshold)
    records, report = mine_pairs(runs, config.data.modules, config.data.module_fields, max_pairs_per_task, seed)
    click.echo(format_mining_report(report))
    if not records:
        raise click.ClickException("no pairs: no task has a succeeded and a failed run with different texts for any module; nothing written")
    write_pairs(pairs_from_records(records, config.data.modules, source="mined pairs"), out)
    config.save(out.with_name(f"{out.stem}.config.yaml"))
    click.echo(f"wrote {len(records)} pairs to {out}")


@main.group("import")
def import_group() -> None:
    """Import other tools' agent logs as runs for `pipeline pairs`."""


@import_group.command("autogpt")
@input_files("reports")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Output runs (.jsonl).")
@overwrite_option("Replace OUT even when it is not runs `pipeline import` wrote; never one of the inputs.")
@config_option
def import_autogpt(reports: tuple[Path, ...], out: Path, config_path: Path | None, overwrite: bool = False) -> None:
    """AutoGPT benchmark reports (agbenchmark report.md) to runs.

    Each attempt at a challenge becomes a run: its steps' thoughts, commands and outputs as rounds
    (plan, action, observation), pass/fail as its outcome; failure reason, cost and time go to the
    run's metadata only. Runs of one challenge in different reports share a task. The config is
    read and checked like every verb's, but no setting applies here.
    """
    from data.autogpt import format_import_summary, import_reports
    from data.runs import write_runs

    load_config(config_path)
    check_output_file(out, [*reports, *(p for p in (config_path,) if p)], "imported runs", overwrite)
    runs, summary = import_reports(list(reports))
    click.echo(format_import_summary(summary, runs))
    if not runs:
        raise click.ClickException("no attempts with steps in the reports; nothing written")
    write_runs(runs, out)
    click.echo(f"wrote {len(runs)} runs to {out}")


@import_group.command("intercode")
@input_files("files")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Output runs (.jsonl).")
@overwrite_option("Replace OUT even when it is not runs `pipeline import` wrote; never one of the inputs.")
@config_option
def import_intercode(files: tuple[Path, ...], out: Path, config_path: Path | None, overwrite: bool = False) -> None:
    """InterCode result files (data/results/, .json or .json.gz) to runs.

    Each attempt becomes a run: its turns' thoughts or plan steps, actions and outputs as rounds
    (plan, action, observation), max_reward == 1 as its outcome. Rewards, the grader's messages and
    every sentence of the agent's that repeats its reward are removed; a human player's file and
    files whose harness ran Markdown fences as commands are left out. See data/intercode.py. The
    config is read and checked like every verb's, but no setting applies here.
    """
    from data.intercode import format_import_summary, import_files
    from data.runs import write_runs

    load_config(config_path)
    check_output_file(out, [*files, *(p for p in (config_path,) if p)], "imported runs", overwrite)
    runs, summary = import_files(list(files))
    click.echo(format_import_summary(summary, runs))
    if not runs:
        raise click.ClickException("no attempts left to import; nothing written")
    write_runs(runs, out)
    click.echo(f"wrote {len(runs)} runs to {out}")


@import_group.command("chat")
@input_files("files")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Output runs (.jsonl).")
@overwrite_option("Replace OUT even when it is not runs `pipeline import` wrote; never one of the inputs.")
@click.option("--success-threshold", type=float, help="Read outcomes as rewards: succeeded when reward >= this (default: outcomes must be 1/0 or true/false).")
@chat_options()
@config_option
def import_chat(
    files: tuple[Path, ...], out: Path, task_field: str, outcome_field: str, messages_field: str, success_threshold: float | None,
    opening_message: str, task_prefix: str, reflection_pattern: str | None, memory_pattern: str | None, config_path: Path | None,
    overwrite: bool = False,
) -> None:  # fmt: skip
    """Chat transcripts (OpenAI-style messages; JSON array or JSON Lines, .gz or not) to runs.

    Each record is a run; only the task, outcome and messages fields are read, nothing else of a
    record. The system prompt is left out; the opening user message is the task; each assistant
    message is a round: its text as plan, its tool calls as action, the tool results and the user's
    replies as observation. See data/chat.py. The config is read and checked like every verb's, but
    no setting applies here.
    """
    from data.chat import format_import_summary, import_files
    from data.runs import write_runs

    load_config(config_path)
    check_output_file(out, [*files, *(p for p in (config_path,) if p)], "imported runs", overwrite)
    runs, summary = import_files(
        list(files), task_field=task_field, outcome_field=outcome_field, messages_field=messages_field, success_threshold=success_threshold,
        opening_message=opening_message, task_prefix=task_prefix, reflection_pattern=reflection_pattern, memory_pattern=memory_pattern,
    )  # fmt: skip
    click.echo(format_import_summary(summary, runs))
    if not runs:
        raise click.ClickException("no records in the files; nothing written")
    write_runs(runs, out)
    click.echo(f"wrote {len(runs)} runs to {out}")


if __name__ == "__main__":
    main()
