"""The `pipeline` command as users run it: installed console script and click verbs."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner
from reward_checkpoint import record_of

from cache import EmbeddingCache
from data import load_pairs
from pipeline import __version__
from pipeline.cli import main, open_first_line

FIXTURE = Path(__file__).parent / "fixtures" / "pairs_original.json"
VERBS = ["cache", "demo", "embed", "evaluate", "finetune", "fit", "import", "pairs", "score", "serve", "split", "synth", "train-heads", "validate"]


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_installed_console_script_lists_every_verb_with_help():
    script = shutil.which("pipeline", path=str(Path(sys.executable).parent))
    assert script, "the `pipeline` console script is not installed next to this python"
    result = subprocess.run([script, "--help"], capture_output=True, text=True, check=True)
    listed = [line.split()[0] for line in result.stdout.split("Commands:")[1].strip().splitlines()]
    assert listed == VERBS
    version = subprocess.run([script, "--version"], capture_output=True, text=True, check=True)
    assert __version__ in version.stdout


@pytest.mark.parametrize("verb", [v for v in VERBS if v not in ("cache", "import")] + ["cache gc", "import autogpt", "import intercode", "import chat"])
def test_every_verb_takes_a_config_file(verb):
    result = run(*verb.split(), "--help")
    assert result.exit_code == 0 and "--config" in result.output


def test_validate_prints_a_summary_of_valid_pairs():
    result = run("validate", FIXTURE)
    assert result.exit_code == 0, result.output
    assert "4 pairs over 1 distinct tasks" in result.output
    assert "pairs per module: reflection 1, planner 1, executor 1, memory 1" in result.output
    assert "context length (chars): p50" in result.output


def test_validate_lists_every_problem_and_exits_nonzero(tmp_path):
    records = json.loads(FIXTURE.read_text())
    records[1]["negative"]["outcome"] = 1
    records[3]["target_module"] = "critic"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(records))
    result = run("validate", bad)
    assert result.exit_code == 1
    assert f"{bad}, record 1, pair_id 'flight-osl-fco-planner', field 'negative.outcome'" in result.output
    assert f"{bad}, record 3, pair_id 'flight-osl-fco-reflection', field 'target_module'" in result.output


def test_split_on_bad_data_fails_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(FIXTURE.read_text().replace('"outcome": 0', '"outcome": 1', 1))
    out = tmp_path / "splits"
    result = run("split", bad, "--out", out)
    assert result.exit_code == 1 and "contradicts the pair" in result.output
    assert not out.exists()


def test_synth_writes_valid_pairs_in_the_original_format(tmp_path):
    out = tmp_path / "pairs.json"
    result = run("synth", "--pairs", 40, "--seed", 1, "--out", out)
    assert result.exit_code == 0, result.output
    records = json.loads(out.read_text())
    assert len(records) == 40
    assert set(records[0]) >= {"pair_id", "target_module", "task", "positive", "negative"}
    assert set(records[0]["positive"]) >= {"trajectory_full_context", "module_k_all_rounds", "outcome"}
    assert (tmp_path / "pairs.config.yaml").exists()


def test_split_writes_three_task_disjoint_files_and_its_config(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    assert run("synth", "--pairs", 400, "--out", pairs).exit_code == 0
    result = run("split", pairs, "--out", tmp_path / "splits", "--val-fraction", 0.2, "--test-fraction", 0.2)
    assert result.exit_code == 0, result.output
    parts = {name: load_pairs(tmp_path / "splits" / f"{name}.jsonl") for name in ("train", "val", "test")}
    assert sum(p.height for p in parts.values()) == 400
    assert not set(parts["train"]["task"]) & set(parts["test"]["task"])
    assert (tmp_path / "splits" / "config.yaml").exists()

    # the summary: an aligned plain table (no DataFrame box), whole module names, a total row
    printed = result.output.splitlines()[1:]
    assert printed[0].split() == ["split", "pairs", "tasks", "reflection", "planner", "executor", "memory"]
    for line, name in zip(printed[1:5], ("train", "val", "test", "total")):
        part = pl.concat(parts.values()) if name == "total" else parts[name]
        per_module = [part.filter(pl.col("target_module") == m).height for m in ("reflection", "planner", "executor", "memory")]
        assert line.split() == [name, str(part.height), str(part["task"].n_unique()), *map(str, per_module)]
    assert {len(line) for line in printed[:5]} == {len(printed[0])}
    assert printed[5] == "no task is in two splits: val and test hold only tasks that train does not" and len(printed) == 6


@pytest.mark.slow
def test_demo_runs_end_to_end_and_its_heads_learn_the_faults(tmp_path):
    """The README's first command, as a user runs it: 1000 hard synthetic pairs, MiniLM at 256 tokens.
    The heads must learn something real: training loss falls, and pairwise accuracy on the
    held-out, task-grouped validation split is well above chance (0.67 measured, held to within
    0.05; 0.5 is chance)."""
    result = run("demo", "--out", tmp_path / "demo")
    assert result.exit_code == 0, result.output
    for name in ("pairs.json", "splits/train.jsonl", "splits/val.jsonl", "splits/test.jsonl", "splits/config.yaml", "checkpoint/heads.safetensors"):
        assert (tmp_path / "demo" / name).stat().st_size > 0, name
    assert "[4/9] pipeline embed — every unique text once into the cache" in result.output
    assert "[6/9] pipeline evaluate — on validation (stores the reward normalisation)" in result.output
    assert "[7/9] pipeline evaluate — on test (unseen tasks)" in result.output
    assert "[9/9] pipeline evaluate — the fine-tuned checkpoint on test" in result.output
    trained = json.loads((tmp_path / "demo" / "checkpoint" / "config.json").read_text())
    formula = " + ".join(f"{trained['blend'][part]['weight']:g} × {name}" for part, name in (("heads", "heads"), ("linear", "linear"), ("tfidf", "TF-IDF")) if trained["blend"][part]["weight"])
    assert result.stdout.splitlines()[-1] == f"open {tmp_path / 'demo' / 'report-test' / 'report.md'} first: the reward ({formula}) against its parts and the baselines on unseen tasks"
    namespaces = EmbeddingCache(tmp_path / "demo" / "cache").namespaces()
    (minilm,) = [n for n in namespaces if n.fingerprint["encoder"] == "minilm"]
    assert len(namespaces) == 2 and minilm.verify() == []  # MiniLM's, and the fine-tuned encoder's from the last step

    history = [json.loads(line) for line in (tmp_path / "demo" / "checkpoint" / "metrics.jsonl").read_text().splitlines()]
    assert history[-1]["train_loss"] < history[0]["train_loss"] - 0.1
    best = trained["metrics"]["val"]
    assert best["n_pairs"] == 100 and best["pairwise_accuracy"] >= 0.62

    # evaluate: on validation it agrees with training (the heads blended with their linear and
    # TF-IDF parts at the weights train-heads chose) and stores the normalisation; on test it reports
    val_report = json.loads((tmp_path / "demo" / "report-val" / "report.json").read_text())
    chosen = trained["blend_choice"]["chosen"]
    assert trained["blend_choice"]["rule"] == "shrink"  # the default: the best grid point moved toward equal weights
    assert chosen["pairwise_accuracy"] >= trained["blend_choice"]["parts_alone"]["heads"]  # on the held-out pairs it was chosen on
    assert abs(val_report["overall"]["pairwise_accuracy"] - chosen["val_pairwise_accuracy"]) < 1e-6
    assert (tmp_path / "demo" / "checkpoint" / "normalization.json").is_file()
    test_report = json.loads((tmp_path / "demo" / "report-test" / "report.json").read_text())
    assert test_report["n_pairs"] == 100 and set(test_report["overall"]["baselines"]) == {"length", "cosine", "tfidf", "logistic_regression"}
    assert (tmp_path / "demo" / "report-test" / "roc.png").stat().st_size > 5000

    # a short stage 1: the fine-tuned encoder and heads, validated like stage 0
    finetuned = json.loads((tmp_path / "demo" / "finetuned" / "config.json").read_text())
    assert finetuned["stage"] == 1 and finetuned["metrics"]["val"]["n_pairs"] == 100
    assert (tmp_path / "demo" / "finetuned" / "encoder" / "modules.json").is_file()

    # and its own report on the test tasks, embedded with the fine-tuned encoder into a namespace of its own
    stage_1_report = json.loads((tmp_path / "demo" / "report-finetuned-test" / "report.json").read_text())
    assert stage_1_report["n_pairs"] == 100 and stage_1_report["cache_namespace"] != test_report["cache_namespace"]
    assert stage_1_report["embedded_texts"] > 0 and set(stage_1_report["overall"]["baselines"]) == {"length", "cosine", "tfidf"}


def test_the_demos_last_line_names_the_report_and_what_its_reward_is_made_of():
    blended = {"blend": {"heads": {"weight": 0.0, "mean": 0.0, "std": 1.0}, "linear": {"weight": 0.5, "mean": 0.0, "std": 1.0},
                         "tfidf": {"weight": 0.5, "mean": 0.0, "std": 1.0}, "files": []}}  # fmt: skip
    report = Path("demo-run/report-test/report.md")
    assert open_first_line(report, record_of(blended)) == "open demo-run/report-test/report.md first: the reward (0.5 × linear + 0.5 × TF-IDF) against its parts and the baselines on unseen tasks"
    assert open_first_line(report, record_of({})) == "open demo-run/report-test/report.md first: the reward (the heads alone) against the baselines on unseen tasks"


def test_split_writes_into_a_folder_of_other_files_only_with_overwrite_and_reruns_over_its_own(tmp_path):
    out = tmp_path / "splits"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert run("split", FIXTURE, "--out", out, "--overwrite").exit_code == 0
    assert (out / "train.jsonl").is_file() and (out / "notes.txt").read_text() == "mine"
    assert run("split", FIXTURE, "--out", out).exit_code == 0
