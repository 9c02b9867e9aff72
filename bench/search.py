"""`pipeline train-heads --search` over the default grid on 2,000 cached pairs: is a search cheap
enough to run every time? (issue 15's target: >= 12 settings in under 2 minutes on 2 cores)

The vectors are synthetic and written straight into a cache namespace (no encoder runs): d = 384
(MiniLM's size), one vector per distinct text of 2,000 synthetic pairs, so the sharing is the real
one (a task's 4 modules share its positive context). Each vector is noise plus a small shift along
one direction for the texts of successful runs, so the heads have something to learn and early
stopping behaves as on real data. The search runs as a user runs it, `pipeline train-heads` in a
fresh process, timed from start to exit; its CPU seconds are printed too, since on a shared machine
the wall time says as much about the neighbours as about the search.

    .venv/bin/python bench/search.py [--pairs 2000] [--dimension 384] [--ensemble 0]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the pipeline command sets it; see docs/gpu.md "CPU threads"

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from cache import EmbeddingCache  # noqa: E402
from data import load_pairs, pairs_from_records, write_pairs  # noqa: E402
from data.synth import generate_pairs  # noqa: E402
from features.pairs import ROLE_COLUMNS, unique_texts  # noqa: E402
from pipeline.config import Config  # noqa: E402
from pipeline.train_heads import search_grid  # noqa: E402


def fake_cache(pairs: pl.DataFrame, cache_dir: Path, dimension: int, signal: float = 0.15, seed: int = 0) -> int:
    """Write a vector for every distinct text of `pairs` into a namespace of a made-up encoder;
    returns the number of vectors."""
    texts = unique_texts(pairs)
    positive = set(pairs["positive_context"]) | set(pairs["positive_module_text"])
    rng = np.random.default_rng(seed)
    direction = rng.standard_normal(dimension).astype(np.float32)
    direction /= np.linalg.norm(direction)
    vectors = rng.standard_normal((texts.height, dimension)).astype(np.float32) / np.sqrt(dimension)
    sign = np.array([1.0 if text in positive else -1.0 for text in texts["text"]], np.float32)
    vectors += signal * sign[:, None] * direction / np.sqrt(dimension) * 4
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    fingerprint = {"encoder": "bench-synthetic", "dimension": dimension, "max_context_tokens": 256, "max_module_tokens": 256, "normalize": True}
    namespace = EmbeddingCache(cache_dir).namespace(fingerprint, create=True)
    with namespace.writer():
        namespace.write_shard(texts["key"].to_list(), vectors)
    return texts.height


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--dimension", type=int, default=384)
    parser.add_argument("--ensemble", type=int, default=0, help="Also time --search --ensemble K (0: no).")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-search-"))
    write_pairs(pairs_from_records(generate_pairs(args.pairs, seed=0)), work / "pairs.jsonl")
    pairs = load_pairs(work / "pairs.jsonl")
    vectors = fake_cache(pairs, work / "cache", args.dimension)
    references = pairs.height * 2 * len(ROLE_COLUMNS)
    settings = len(search_grid(Config()))
    print(f"{pairs.height} pairs, {vectors} distinct texts of {references} referenced, d = {args.dimension}, {os.cpu_count()} CPUs")
    print(f"load before: {os.getloadavg()[0]:.2f} (1-minute average)")

    runs = [("search", ["--search"])] + ([(f"search + ensemble {args.ensemble}", ["--search", "--ensemble", str(args.ensemble)])] if args.ensemble else [])
    for name, flags in runs:
        out = work / name.replace(" ", "-").replace("+", "")
        command = [sys.executable, "-m", "pipeline.cli", "train-heads", str(work / "pairs.jsonl"), "--cache", str(work / "cache"), "--out", str(out), "--device", "cpu", *flags]
        cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
        cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
        rows = [json.loads(line) for line in (out / "search.jsonl").read_text().splitlines()]
        training = sum(r["seconds"] for r in rows)
        chosen = json.loads((out / "config.json").read_text())["search"]["chosen"]
        assert len(rows) == settings
        print(
            f"{name}: {len(rows)} settings in {seconds:.1f} s from start to exit ({training:.1f} s training them, "
            f"{len(rows) / seconds:.2f} settings/s; {cpu:.1f} CPU seconds, i.e. {cpu / seconds:.2f} of the 2 cores on average); chosen: head {chosen['head']}, lr {chosen['lr']:g}, "
            f"weight decay {chosen['weight_decay']:g}, dropout {chosen['dropout']:g}, {chosen['epochs']} epochs "
            f"(val loss {chosen['val_loss']:.4f}, accuracy {chosen['val_accuracy']:.3f})  target: < 120 s"
        )
        by_head = {}
        for r in rows:
            by_head.setdefault(r["head"], []).append(r["seconds"])
        print("  seconds per setting by head: " + ", ".join(f"{h} {np.mean(s):.2f} ({len(s)} settings)" for h, s in by_head.items()))
    print(f"load after: {os.getloadavg()[0]:.2f} (1-minute average)")


if __name__ == "__main__":
    main()
