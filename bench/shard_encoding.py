"""Which Parquet encoding the cache's shards should use, and what a server's cache lookup costs,
measured side by side in one run.

Part 1, shard encoding: the same normalised float32 vectors (random 32-hex keys, `cache.shard_size`
4096 vectors a shard) written as a namespace in each encoding: zstd, lz4 and none, each with and
without BYTE_STREAM_SPLIT on the vector values (dictionary encoding off: hashed keys and floats
never repeat), beside the encoding caches had before (zstd, dictionary on). For each it prints the
size on disk, the write time, `pyarrow.parquet.read_table` over the shard files, and our read of
every key (in shuffled order) into a matrix, `Namespace.fetch`: one DuckDB query, streamed by row.
Ratios: size against none, our read's speed against read_table's on the same files (issue 13's
target: >= 0.5x).

Part 2, serving: a namespace of `--serve-rows` vectors (d = 384), read once into
`Namespace.index()`; a request's lookup (2 texts: a context and a module text) from the index
beside the same lookup from the scorer's in-memory LRU (`VectorMemory`), and beside the old way,
one DuckDB query over every shard per request. Target: the index within 1.5x of the LRU hit.

Compare ratios, not seconds (a machine shared with other jobs).

    .venv/bin/python bench/shard_encoding.py [--rows 100000] [--dims 384 1024] [--serve-rows 1000000]
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from cache import EmbeddingCache  # noqa: E402
from cache.store import MANIFEST, OLD_SHARD_ENCODING, SHARD_ENCODING  # noqa: E402
from data.files import json_text, write_text_atomic  # noqa: E402
from pipeline.rewards import VectorMemory  # noqa: E402

SHARD = 4096
ENCODINGS = {"zstd + dictionary (old)": OLD_SHARD_ENCODING} | {
    f"{codec}{' + BSS' if split else ''}": {"compression": codec, "byte_stream_split": split, "dictionary": False}
    for codec in ("zstd", "lz4", "none")
    for split in (False, True)
}


def vectors(rows: int, dimension: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Random 32-hex keys and unit-norm float32 vectors, as an encoder's normalised output."""
    rng = np.random.default_rng(seed)
    keys = [rng.bytes(16).hex() for _ in range(rows)]
    matrix = rng.standard_normal((rows, dimension), dtype=np.float32)
    return keys, matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def namespace_with(root: Path, encoding: dict, keys: list[str], matrix: np.ndarray):
    """A namespace in `root` whose manifest records `encoding`, holding `keys`; and the write time."""
    namespace = EmbeddingCache(root).namespace({"encoder": "bench", "dimension": matrix.shape[1]}, create=True)
    manifest = json.loads((namespace.root / MANIFEST).read_text())
    write_text_atomic(namespace.root / MANIFEST, json_text({**manifest, "shard_encoding": encoding}, indent=2))
    namespace.reload()
    start = time.perf_counter()
    for i in range(0, len(keys), SHARD):
        namespace.write_shard(keys[i : i + SHARD], matrix[i : i + SHARD])
    return namespace, time.perf_counter() - start


def timed(run) -> tuple[float, float]:
    """(wall, CPU) seconds of one run; CPU time counts every thread of the process, and is what
    stays comparable when other jobs load the machine."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def round_robin(runs: dict, repeats: int) -> dict[str, tuple[float, float]]:
    """Each of `runs` timed `repeats` times in turn, so that load from other jobs falls on all alike;
    the best wall and the best CPU time of each."""
    best = {name: (np.inf, np.inf) for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            best[name] = tuple(min(a, b) for a, b in zip(best[name], timed(run)))
    return best


def encodings_table(work: Path, rows: int, dimension: int, repeats: int) -> None:
    """Every encoding written first, then read round-robin."""
    keys, matrix = vectors(rows, dimension, seed=dimension)
    order = np.random.default_rng(0).permutation(rows)
    shuffled, expected = [keys[i] for i in order], matrix[order]
    written = {name: namespace_with(work / f"{dimension}-{name.replace(' ', '')}", encoding, keys, matrix) for name, encoding in ENCODINGS.items()}
    for namespace, _ in written.values():
        assert np.array_equal(namespace.fetch(shuffled), expected)
    runs = {}
    for name, (namespace, _) in written.items():
        runs[(name, "arrow")] = lambda namespace=namespace: pq.read_table(namespace.shard_paths())
        runs[(name, "ours")] = lambda namespace=namespace: namespace.fetch(shuffled)
    best = round_robin(runs, repeats)
    size = {name: sum(os.path.getsize(p) for p in namespace.shard_paths()) for name, (namespace, _) in written.items()}
    print(f"\n{rows} vectors of d = {dimension} (float32, unit norm), {-(-rows // SHARD)} shards; raw vectors {rows * dimension * 4 / 2**20:.0f} MiB")
    print(f"{'encoding':24} {'MiB':>6} {'size/none':>9} {'write s':>7} {'read_table s (CPU)':>18} {'fetch s (CPU)':>14} {'fetch speed / read_table, wall (CPU)':>37}")
    for name, (namespace, write) in written.items():
        (arrow, arrow_cpu), (ours, ours_cpu) = best[(name, "arrow")], best[(name, "ours")]
        chosen = "  <- default" if ENCODINGS[name] == SHARD_ENCODING else ""
        print(
            f"{name:24} {size[name] / 2**20:6.1f} {size[name] / size['none']:9.3f} {write:7.2f} {arrow:8.3f} ({arrow_cpu:6.3f}) {ours:6.3f} ({ours_cpu:6.3f})"
            f" {arrow / ours:28.2f}x ({arrow_cpu / ours_cpu:.2f}x){chosen}"
        )
        shutil.rmtree(namespace.root)


def serving_table(work: Path, rows: int, requests: int = 2000) -> None:
    keys, matrix = vectors(rows, 384, seed=1)
    namespace, _ = namespace_with(work / "serve", SHARD_ENCODING, keys, matrix)
    start = time.perf_counter()
    index = namespace.index()
    build = time.perf_counter() - start
    rng = np.random.default_rng(2)
    asked = [[keys[i] for i in rng.integers(0, rows, 2)] for _ in range(requests)]
    memory = VectorMemory(2 * requests)
    for wanted in asked:
        for key in wanted:
            memory.put(key, np.array(index.vectors[index.row[key]]))

    def from_index() -> None:
        for wanted in asked:
            found, got = index.get(wanted)
            assert found.all()

    def from_memory() -> None:
        for wanted in asked:
            np.stack([memory.get(key) for key in wanted])

    scans = 20
    best = round_robin({"index": from_index, "memory": from_memory}, repeats=7)
    per_index, per_memory = best["index"][0] / requests, best["memory"][0] / requests
    per_scan = timed(lambda: [namespace.fetch(wanted) for wanted in asked[:scans]])[0] / scans
    print(f"\nserving from {rows} cached vectors (d = 384): index read once in {build:.1f} s; per request of 2 texts:")
    print(f"  in-memory LRU hit       {1e6 * per_memory:9.1f} us")
    print(f"  Namespace.index().get   {1e6 * per_index:9.1f} us   {per_index / per_memory:.2f}x the LRU hit (target <= 1.5x)")
    print(f"  a DuckDB scan (before)  {1e6 * per_scan:9.1f} us   {per_scan / per_memory:.0f}x the LRU hit")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000, help="vectors per namespace in part 1")
    parser.add_argument("--repeats", type=int, default=5, help="reads of each encoding, round-robin; the best counts")
    parser.add_argument("--dims", type=int, nargs="+", default=[384, 1024])
    parser.add_argument("--serve-rows", type=int, default=1_000_000, help="vectors in part 2's namespace (0: skip part 2)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-shards-"))
    try:
        print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; read times are the best of {args.repeats} round-robin runs; files in {work}")
        for dimension in args.dims:
            encodings_table(work, args.rows, dimension, args.repeats)
        if args.serve_rows:
            serving_table(work, args.serve_rows)
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
