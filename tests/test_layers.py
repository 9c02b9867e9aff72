"""The packages depend on each other one way only: data <- features, cache <- heads <- pipeline.
Every import of every module counts, those inside functions too."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("data", "features", "cache", "heads", "pipeline")
ALLOWED = {
    "data": set(),
    "features": {"data"},  # the cache only through features.pairs.VectorSource / features.embedding.VectorSink
    "cache": {"data"},
    "heads": {"data", "features"},
    "pipeline": {"data", "features", "cache", "heads"},
}


def imported_packages(path: Path) -> dict[str, int]:
    """Our packages that the module at `path` imports, each with the first line that does."""
    found = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in PACKAGES:
                found.setdefault(top, node.lineno)
    return found


def wrong_arrows() -> list[str]:
    wrong = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for imported, line in imported_packages(path).items():
                if imported != package and imported not in ALLOWED[package]:
                    wrong.append(f"{path.relative_to(ROOT)}:{line} imports {imported}")
    return wrong


def test_every_import_points_down_the_layers():
    assert wrong_arrows() == []


def test_the_check_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from pipeline.embed import embed_pairs\n    import cache.store\n")
    assert imported_packages(module) == {"pipeline": 2, "cache": 3}


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_has_modules_to_check(package):
    assert list((ROOT / package).rglob("*.py")), package


@pytest.mark.slow  # a subprocess or several trainings: the full suite runs it, the fast lane stays quick
def test_importing_the_library_leaves_the_openmp_policy_alone():
    """Only running the `pipeline` command sets OMP_WAIT_POLICY; a library user's process keeps its
    own (torch and scikit-learn set variables of their own at import, which is theirs)."""
    modules = [
        ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if path.name != "__init__.py" and path.name != "verl_manager.py"  # a verl reward manager: imports verl, tested in its environment
    ]
    script = f"import os\nfor m in {modules!r}: __import__(m)\nprint(os.environ.get('OMP_WAIT_POLICY'))"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    changed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT, check=True).stdout
    assert changed.strip() == "None"



MAX_FUNCTION_LINES = 80  # a recipe reads top to bottom (setup, training, checkpoint) in functions of a screen or so


def long_functions(path: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """The functions of the module at `path` longer than `limit` lines, from `def` to their last
    line (nested functions count in the one that holds them, too): "name:line (n lines)"."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - node.lineno + 1
            if lines > limit:
                found.append(f"{node.name}:{node.lineno} ({lines} lines)")
    return found


def test_no_function_in_pipeline_is_over_80_lines():
    too_long = [f"{path.relative_to(ROOT)}: {f}" for path in sorted((ROOT / "pipeline").rglob("*.py")) for f in long_functions(path)]
    assert too_long == []


def test_the_length_check_counts_nested_functions_in_the_one_that_holds_them(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def outer():\n    def inner():\n        return 1\n\n    return inner\n")
    assert long_functions(module, limit=5) == [] and long_functions(module, limit=4) == ["outer:1 (5 lines)"]
