"""The docs keep their promises: README.md stays a short front page that starts with the two
commands for a fresh machine, every relative link in README.md and docs/ resolves, and the
generated CLI reference is what `python docs/gen_reference.py` writes today."""

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# Pages another change is about to add: a link to one of these may dangle until that change is
# merged, and only while the file does not exist. The merger removes the entry.
PENDING = {"docs/reference/config.md"}

# The two commands a fresh machine starts with: install and the demo; install with the dev extras and the tests.
FIRST_COMMANDS = [
    "bash install.sh && .venv/bin/pipeline demo --out demo-run",
    "bash install.sh --dev && .venv/bin/python -m pytest -q",
]

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|!\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


def pages() -> list[Path]:
    return [README, *sorted((ROOT / "docs").rglob("*.md"))]


def relative_links(page: Path) -> list[str]:
    """The link targets of a markdown page, outside code blocks and code spans, that are not URLs."""
    text = FENCE.sub("", page.read_text())
    text = re.sub(r"`[^`\n]*`", "", text)
    targets = [a or b for a, b in LINK.findall(text)]
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def anchors(page: Path) -> set[str]:
    """The heading anchors GitHub makes for a page: lower case, punctuation dropped, spaces to hyphens,
    a repeated heading numbered -1, -2, ..."""
    seen: dict[str, int] = {}
    slugs = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", FENCE.sub("", page.read_text()), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        seen[slug] = seen.get(slug, -1) + 1
        slugs.add(slug if seen[slug] == 0 else f"{slug}-{seen[slug]}")
    return slugs


def test_every_relative_link_resolves():
    broken = []
    for page in pages():
        for target in relative_links(page):
            file, _, anchor = target.partition("#")
            path = (page.parent / file).resolve()
            rel = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)
            if not path.exists():
                if rel not in PENDING:
                    broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and path.suffix == ".md" and anchor not in anchors(path):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading in {rel})")
    assert not broken, "links that do not resolve:\n" + "\n".join(broken)


def test_links_are_found():
    """The link checker sees links at all (a regex that matched nothing would pass every page)."""
    assert "docs/index.md" in relative_links(README)
    assert len(relative_links(ROOT / "docs" / "index.md")) >= 8


def test_readme_is_a_short_front_page():
    size = len(README.read_bytes())
    assert size <= 12 * 1024, f"README.md is {size} bytes, over 12 KB: move the detail to a page in docs/"


def test_readme_starts_with_the_two_commands():
    text = README.read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert first_block and text.index("```bash") < text.index("\n## "), "the first thing under the title is the commands block"
    assert first_block.group(1).strip().splitlines() == FIRST_COMMANDS


def test_cli_reference_is_current():
    spec = importlib.util.spec_from_file_location("gen_reference", ROOT / "docs" / "gen_reference.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    committed = (ROOT / "docs" / "reference" / "cli.md").read_text()
    assert committed == gen.cli_reference(), "docs/reference/cli.md is out of date: run python docs/gen_reference.py"
