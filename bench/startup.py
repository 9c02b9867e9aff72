"""What a verb costs before it does its work, and the quick stage 0 run against the original loop,
side by side in one run:

1. Start-up per verb: each verb run as a user runs it (a fresh `pipeline` process) on a tiny
   input, its wall time, and which heavy libraries it imported and what they cost
   (`python -X importtime`). Only verbs that encode text should import the encoder stack
   (sentence-transformers, transformers).
2. The quick test: 32 synthetic pairs, MiniLM, 5 epochs. Ours is one process,
   `pipeline train-heads --embed-missing` on a fresh cache, and (as the README's steps run it)
   `pipeline embed` then `pipeline train-heads`, two processes; the original loop is one process that loads the
   encoder and, every epoch, encodes the four texts of every pair of every batch before stepping
   the heads (bench/stage0.py `original_epoch`), then encodes the validation pairs to validate.

    .venv/bin/python bench/startup.py [--pairs 32] [--max-tokens 256] [--repeat 3] [--baseline DIR]

--baseline DIR: a checkout of earlier code (`git worktree add DIR COMMIT`), whose two-process quick
test is timed beside ours in the same run: a reference measured against that code elsewhere (the
original loop of issue 27: 81 s against that code's 15.7 s) then carries over to this machine.

Compare ratios, not seconds: this machine is noisy; each number is the best of --repeat runs.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from data import load_pairs

HEAVY = ("torch", "torch._dynamo", "sentence_transformers", "transformers", "sklearn", "matplotlib", "scipy", "duckdb", "polars", "pyarrow", "fastapi")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE"}

ORIGINAL_LOOP = """
import sys, time
sys.path.insert(0, {bench!r})
from data import load_pairs
from pipeline.config import load_config
from pipeline.embed import load_encoder
from stage0 import original_epoch
config = load_config(overrides={{"model.encoder": "minilm", "model.max_context_tokens": {tokens}, "model.max_module_tokens": {tokens}}})
encoder = load_encoder(config)
train, val = load_pairs({train!r}), load_pairs({val!r})
for epoch in range({epochs}):
    original_epoch(train, encoder, encoder.dimension, 64)
    for column, role in (("positive_context", "context"), ("positive_module_text", "module"), ("negative_context", "context"), ("negative_module_text", "module")):
        encoder.encode(val[column].to_list(), role)
"""


def run(arguments: list[str], importtime: bool = False, code: Path | None = None) -> tuple[float, str]:
    """Wall seconds of one process, and its stderr (the -X importtime log when asked); `code`: the
    checkout whose packages it runs (default: this one)."""
    command = [sys.executable, *(["-X", "importtime"] if importtime else []), *arguments]
    env = ENV if code is None else {**ENV, "PYTHONPATH": str(code)}
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=code)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(arguments)} failed:\n{done.stdout}\n{done.stderr}")
    return seconds, done.stderr


def heavy_imports(log: str) -> dict[str, float]:
    """Cumulative import seconds of each heavy library the process imported."""
    found = {}
    for match in re.finditer(r"import time:\s+\d+ \|\s+(\d+) \|\s*(\S+)$", log, re.MULTILINE):
        cumulative, name = int(match.group(1)), match.group(2)
        if name in HEAVY:
            found[name] = max(found.get(name, 0.0), cumulative / 1e6)
    return found


def best(repeat: int, function) -> float:
    return min(function() for _ in range(repeat))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="a checkout of earlier code: its two-process quick test timed beside ours")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    cli = ["-m", "pipeline.cli"]
    tokens = ["--config", str(work / "config.yaml")]
    (work / "config.yaml").write_text(
        f"model: {{encoder: minilm, max_context_tokens: {args.max_tokens}, max_module_tokens: {args.max_tokens}}}\n"
        f"stage_0: {{epochs: {args.epochs}}}\ntraining: {{device: cpu}}\nevaluation: {{bootstrap_samples: 200}}\n"
    )
    run([*cli, "synth", "--pairs", str(args.pairs), "--out", str(work / "pairs.json")])
    run([*cli, "split", str(work / "pairs.json"), "--out", str(work / "splits"), "--val-fraction", "0.25", "--test-fraction", "0.25"])
    train, val, test = (str(work / "splits" / f"{name}.jsonl") for name in ("train", "val", "test"))

    def ours(code: Path | None = None) -> float:
        shutil.rmtree(work / "cache", ignore_errors=True)
        embed, _ = run([*cli, "embed", train, val, "--cache", str(work / "cache"), *tokens], code=code)
        heads, _ = run([*cli, "train-heads", train, "--val", val, "--cache", str(work / "cache"), "--out", str(work / "ckpt"), *tokens], code=code)
        return embed + heads

    def ours_one_process() -> float:
        shutil.rmtree(work / "cache", ignore_errors=True)
        arguments = ["train-heads", train, "--val", val, "--cache", str(work / "cache"), "--out", str(work / "ckpt"), "--embed-missing", *tokens]
        return run([*cli, *arguments])[0]

    def original() -> float:
        script = ORIGINAL_LOOP.format(bench=str(Path(__file__).parent), tokens=args.max_tokens, train=train, val=val, epochs=args.epochs)
        return run(["-c", script])[0]

    one = best(args.repeat, ours_one_process)
    quick = best(args.repeat, ours)
    loop = best(args.repeat, original)
    baseline = best(args.repeat, lambda: ours(args.baseline.resolve())) if args.baseline else None
    run([*cli, "embed", test, "--cache", str(work / "cache"), *tokens])
    pairs = load_pairs(test)  # records whose texts the cache holds
    records = [{"context": c, "modules": {m: t}} for c, m, t in zip(pairs["positive_context"], pairs["target_module"], pairs["positive_module_text"])]
    (work / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))

    verbs = {
        "--help": ["--help"],
        "validate": ["validate", train],
        "split": ["split", train, "--out", str(work / "resplit")],
        "train-heads": ["train-heads", train, "--val", val, "--cache", str(work / "cache"), "--out", str(work / "ckpt2"), *tokens],
        "evaluate": ["evaluate", str(work / "ckpt"), test, "--cache", str(work / "cache"), "--out", str(work / "report"), *tokens],
        "embed (all cached)": ["embed", train, "--cache", str(work / "cache"), *tokens],
        "score (texts cached)": ["score", str(work / "ckpt"), str(work / "records.jsonl"), "--out", str(work / "scored.jsonl"), "--cache", str(work / "cache")],
    }
    print(f"{args.pairs} pairs, MiniLM at {args.max_tokens} tokens, {args.epochs} epochs, {os.cpu_count()} CPUs; best of {args.repeat}\n")
    print(f"{'verb':<22} {'wall s':>7}  heavy imports (cumulative import s)")
    for name, arguments in verbs.items():
        seconds = best(args.repeat, lambda: run([*cli, *arguments])[0])
        imported = heavy_imports(run([*cli, *arguments], importtime=True)[1])
        listing = ", ".join(f"{lib} {s:.2f}" for lib, s in sorted(imported.items(), key=lambda kv: -kv[1]))
        print(f"{name:<22} {seconds:7.2f}  {listing}")
    print(f"\nquick test, ours in one process (train-heads --embed-missing): {one:7.2f} s")
    print(f"quick test, ours in two processes (embed, then train-heads):  {quick:7.2f} s")
    print(f"quick test, original loop (encode at every step):             {loop:7.2f} s")
    print(f"speed-up, one process:                                        {loop / one:7.2f}x   (target >= 8x)")
    print(f"speed-up, two processes:                                      {loop / quick:7.2f}x")
    if baseline is not None:
        print(f"quick test, {args.baseline}'s code in two processes: {baseline:7.2f} s, {baseline / one:.2f}x ours in one process")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
