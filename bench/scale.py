"""Stage 0 at scale (issue 13): synthetic vectors written straight into a cache namespace (no
encoder runs), at 100k, 300k and 1M pairs, d = 384 and 1024, each target a ratio measured side by
side in one run.

Pairs share texts as real ones do: a task has two contexts (its successful and its failed
trajectory) shared by the pairs of its 4 modules, and every module text is distinct, so n pairs
reference 2.5 n distinct texts. The training file keeps texts short (no encoder reads them); the
file of the load measurement has ~1 KB contexts, as real trajectories do.

- memory: peak RSS of `pipeline train-heads` (a subprocess, one epoch, head "256") against an
  allowance of the same command's RSS on 400 pairs (the interpreter, torch, polars) plus
  1.5 x the distinct-vector matrix plus the model, its gradients, AdamW's two moments and the
  best-epoch copy (5 x params x 4 bytes);
- epoch: one training epoch over the training split (train_epoch on PairTensors, head "256"),
  seconds per pair at the largest size over the smallest (target <= 1.2);
- read: cache -> matrix as train-heads reads it (`read_features`: training and validation pairs)
  against `pyarrow.parquet.read_table` of the namespace's shard files (target >= 0.5x its speed),
  and how many cache reads it made (target 1);
- load: `load_pairs` + `pair_text_keys` of the JSON Lines file against `polars.read_ndjson` of it
  (target <= 3x);
- serve: one request (a trajectory's context and its 4 module texts) whose vectors are in the
  cache but not in memory, against the same request answered from the scorer's in-memory LRU
  (target <= 1.5x), over the namespace of the largest size.

    .venv/bin/python bench/scale.py [--pairs 100000,300000,1000000] [--dims 384,1024] [--quick]

Compare ratios, not seconds: the machine is shared and noisy. d = 1024 at 1M pairs peaked at 11 GB
of RAM and needs ~30 GB of disk (shards, train-heads' and the read measurement's memory maps).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the pipeline command sets it; see docs/gpu.md "CPU threads"

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402

from cache import EmbeddingCache, Namespace  # noqa: E402
from data import load_pairs  # noqa: E402
from data.schema import DEFAULT_MODULES  # noqa: E402
from features.pairs import pair_text_keys, text_key  # noqa: E402
from data.splits import load_training_and_validation  # noqa: E402
from features.views import View  # noqa: E402
from heads import MultiModuleRewardModel  # noqa: E402
from heads.training import PairTensors, train_epoch, warmup_linear_schedule  # noqa: E402
from pipeline.config import Stage0Config  # noqa: E402
from pipeline.rewards import load as load_scorer  # noqa: E402
from pipeline.train_heads import read_features  # noqa: E402

MODULES = list(DEFAULT_MODULES)
HEAD = "256"  # one hidden layer: the default "2d,d" head at 1M pairs is hours of CPU per epoch
SHARD_ROWS = 4096  # cache.shard_size's default: the shards `pipeline embed` writes
BASELINE_PAIRS = 400
FILLER = " The agent called a tool, read its output and planned the next step."  # realistic context bulk


@dataclass
class Row:
    """One line of the final table."""

    measure: str
    size: str
    ours: float
    reference: float
    target: str

    @property
    def ratio(self) -> float:
        return self.ours / self.reference

    @property
    def met(self) -> bool:
        bound = float(self.target.split()[1].rstrip("x"))
        return self.ratio <= bound if self.target.startswith("<=") else self.ratio >= bound


# --- synthetic data ----------------------------------------------------------------------------


def pair_record(i: int, context_chars: int) -> dict:
    """Pair i: task i // 4, module i % 4; the task's two contexts, two module texts of its own."""
    task, module = i // 4, MODULES[i % 4]

    def side(outcome: int) -> dict:
        word = "solved" if outcome else "failed"
        context = f"Task {task}: the run that {word}."
        return {
            "trajectory_full_context": context + (FILLER * (context_chars // len(FILLER) + 1))[: max(0, context_chars - len(context))],
            "module_k_all_rounds": f"<{module}>{word} step of task {task}</{module}>",
            "outcome": outcome,
        }

    return {"pair_id": f"p{i}", "target_module": module, "task": f"task {task}", "positive": side(1), "negative": side(0)}


def write_jsonl(path: Path, n_pairs: int, context_chars: int) -> Path:
    with open(path, "w") as f:
        for i in range(n_pairs):
            f.write(json.dumps(pair_record(i, context_chars)) + "\n")
    return path


def distinct_keys(n_pairs: int, context_chars: int = 0) -> list[str]:
    """The cache keys of the distinct texts of `pair_record(i, context_chars)` for i < n_pairs."""
    keys = []
    for i in range(n_pairs):
        record = pair_record(i, context_chars)
        for side in ("positive", "negative"):
            if i % 4 == 0:  # the task's contexts, once
                keys.append(text_key("context", record[side]["trajectory_full_context"]))
            keys.append(text_key("module", record[side]["module_k_all_rounds"]))
    return keys


def fingerprint(dimension: int) -> dict:
    """What an encoder fingerprint records (features/encoder.py), for an encoder that never runs."""
    return {
        "encoder": f"synthetic-{dimension}", "weights": "random", "pooling": "mean", "padding_side": "right",
        "context_prompt": "", "max_context_tokens": 2048, "max_module_tokens": 512, "truncation_side": "left",
        "normalize": True, "dimension": dimension,
    }  # fmt: skip


def write_namespace(cache_dir: Path, keys: list[str], dimension: int) -> Namespace:
    """Random unit vectors for `keys`, in shards of `SHARD_ROWS` as `pipeline embed` writes them."""
    namespace = EmbeddingCache(cache_dir).namespace(fingerprint(dimension), create=True)
    rng = np.random.default_rng(0)
    with namespace.writer():
        for start in range(0, len(keys), SHARD_ROWS):
            part = keys[start : start + SHARD_ROWS]
            vectors = rng.standard_normal((len(part), dimension), dtype=np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            namespace.write_shard(part, vectors)
    return namespace


# --- measurements, one small function each -----------------------------------------------------


def train_heads_peak_rss(pairs_file: Path, cache_dir: Path, out: Path, dimension: int) -> tuple[int, str]:
    """Peak resident bytes of `pipeline train-heads` (one epoch, head `HEAD`) and its output."""
    config = out.parent / f"{out.name}.yaml"
    config.write_text(f"model:\n  head: '{HEAD}'\ntraining:\n  device: cpu\n")
    script = shutil.which("pipeline", path=str(Path(sys.executable).parent))
    command = [script, "train-heads", str(pairs_file), "--cache", str(cache_dir), "--out", str(out), "--encoder", f"synthetic-{dimension}", "--epochs", "1", "--config", str(config), "--overwrite"]
    log = out.parent / f"{out.name}.log"
    with open(log, "wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, "TQDM_DISABLE": "1"})
        peak = 0
        while process.poll() is None:
            peak = max(peak, high_water_mark(process.pid))
            time.sleep(0.05)
    output = log.read_text()
    if process.returncode != 0:
        raise RuntimeError(f"train-heads failed:\n{output}")
    return peak, output


def high_water_mark(pid: int) -> int:
    """Peak resident bytes of process `pid` so far (VmHWM), 0 once it is gone. Not the child's
    ru_maxrss: Linux carries the RSS of the process it was forked from across exec, so a child of
    this (by then large) process would report at least this process's size."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return next((int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:")), 0)
    except (FileNotFoundError, ProcessLookupError):
        return 0


def training_bytes(n_vectors: int, dimension: int) -> tuple[int, int]:
    """(the distinct-vector matrix, model + gradients + AdamW moments + best-epoch copy) in bytes."""
    params = sum(p.numel() for p in MultiModuleRewardModel(dimension, MODULES, 0.1, HEAD).parameters())
    return n_vectors * dimension * 4, 5 * params * 4


class CountingSource:
    """A vector source that counts the reads it passes on to the namespace."""

    def __init__(self, namespace: Namespace):
        self.namespace, self.dimension, self.reads = namespace, namespace.dimension, 0

    def fetch(self, keys, out: np.ndarray | None = None) -> np.ndarray:
        self.reads += 1
        return self.namespace.fetch(keys, out)


def cache_read(namespace: Namespace, pairs_file: Path, scratch: Path) -> tuple[float, float, int, object]:
    """Seconds of the cache -> matrix read train-heads does (`read_features` of its training and
    validation split), seconds of pq.read_table over the same shard files, the cache reads made,
    and the training split's features."""
    train, val = load_training_and_validation([pairs_file], None, MODULES, 0.1, 0, "task")
    source = CountingSource(namespace)
    start = time.perf_counter()
    features = read_features(source, train, val, View(), Stage0Config.memory_map_above_mb, scratch)
    ours = time.perf_counter() - start
    start = time.perf_counter()
    pq.read_table(namespace.shard_paths())
    reference = time.perf_counter() - start
    return ours, reference, source.reads, features["train"]


def epoch_seconds(features, dimension: int) -> float:
    """One training epoch of head `HEAD` over `features`' pairs, as fit_heads runs it (batch 64, accumulation 2)."""
    torch.manual_seed(0)
    model = MultiModuleRewardModel(dimension, MODULES, 0.1, HEAD)
    data = PairTensors.from_pieces(features, model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.01, foreach=True)
    start = time.perf_counter()
    train_epoch(
        model, data, optimizer, warmup_linear_schedule(optimizer, 100, 10**9), batch_size=64, grad_accumulation=2,
        grad_clip=1.0, margin=0.1, margin_weight=0.1, generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    return time.perf_counter() - start


def load_and_key(path: Path) -> tuple[float, float]:
    """Seconds of load_pairs + pair_text_keys, and of polars.read_ndjson, of the same file."""
    start = time.perf_counter()
    pair_text_keys(load_pairs(path))
    ours = time.perf_counter() - start
    start = time.perf_counter()
    pl.read_ndjson(path)
    return ours, time.perf_counter() - start


def serve_latency(checkpoint: Path, cache_dir: Path, n_pairs: int, requests: int = 50) -> tuple[float, float, bool]:
    """Median seconds of a request read from the cache (a task never asked before) and of the
    same kind of request answered from the scorer's in-memory LRU, and whether the scorer's index
    is memory-mapped (the default rule: when it is larger than half the memory available)."""
    scorer = load_scorer(checkpoint, cache_dir, device="cpu")
    mapped = isinstance(scorer.index().vectors, np.memmap)
    tasks = np.random.default_rng(1).choice(n_pairs // 4, size=requests, replace=False)

    def request(task: int) -> float:
        records = [pair_record(4 * task + m, 0)["positive"] for m in range(4)]
        start = time.perf_counter()
        scorer.score([r["trajectory_full_context"] for r in records], [r["module_k_all_rounds"] for r in records], MODULES)
        return time.perf_counter() - start

    from_cache = [request(int(t)) for t in tasks]
    from_memory = [request(int(t)) for t in tasks]  # now every text is in the LRU
    if scorer.encoded:
        raise RuntimeError(f"the scorer encoded {scorer.encoded} texts: some keys are not in the cache")
    return float(np.median(from_cache)), float(np.median(from_memory)), mapped


# --- one size ----------------------------------------------------------------------------------


def measure_size(work: Path, n_pairs: int, dimension: int, baseline_rss: int | None) -> tuple[list[Row], dict]:
    """Every measurement at one (pairs, d); returns table rows and the raw numbers."""
    folder = work / f"{n_pairs}-{dimension}"
    folder.mkdir()
    label = f"{n_pairs // 1000}k, d={dimension}"
    pairs_file = write_jsonl(folder / "pairs.jsonl", n_pairs, 0)
    keys = distinct_keys(n_pairs)
    started = time.perf_counter()
    namespace = write_namespace(folder / "cache", keys, dimension)
    print(f"{label}: {len(keys)} distinct vectors written in {time.perf_counter() - started:.0f} s", flush=True)

    rss, _ = train_heads_peak_rss(pairs_file, folder / "cache", folder / "checkpoint", dimension)
    matrix, model = training_bytes(len(keys), dimension)
    numbers = {"pairs": n_pairs, "dimension": dimension, "vectors": len(keys), "peak_rss": rss, "matrix": matrix, "model": model}
    rows = []
    if baseline_rss is not None:
        rows.append(Row("train-heads peak RSS - baseline vs 1.5 matrix + model", label, rss - baseline_rss, 1.5 * matrix + model, "<= 1.0x"))

    read, reference, reads, features = cache_read(namespace, pairs_file, folder)
    rows.append(Row("cache -> matrix time vs pq.read_table", label, read, reference, "<= 2.0x"))
    rows.append(Row("cache reads per run (DuckDB queries)", label, reads, 1, "<= 1.0x"))
    numbers.update(read=read, read_table=reference, reads=reads)
    numbers["epoch"] = epoch_seconds(features, dimension)
    numbers["epoch_per_pair"] = numbers["epoch"] / len(features.pair_texts)
    del features
    print(f"{label}: peak RSS {rss / 2**30:.2f} GiB (matrix {matrix / 2**30:.2f} GiB), read {read:.1f} s vs read_table {reference:.1f} s "
          f"in {reads} reads, epoch {numbers['epoch']:.1f} s", flush=True)  # fmt: skip
    return rows, numbers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default="100000,300000,1000000", help="comma-separated pair counts")
    parser.add_argument("--dims", default="384,1024", help="comma-separated vector dimensions (empty: the load measurement only)")
    parser.add_argument("--context-chars", type=int, default=1000, help="context size in the file of the load measurement")
    parser.add_argument("--quick", action="store_true", help="20k and 60k pairs at d=384: a smoke test of about a minute")
    parser.add_argument("--work", type=Path, help="folder for the data (default: a temporary one, removed at the end)")
    args = parser.parse_args()
    sizes = [20_000, 60_000] if args.quick else [int(n) for n in args.pairs.split(",")]
    dims = [384] if args.quick else [int(d) for d in args.dims.split(",") if d]
    work = Path(tempfile.mkdtemp(prefix="bench-scale-", dir=args.work))
    print(f"{os.cpu_count()} CPUs, {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB RAM, CUDA {torch.cuda.is_available()}; data in {work}", flush=True)
    try:
        print_table(run(work, sizes, dims, args.context_chars))
    finally:
        shutil.rmtree(work)


def run(work: Path, sizes: list[int], dims: list[int], context_chars: int) -> list[Row]:
    """Every measurement at every size; returns the table's rows."""
    rows = []
    for dimension in dims:
        baseline, _ = train_heads_peak_rss(*baseline_inputs(work, dimension))
        print(f"d={dimension}: train-heads on {BASELINE_PAIRS} pairs peaks at {baseline / 2**30:.2f} GiB (the baseline)", flush=True)
        measured = []
        for n in sizes:
            size_rows, numbers = measure_size(work, n, dimension, baseline)
            rows += size_rows
            measured.append(numbers)
        small, large = measured[0], measured[-1]
        label = f"{large['pairs'] // 1000}k / {small['pairs'] // 1000}k, d={dimension}"
        rows.append(Row("epoch seconds per pair, largest vs smallest", label, large["epoch_per_pair"], small["epoch_per_pair"], "<= 1.2x"))
        largest = work / f"{large['pairs']}-{dimension}"
        from_cache, from_memory, mapped = serve_latency(largest / "checkpoint", largest / "cache", large["pairs"])
        where = "memory-mapped index" if mapped else "index in RAM"
        rows.append(Row(f"serve request from --cache ({where}) vs in-memory LRU hit", f"{large['vectors'] // 1000}k vectors, d={dimension}", from_cache, from_memory, "<= 1.5x"))
        for n in sizes:
            shutil.rmtree(work / f"{n}-{dimension}")
    for n in sizes:
        path = write_jsonl(work / f"load-{n}.jsonl", n, context_chars)
        ours, reference = load_and_key(path)
        rows.append(Row(f"load + validate + key vs pl.read_ndjson ({path.stat().st_size / 1e6:.0f} MB)", f"{n // 1000}k", ours, reference, "<= 3.0x"))
        path.unlink()
    return rows


def baseline_inputs(work: Path, dimension: int) -> tuple[Path, Path, Path, int]:
    """A train-heads run on `BASELINE_PAIRS` pairs: what any run costs before its data."""
    folder = work / f"baseline-{dimension}"
    folder.mkdir()
    write_namespace(folder / "cache", distinct_keys(BASELINE_PAIRS), dimension)
    return write_jsonl(folder / "pairs.jsonl", BASELINE_PAIRS, 0), folder / "cache", folder / "checkpoint", dimension


def print_table(rows: list[Row]) -> None:
    print(f"\n{'measure':72} {'size':22} {'ours':>10} {'reference':>10} {'ratio':>7} {'target':>8}  result")
    for r in rows:
        print(f"{r.measure:72} {r.size:22} {r.ours:10.4g} {r.reference:10.4g} {r.ratio:6.2f}x {r.target:>8}  {'met' if r.met else 'MISSED'}")


if __name__ == "__main__":
    main()
