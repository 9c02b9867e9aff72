"""Generate docs/reference/cli.md from the `pipeline` click group, so the CLI reference cannot drift
from the code. Run from the repository root after changing a command, an option or its help:

    python docs/gen_reference.py            # rewrites docs/reference/cli.md
    python docs/gen_reference.py --check    # exit 1 when the committed file differs

`tests/test_docs.py` fails when the committed file is not what this writes."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI_MD = ROOT / "docs" / "reference" / "cli.md"
WIDTH = 100  # a fixed width, so the output does not depend on the terminal that runs this


def _help_text(command) -> str:
    """The command's help as click shows it: up to a form feed, `\\b` markers dropped."""
    import inspect

    text = inspect.cleandoc(command.help or "").split("\f")[0]
    return "\n".join(line for line in text.splitlines() if line.strip() != "\b").strip()


def _render(command, ctx, path: str, out: list[str]) -> None:
    import click

    pieces = command.collect_usage_pieces(ctx)
    out += [f"## `{path}`", "", "```", " ".join([path, *pieces]), "```", ""]
    if text := _help_text(command):
        out += [text, ""]
    records = [p.get_help_record(ctx) for p in command.get_params(ctx) if isinstance(p, click.Option)]
    records = [r for r in records if r]
    arguments = [p for p in command.params if isinstance(p, click.Argument)]
    if arguments:
        out += ["Arguments: " + ", ".join(f"`{a.make_metavar(ctx) if _takes_ctx(a) else a.make_metavar()}`" for a in arguments), ""]
    if records:
        out += ["| option | what |", "|---|---|"]
        out += [f"| `{_cell(name)}` | {_cell(help_)} |" for name, help_ in records]
        out.append("")
    if isinstance(command, click.Group):
        for name in sorted(command.list_commands(ctx)):
            sub = command.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            with click.Context(sub, info_name=name, parent=ctx, terminal_width=WIDTH, max_content_width=WIDTH) as sub_ctx:
                _render(sub, sub_ctx, f"{path} {name}", out)


def _takes_ctx(argument) -> bool:
    """click 8.2 passes the context to make_metavar; earlier versions take none."""
    import inspect

    return "ctx" in inspect.signature(argument.make_metavar).parameters


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def cli_reference() -> str:
    """docs/reference/cli.md: every `pipeline` command's usage, help and options, as markdown."""
    import click

    sys.path.insert(0, str(ROOT))
    from pipeline.cli import main

    out = [
        "# CLI reference",
        "",
        "Generated from the code by `python docs/gen_reference.py`; do not edit by hand.",
        "Every verb also takes `-h` / `--help`. Settings in brackets, such as `[stage_0.epochs]`, are config keys:",
        "see the [config reference](config.md).",
        "",
    ]
    settings = {**main.context_settings, "terminal_width": WIDTH, "max_content_width": WIDTH}
    with click.Context(main, info_name="pipeline", **settings) as ctx:
        out += ["Commands: " + ", ".join(f"`{name}`" for name in sorted(main.list_commands(ctx))), ""]
        _render(main, ctx, "pipeline", out)
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    text = cli_reference()
    if "--check" in sys.argv[1:]:
        same = CLI_MD.exists() and CLI_MD.read_text() == text
        print(f"{CLI_MD.relative_to(ROOT)} is {'up to date' if same else 'out of date: run python docs/gen_reference.py'}")
        sys.exit(0 if same else 1)
    CLI_MD.parent.mkdir(parents=True, exist_ok=True)
    CLI_MD.write_text(text)
    print(f"wrote {CLI_MD.relative_to(ROOT)}")
