"""The `pipeline` command: one verb per step of JSON pairs -> cache -> heads -> report -> rewards.

    pipeline synth --pairs 2000 --seed 0 --out pairs.json
    pipeline validate pairs.json
    pipeline split pairs.json --out splits/
    pipeline demo --out demo-run/

Every verb takes `--config FILE.yaml` (see pipeline/config.py); its flags override the file.
"""

from pathlib import Path

import click

from data import DataError, load_pairs, pairs_from_records, write_pairs
from data.splits import SPLITS, split_pairs, split_summary
from data.summary import format_summary, summarize_pairs
from pipeline import __version__
from pipeline.config import ConfigError, load_config


class _Group(click.Group):
    """Turns our own input errors into a clear message and exit code 1, not a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (DataError, ConfigError) as e:
            raise click.ClickException(str(e)) from e


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="pipeline")
def main() -> None:
    """Train per-module reward models (reflection, planner, executor, memory) for LLM agents and
    serve their scores to RL frameworks."""


def config_option(function):
    return click.option(
        "--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="YAML config (sections model, data, cache, stage_0, stage_1, loss, training, evaluation); flags override it.",
    )(function)


pair_files = click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))


@main.command()
@click.option("--pairs", "n_pairs", type=click.IntRange(min=1), default=1000, show_default=True, help="Number of pairs.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same pairs.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Output: .json (array), .jsonl or .parquet.")
@config_option
def synth(n_pairs: int, seed: int, out: Path, config_path: Path | None) -> None:
    """Write hard synthetic pairs.

    Positive and negative share the task and most of their text; the negative carries a realistic
    fault of its module (a misordered plan, a wrong tool, a stale memory, a wrong diagnosis).
    """
    from data.synth import generate_pairs

    config = load_config(config_path)
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
@click.option("--val-fraction", type=click.FloatRange(0, 1, max_open=True), help="Share of pairs for validation [data.val_fraction].")
@click.option("--test-fraction", type=click.FloatRange(0, 1, max_open=True), help="Share of pairs for test [data.test_fraction].")
@click.option("--seed", type=int, help="Split seed [data.split_seed].")
@click.option("--group-by", help="Column no two splits share [data.group_by: task].")
@config_option
def split(files, out: Path, val_fraction, test_fraction, seed, group_by, config_path) -> None:
    """Split pairs into train/val/test grouped by task.

    No task lands in two splits; each module keeps near its fraction in every split. Deterministic.
    """
    config = load_config(
        config_path,
        {"data.val_fraction": val_fraction, "data.test_fraction": test_fraction, "data.split_seed": seed, "data.group_by": group_by},
    )
    pairs = load_pairs(files, config.data.modules)
    settings = config.data
    try:
        parts = split_pairs(pairs, settings.val_fraction, settings.test_fraction, settings.split_seed, settings.group_by)
    except ValueError as e:
        raise click.ClickException(str(e)) from e
    for name in SPLITS:
        write_pairs(parts[name], out / f"{name}.jsonl")
    config.save(out / "config.yaml")
    click.echo(f"wrote {', '.join(f'{name}.jsonl' for name in SPLITS)} to {out}")
    click.echo(str(split_summary(parts, settings.group_by)))


@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder for everything the demo makes.")
@click.option("--pairs", "n_pairs", type=click.IntRange(min=1), default=2000, show_default=True, help="Synthetic pairs to make.")
@config_option
@click.pass_context
def demo(ctx: click.Context, out: Path, n_pairs: int, config_path: Path | None) -> None:
    """Run the pipeline end to end on synthetic pairs.

    synth -> validate -> split, each step exactly as its own verb would run it.
    """
    pairs_file = out / "pairs.json"
    steps = [
        ("synth", synth, {"n_pairs": n_pairs, "seed": 0, "out": pairs_file}),
        ("validate", validate, {"files": (pairs_file,)}),
        ("split", split, {"files": (pairs_file,), "out": out / "splits"}),
    ]
    for number, (name, command, arguments) in enumerate(steps, start=1):
        click.secho(f"\n[{number}/{len(steps)}] pipeline {name}", bold=True)
        ctx.invoke(command, config_path=config_path, **arguments)
    click.secho(f"\ndemo finished: outputs in {out}", bold=True)


# --- verbs whose stages land in later issues; names and flags are the stable contract ----------


def _not_yet(verb: str, issue: int) -> None:
    raise click.ClickException(f"`pipeline {verb}` is not available in version {__version__} yet (it lands with issue #{issue}).")


@main.command()
@pair_files
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path), required=True, help="Embedding cache folder.")
@click.option("--encoder", help="Model id, local folder, or `minilm` (bundled all-MiniLM-L6-v2) [model.encoder].")
@config_option
def embed(files, cache_dir, encoder, config_path) -> None:
    """Embed every unique text once into the cache (stage 0)."""
    _not_yet("embed", 4)


@main.command("train-heads")
@pair_files
@click.option("--cache", type=click.Path(file_okay=False, path_type=Path), required=True, help="Embedding cache folder.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Checkpoint folder.")
@click.option("--val", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Validation pairs (else carved from FILES by task).")
@click.option("--epochs", type=click.IntRange(min=1), help="Epochs [stage_0.epochs].")
@config_option
def train_heads(files, cache, out, val, epochs, config_path) -> None:
    """Train per-module heads on cached vectors (stage 0)."""
    _not_yet("train-heads", 5)


@main.command()
@pair_files
@click.option("--init", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True, help="Stage 0 checkpoint.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Checkpoint folder.")
@click.option("--epochs", type=click.IntRange(min=1), help="Epochs [stage_1.epochs].")
@config_option
def finetune(files, init, out, epochs, config_path) -> None:
    """Fine-tune encoder and heads on raw text (stage 1)."""
    _not_yet("finetune", 6)


@main.command()
@click.argument("checkpoint", type=click.Path(exists=True, file_okay=False, path_type=Path))
@pair_files
@click.option("--cache", type=click.Path(file_okay=False, path_type=Path), required=True, help="Embedding cache folder.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Report folder.")
@config_option
def evaluate(checkpoint, files, cache, out, config_path) -> None:
    """Report a checkpoint's metrics, baselines and plots."""
    _not_yet("evaluate", 7)


@main.command()
@click.argument("checkpoint", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("records", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Scored JSONL.")
@config_option
def score(checkpoint, records, out, config_path) -> None:
    """Score a JSONL file of contexts and module texts."""
    _not_yet("score", 8)


@main.command()
@click.argument("checkpoint", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@config_option
def serve(checkpoint, host, port, config_path) -> None:
    """Serve rewards over HTTP (OpenRLHF, verl)."""
    _not_yet("serve", 8)
