"""Stage 1: the encoder's training forward equals `embed`'s vectors, batches encode each text once,
loss falls, autocast paths run on CPU, a killed run resumes to the same result, two gloo processes
follow one process's loss, and the checkpoint evaluates."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from data import load_pairs, pairs_from_records, write_pairs
from data.synth import generate_pairs
from features.encoder import TextEncoder
from heads.finetuning import PairColumns, TextBatch, epoch_batches
from heads.model import CheckpointError, MultiModuleRewardModel
from heads.training import PairTensors, evaluate_pairs
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.embed import embed_pairs
from data import UserError
from pipeline.finetune import finetune
from pipeline.evaluate_scoring import cached_pair_vectors
from pipeline.rewards import load
from pipeline.train_heads import train_heads

ROOT = Path(__file__).resolve().parents[1]


def make_stage0(root: Path, encoder: str, n_pairs: int = 48, tokens: int = 48) -> Path:
    """Pairs, a cache and a stage 0 checkpoint made by the real recipes (heads without dropout, so
    that runs can be compared step by step)."""
    root.mkdir(parents=True, exist_ok=True)
    records = generate_pairs(n_pairs, seed=7)
    n_val = n_pairs // 4
    write_pairs(pairs_from_records(records[: n_pairs - n_val]), root / "train.jsonl")
    write_pairs(pairs_from_records(records[n_pairs - n_val :]), root / "val.jsonl")
    overrides = {
        "model.encoder": encoder, "model.max_context_tokens": tokens, "model.max_module_tokens": tokens, "model.dropout": 0.0,
        "stage_0.epochs": 1, "stage_0.batch_size": 16, "training.device": "cpu",
    }  # fmt: skip
    config = load_config(overrides=overrides)
    embed_pairs([root / "train.jsonl", root / "val.jsonl"], root / "cache", config, progress=False)
    train_heads(files=[root / "train.jsonl"], cache_dir=root / "cache", out=root / "stage0", config=config, val_file=root / "val.jsonl", progress=False)
    return root


def stage1_config(**overrides):
    base = {"stage_1.epochs": 2, "stage_1.batch_size": 4, "stage_1.precision": "fp32", "training.device": "cpu", "evaluation.bootstrap_samples": 50}
    return load_config(overrides={**base, **overrides})


@pytest.fixture(scope="module")
def qwen(tmp_path_factory, tiny_qwen3_path):
    return make_stage0(tmp_path_factory.mktemp("ft-qwen"), str(tiny_qwen3_path))


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    return make_stage0(tmp_path_factory.mktemp("ft-minilm"), "minilm", n_pairs=32)


@pytest.mark.parametrize("which", ["minilm", "tiny_qwen3"])
def test_training_forward_gives_the_vectors_embed_gives(which, tiny_qwen3_path):
    """Same prompt, cut, padding side and pooling: stage 0 heads meet the vectors they know."""
    name = "minilm" if which == "minilm" else str(tiny_qwen3_path)
    encoder = TextEncoder.load(name, device="cpu", max_context_tokens=40, max_module_tokens=24)
    texts = [r["positive"]["trajectory_full_context"] for r in generate_pairs(6, seed=1)] + ["short one", "a bit longer text"]
    for role in ("context", "module"):
        expected, _ = encoder.encode(texts, role)
        encoder.model.eval()
        with torch.no_grad():
            got = encoder.forward(texts, role).numpy()
        np.testing.assert_allclose(got, expected, atol=1e-5)
    if which == "tiny_qwen3":
        assert encoder.padding_side == "left" and encoder.prompts["context"].startswith("Instruct:")


def test_a_batch_encodes_each_unique_text_once():
    records = generate_pairs(8, seed=3)  # 2 tasks x 4 modules: a task's positive context is shared
    pairs = pairs_from_records(records)
    model = MultiModuleRewardModel(8, ["reflection", "planner", "executor", "memory"])
    columns = PairColumns(pairs)
    batch = TextBatch.of(columns, list(range(8)), model)
    contexts = set(pairs["positive_context"]) | set(pairs["negative_context"])
    assert len(batch.contexts) == len(contexts) < 16
    assert len(batch.module_texts) == len(set(pairs["positive_module_text"]) | set(pairs["negative_module_text"]))
    for i in range(8):  # the indices give every pair back its own texts
        assert batch.contexts[batch.positive_context[i]] == columns.positive_context[i]
        assert batch.contexts[batch.negative_context[i]] == columns.negative_context[i]
        assert batch.module_texts[batch.negative_module_text[i]] == columns.negative_module_text[i]


def test_ranks_share_one_global_batch_order():
    single = epoch_batches(24, 4, epoch=3, seed=0)
    ranks = [epoch_batches(24, 2, epoch=3, seed=0, rank=r, world_size=2) for r in range(2)]
    assert [sorted(b) for b in single] == [sorted(a + b) for a, b in zip(*ranks)]
    assert epoch_batches(24, 4, epoch=4, seed=0) != single  # a new shuffle each epoch


@pytest.mark.slow
def test_loss_falls_and_the_checkpoint_evaluates_with_its_own_encoder(minilm, tmp_path):
    """Validating on the training pairs themselves: their loss under the stage 0 heads and frozen
    encoder, then after each epoch of stage 1 (0.47 -> 0.43, 0.41, 0.41 measured)."""
    train = minilm / "train.jsonl"
    stage0 = load(minilm / "stage0", minilm / "cache", device="cpu")
    vectors, _ = cached_pair_vectors(stage0, load_pairs(train))
    before = evaluate_pairs(stage0.model.heads, PairTensors.from_vectors(vectors, stage0.model.heads), 0.1, 0.1)["loss"]

    out = tmp_path / "ft"
    result = finetune(files=[train], init=minilm / "stage0", out=out, config=stage1_config(**{"stage_1.epochs": 3}), val_file=train, progress=False)
    losses = [r["val"]["loss"] for r in result.history]
    assert len(losses) == 3 and losses[0] < before and losses[-1] < before - 0.04 and losses[-1] <= losses[0], (before, losses)
    for name in ("heads.safetensors", "config.json", "metrics.jsonl", "config.yaml", "encoder/config_sentence_transformers.json"):
        assert (out / name).is_file(), name
    assert not (out / "resume").exists()  # the run finished: its resumable state is gone

    saved = json.loads((out / "config.json").read_text())
    assert saved["stage"] == 1 and saved["encoder_fingerprint"]["weights"] != stage0.fingerprint["weights"]
    assert saved["format_version"] == 2 and saved["epochs_run"] == 3 and saved["init_checkpoint"] == str(minilm / "stage0")  # stage 0's writer
    shutil.copytree(minilm / "cache", tmp_path / "cache")
    evaluated = CliRunner().invoke(main, ["evaluate", str(out), str(train), "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "report"), "--bootstrap", "50"])
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["embedded_texts"] > 0 and report["cache_namespace"] != stage0.namespace.id  # a fresh namespace
    assert report["overall"]["pairwise_accuracy"] == pytest.approx(result.validation["pairwise_accuracy"])
    assert (out / "normalization.json").is_file()  # its validation data: stored


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_autocast_paths_run_on_cpu(qwen, tmp_path, precision):
    """bf16 autocast, and fp16 with the GradScaler that CUDA fp16 needs, exercised on the CPU."""
    out = tmp_path / precision
    config = stage1_config(**{"stage_1.precision": precision, "stage_1.epochs": 1, "stage_1.save_every_steps": 1})
    result = finetune(files=[qwen / "train.jsonl"], init=qwen / "stage0", out=out, config=config, val_file=qwen / "val.jsonl", max_steps=2, progress=False)
    assert result.precision == precision and all(np.isfinite(result.history[0]["step_losses"]))
    assert json.loads((out / "config.json").read_text())["precision"] == precision


@pytest.mark.slow
def test_fp16_scaler_state_is_saved_for_resume(qwen, tmp_path):
    out = tmp_path / "fp16"
    config = stage1_config(**{"stage_1.precision": "fp16", "stage_1.save_every_steps": 1})
    killed = _run_and_kill(qwen, out, config_overrides=["--precision", "fp16", "--save-every", "1"], after_step=2)
    assert killed
    state = torch.load(out / "resume" / "training_state.pt", weights_only=True)
    assert state["scaler"]["scale"] > 0 and state["scaler"]["_growth_tracker"] >= 1
    finetune(files=[qwen / "train.jsonl"], init=qwen / "stage0", out=out, config=config, val_file=qwen / "val.jsonl", resume=True, progress=False)


def _run_and_kill(root: Path, out: Path, config_overrides: list[str], after_step: int) -> bool:
    """Start `pipeline finetune` as its own process and SIGKILL it once a resumable state of at
    least `after_step` optimiser steps is on disk. True if it was killed mid-run."""
    command = [sys.executable, "-m", "pipeline.cli", "finetune", str(root / "train.jsonl"), "--val", str(root / "val.jsonl"),
               "--init", str(root / "stage0"), "--out", str(out), "--epochs", "2", "--batch-size", "4", "--device", "cpu", *config_overrides]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    progress = out / "resume" / "progress.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if json.loads(progress.read_text())["step"] >= after_step:
                process.send_signal(signal.SIGKILL)
                process.wait()
                return True
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.01)
    process.kill()
    raise AssertionError(f"finetune ended before it could be killed: {process.stderr.read().decode()[-2000:]}")


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_result(qwen, tmp_path):
    config = stage1_config(**{"stage_1.save_every_steps": 1})
    straight = finetune(files=[qwen / "train.jsonl"], init=qwen / "stage0", out=tmp_path / "straight", config=config, val_file=qwen / "val.jsonl", progress=False)

    out = tmp_path / "killed"
    assert _run_and_kill(qwen, out, ["--precision", "fp32", "--save-every", "1"], after_step=3)
    with pytest.raises(UserError, match="--resume"):
        finetune(files=[qwen / "train.jsonl"], init=qwen / "stage0", out=out, config=config, val_file=qwen / "val.jsonl", progress=False)
    resumed = finetune(files=[qwen / "train.jsonl"], init=qwen / "stage0", out=out, config=config, val_file=qwen / "val.jsonl", resume=True, progress=False)

    assert len(resumed.history) == len(straight.history) == 2
    for a, b in zip(resumed.history, straight.history):
        np.testing.assert_allclose(a["step_losses"], b["step_losses"], atol=1e-6)
    a, b = load_file(tmp_path / "straight" / "heads.safetensors"), load_file(out / "heads.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5)


RESUME_DAMAGE = {
    "model.safetensors": lambda path: path.write_bytes(path.read_bytes()[:100]),
    "training_state.pt": lambda path: path.write_bytes(b"not a torch file"),
    "progress.json": lambda path: path.write_text('{"epoch": 1, "step": 1}'),
}


@pytest.mark.slow
def test_a_damaged_resume_state_is_one_error_naming_its_file(qwen, tmp_path):
    killed = tmp_path / "killed"
    assert _run_and_kill(qwen, killed, ["--precision", "fp32", "--save-every", "1"], after_step=1)
    config = stage1_config(**{"stage_1.save_every_steps": 1})
    for name, damage in RESUME_DAMAGE.items():
        out = tmp_path / name.replace(".", "-")
        shutil.copytree(killed, out)
        damage(out / "resume" / name)
        with pytest.raises(CheckpointError) as error:
            finetune(files=[qwen / "train.jsonl"], init=qwen / "stage0", out=out, config=config, val_file=qwen / "val.jsonl", resume=True, progress=False)
        message = str(error.value)
        assert message.startswith(f"{out / 'resume' / name}: ") and "--overwrite" in message and "\n" not in message, message

def test_resume_without_a_saved_state_says_so(qwen, tmp_path):
    with pytest.raises(UserError, match="nothing to resume"):
        finetune(files=[qwen / "train.jsonl"], init=qwen / "stage0", out=tmp_path / "new", config=stage1_config(), val_file=qwen / "val.jsonl", resume=True, progress=False)


def test_gradient_checkpointing_gives_the_same_training(qwen, tmp_path, tiny_qwen3_path):
    encoder = TextEncoder.load(str(tiny_qwen3_path), device="cpu")
    backbone = encoder.model[0].auto_model
    encoder.gradient_checkpointing(True)
    assert backbone.is_activation_checkpointing
    encoder.gradient_checkpointing(False)
    assert not backbone.is_activation_checkpointing

    config = stage1_config(**{"stage_1.epochs": 1})
    plain = finetune(files=[qwen / "train.jsonl"], init=qwen / "stage0", out=tmp_path / "plain", config=config, val_file=qwen / "val.jsonl", max_steps=3, progress=False)
    config = stage1_config(**{"stage_1.epochs": 1, "stage_1.gradient_checkpointing": True})
    checkpointed = finetune(files=[qwen / "train.jsonl"], init=qwen / "stage0", out=tmp_path / "ckpt", config=config, val_file=qwen / "val.jsonl", max_steps=3, progress=False)
    assert checkpointed.history[0]["step_losses"] == pytest.approx(plain.history[0]["step_losses"], abs=1e-5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_processes_follow_one_process_with_the_same_global_batch(qwen, tmp_path):
    """torchrun, DistributedDataParallel on CPU with gloo: 2 processes x 2 pairs per batch give
    the loss trajectory of 1 process x 4 pairs."""
    common = ["finetune", str(qwen / "train.jsonl"), "--val", str(qwen / "val.jsonl"), "--init", str(qwen / "stage0"),
              "--epochs", "1", "--precision", "fp32", "--device", "cpu"]  # fmt: skip
    single = CliRunner().invoke(main, [*common, "--out", str(tmp_path / "single"), "--batch-size", "4"])
    assert single.exit_code == 0, single.output
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={_free_port()}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.run([*torchrun, "-m", "pipeline.cli", *common, "--out", str(tmp_path / "ddp"), "--batch-size", "2"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]

    def steps(folder):
        return [json.loads(line)["step_losses"] for line in (folder / "metrics.jsonl").read_text().splitlines()]

    assert len(steps(tmp_path / "ddp")[0]) == len(steps(tmp_path / "single")[0]) > 1
    np.testing.assert_allclose(steps(tmp_path / "ddp"), steps(tmp_path / "single"), atol=2e-4)
    saved = json.loads((tmp_path / "ddp" / "config.json").read_text())
    assert saved["world_size"] == 2 and not list(tmp_path.glob("ddp/*.tmp"))


def test_cli_finetune_prints_epochs_and_refuses_a_bad_init(qwen, tmp_path):
    result = CliRunner().invoke(main, ["finetune", str(qwen / "train.jsonl"), "--val", str(qwen / "val.jsonl"), "--init", str(qwen / "stage0"),
                                       "--out", str(tmp_path / "o"), "--epochs", "1", "--max-steps", "2", "--precision", "fp32"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "precision fp32" in result.output and "best epoch 1 of 1" in result.output
    assert "epoch  train loss  val loss  val acc  reflection  planner  executor  memory" in result.output
    bad = CliRunner().invoke(main, ["finetune", str(qwen / "train.jsonl"), "--init", str(tmp_path), "--out", str(tmp_path / "p")])
    assert bad.exit_code == 1 and "not a reward-head checkpoint" in bad.output
    assert load_pairs(qwen / "train.jsonl").height == 36


def test_out_holding_files_not_of_a_checkpoint_is_refused_before_anything_is_written(qwen, tmp_path):
    finetune_args = ["finetune", str(qwen / "train.jsonl"), "--val", str(qwen / "val.jsonl"), "--init", str(qwen / "stage0"),
                     "--epochs", "1", "--max-steps", "1", "--precision", "fp32"]  # fmt: skip
    out = tmp_path / "keep"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    refused = CliRunner().invoke(main, [*finetune_args, "--out", str(out)])
    assert refused.exit_code == 1 and "notes.txt" in refused.output and "--overwrite" in refused.output, refused.output
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    # --overwrite writes the checkpoint into the folder; finetune replaces only files of its own names
    written = CliRunner().invoke(main, [*finetune_args, "--out", str(out), "--overwrite"])
    assert written.exit_code == 0, written.output
    assert (out / "heads.safetensors").is_file() and (out / "notes.txt").read_text() == "mine"
