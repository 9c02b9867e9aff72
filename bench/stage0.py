"""Stage 0 on the cache vs the way the original code trains, side by side in one run on the same pairs:

- cached: one epoch of the heads over vectors read once from the Parquet/DuckDB cache;
- original: the same epoch, but every batch first encodes both texts of both sides of every pair
  with the frozen encoder (what training without a cache does at every step).

Also prints the wall time of one cached epoch over 10k pairs at d = 384 (MiniLM) and d = 1024
(Qwen3-Embedding-0.6B's size). Compare ratios, not seconds: this machine is noisy.

    .venv/bin/python bench/stage0.py [--pairs 256] [--max-tokens 128]
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the pipeline command sets it; see docs/gpu.md "CPU threads"

import numpy as np  # noqa: E402
import torch  # noqa: E402

from cache import EmbeddingCache  # noqa: E402
from data import load_pairs, pairs_from_records, write_pairs  # noqa: E402
from data.synth import generate_pairs  # noqa: E402
from features.pairs import PairVectors, pair_vectors  # noqa: E402
from heads import MultiModuleRewardModel, bradley_terry_loss  # noqa: E402
from heads.training import PairTensors, train_epoch, warmup_linear_schedule  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.embed import embed_pairs, load_encoder  # noqa: E402

MODULES = ["reflection", "planner", "executor", "memory"]


def cached_epoch(vectors: PairVectors, dimension: int, batch_size: int) -> float:
    torch.manual_seed(0)
    model = MultiModuleRewardModel(dimension, MODULES)
    start = time.perf_counter()  # the tensors are built once per run, so they count
    data = PairTensors.from_vectors(vectors, model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.01)
    train_epoch(
        model, data, optimizer, warmup_linear_schedule(optimizer, 10, 100),
        batch_size=batch_size, grad_accumulation=2, grad_clip=1.0, margin=0.1, margin_weight=0.1,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    return time.perf_counter() - start


def original_epoch(pairs, encoder, dimension: int, batch_size: int) -> float:
    """Encode a batch's four texts per pair with the frozen encoder, then step the heads."""
    torch.manual_seed(0)
    model = MultiModuleRewardModel(dimension, MODULES)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.01)
    order = torch.randperm(pairs.height, generator=torch.Generator().manual_seed(0)).tolist()
    start = time.perf_counter()
    for step, first in enumerate(range(0, pairs.height, batch_size)):
        batch = pairs[order[first : first + batch_size]]
        encoded = {
            column: torch.from_numpy(encoder.encode(batch[column].to_list(), role)[0])
            for column, role in (
                ("positive_context", "context"), ("positive_module_text", "module"),
                ("negative_context", "context"), ("negative_module_text", "module"),
            )
        }  # fmt: skip
        index = model.module_index(batch["target_module"].to_list())
        positive = model(encoded["positive_context"], encoded["positive_module_text"], index)
        negative = model(encoded["negative_context"], encoded["negative_module_text"], index)
        (bradley_terry_loss(positive, negative) / 2).backward()
        if step % 2 == 1:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
    return time.perf_counter() - start


def random_vectors(n: int, dimension: int) -> PairVectors:
    rng = np.random.default_rng(0)
    matrices = [rng.standard_normal((n, dimension), dtype=np.float32) for _ in range(4)]
    return PairVectors(*matrices, target_module=np.array([MODULES[i % 4] for i in range(n)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    config = load_config(overrides={"model.encoder": "minilm", "model.max_context_tokens": args.max_tokens, "model.max_module_tokens": args.max_tokens})
    encoder = load_encoder(config)
    work = Path(tempfile.mkdtemp(prefix="bench-stage0-"))
    write_pairs(pairs_from_records(generate_pairs(args.pairs, seed=0)), work / "pairs.jsonl")
    pairs = load_pairs(work / "pairs.jsonl")
    embed_pairs([work / "pairs.jsonl"], work / "cache", config, encoder=encoder, progress=False)
    namespace = EmbeddingCache(work / "cache").namespaces()[0]

    read = time.perf_counter()
    vectors = pair_vectors(namespace, pairs)
    read = time.perf_counter() - read
    cached = read + cached_epoch(vectors, encoder.dimension, args.batch_size)
    original = original_epoch(pairs, encoder, encoder.dimension, args.batch_size)
    print(f"{args.pairs} pairs, MiniLM, {args.max_tokens} tokens, batch {args.batch_size}, {os.cpu_count()} CPUs")
    print(f"cached epoch (DuckDB read {read:.3f} s included): {cached:8.3f} s")
    print(f"original epoch (encode at every step):      {original:8.3f} s")
    print(f"speed-up cached / original:                 {original / cached:8.0f}x   (target >= 100x)")
    for dimension in (384, 1024):
        seconds = cached_epoch(random_vectors(10_000, dimension), dimension, args.batch_size)
        print(f"one cached epoch over 10k pairs, d = {dimension:4d}:  {seconds:8.2f} s")


if __name__ == "__main__":
    main()
