"""Stage 1 step time and peak memory: fp32 vs autocast (bf16), each with and without gradient
checkpointing, on MiniLM and the same synthetic batches, side by side in one run.

Each setting runs in its own process (peak RSS is per process and only grows): load the encoder
and heads, take `--warmup` steps, then time `--steps` optimiser steps of the stage 1 loop
(encoder forward on each unique text of the batch, heads, Bradley–Terry loss, backward, AdamW).
Peak memory is the process's peak resident set minus its resident set before the first step:
what training adds on top of the loaded model. Compare ratios, not seconds: this machine is noisy.

    .venv/bin/python bench/stage1.py [--steps 6] [--batch-size 8] [--max-tokens 256]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the pipeline command sets it; see docs/gpu.md "CPU threads"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SETTINGS = [("fp32", False), ("bf16", False), ("fp32", True), ("bf16", True)]


def measure(precision: str, checkpointing: bool, steps: int, warmup: int, batch_size: int, max_tokens: int) -> dict:
    import torch

    from data import pairs_from_records
    from data.synth import generate_pairs
    from features.encoder import TextEncoder
    from heads.finetuning import EncoderWithHeads, PairColumns, TextBatch, autocast
    from heads.model import MultiModuleRewardModel, bradley_terry_loss

    torch.manual_seed(0)
    pairs = pairs_from_records(generate_pairs(batch_size * (steps + warmup), seed=0))
    encoder = TextEncoder.load("minilm", device="cpu", max_context_tokens=max_tokens, max_module_tokens=max_tokens)
    encoder.gradient_checkpointing(checkpointing)
    heads = MultiModuleRewardModel(encoder.dimension, ["reflection", "planner", "executor", "memory"])
    model = EncoderWithHeads(encoder, heads).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    columns = PairColumns(pairs)
    before = _rss_kb()
    times = []
    for step in range(warmup + steps):
        batch = TextBatch.of(columns, list(range(step * batch_size, (step + 1) * batch_size)), heads)
        start = time.perf_counter()
        with autocast("cpu", precision):
            positive, negative = model(batch)
        bradley_terry_loss(positive, negative).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= warmup:
            times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
    return {"step_s": sorted(times)[len(times) // 2], "peak_mb": (peak - before) / 1024}


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one setting, print JSON
    args = parser.parse_args()
    if args.one:
        precision, checkpointing = args.one.split(",")
        print(json.dumps(measure(precision, checkpointing == "1", args.steps, args.warmup, args.batch_size, args.max_tokens)))
        return

    from heads.finetuning import cpu_has_native_bf16

    print(f"MiniLM, {args.max_tokens} tokens, {args.batch_size} pairs a step, median of {args.steps} steps; "
          f"CPU with native bf16: {cpu_has_native_bf16()}")  # fmt: skip
    results = {}
    for precision, checkpointing in SETTINGS:
        flags = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--batch-size", str(args.batch_size), "--max-tokens", str(args.max_tokens)]
        output = subprocess.run([sys.executable, __file__, "--one", f"{precision},{int(checkpointing)}", *flags], capture_output=True, text=True, check=True)
        results[precision, checkpointing] = json.loads(output.stdout.strip().splitlines()[-1])
        r = results[precision, checkpointing]
        print(f"  {precision:5} checkpointing {'on ' if checkpointing else 'off'}: {r['step_s']:.2f} s/step, peak +{r['peak_mb']:.0f} MB", flush=True)
    base = results["fp32", False]
    print("\nratios to fp32 without checkpointing (time: < 1 is faster; memory: < 1 is less)")
    for key, r in results.items():
        if key != ("fp32", False):
            print(f"  {key[0]:5} checkpointing {'on ' if key[1] else 'off'}: time {r['step_s'] / base['step_s']:.2f}, memory {r['peak_mb'] / base['peak_mb']:.2f}")


if __name__ == "__main__":
    main()
