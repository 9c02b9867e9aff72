"""How fast `load_pairs` reads, validates and keys N pairs of JSON Lines, next to plain
`polars.read_ndjson` of the same file.

    .venv/bin/python bench/load.py [--pairs 100000]

The file shares texts as real data does: the 4 modules of a task share its two contexts (1-2 KB
each), every module text (300-600 chars) is its own. Each step runs best of `--runs` in a fresh
process, so the peak memory printed (max RSS) is that step's alone. Prints the wall times and
their ratio to `read_ndjson`, measured in one run on one file (this machine is noisy: compare the
ratios, not the seconds). Target: load + validate + key <= 3x read_ndjson.
"""

import argparse
import json
import multiprocessing
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MODULES = ("reflection", "planner", "executor", "memory")


def write_jsonl(path: Path, n_pairs: int, seed: int = 0) -> None:
    """`n_pairs` valid pairs, 4 per task; texts are slices of one random word soup at random
    offsets (prefixed with their task or pair so each is distinct), which is fast to make."""
    rng = random.Random(seed)
    words = ["the", "agent", "calls", "search", "with", "query", "result", "plan", "round", "tool", "error", "retry", "memory", "store", "ok"]
    soup = " ".join(rng.choice(words) for _ in range(400_000))
    text = lambda prefix, lo, hi: f"{prefix} " + soup[(o := rng.randrange(len(soup) - hi)) : o + rng.randint(lo, hi)]  # noqa: E731
    with open(path, "w") as out:
        for i in range(n_pairs):
            task, module = divmod(i, len(MODULES))
            if module == 0:
                contexts = [json.dumps(text(f"task {task} {side}", 1000, 2000)) for side in ("success", "failure")]
            record = (
                f'{{"pair_id": "p{i}", "target_module": "{MODULES[module]}", "task": "task {task}", '
                f'"positive": {{"trajectory_full_context": {contexts[0]}, "module_k_all_rounds": {json.dumps(text(f"pair {i} +", 300, 600))}, "outcome": 1}}, '
                f'"negative": {{"trajectory_full_context": {contexts[1]}, "module_k_all_rounds": {json.dumps(text(f"pair {i} -", 300, 600))}, "outcome": 0}}}}\n'
            )
            out.write(record)


def read_ndjson(path: Path) -> None:
    import polars as pl

    pl.read_ndjson(path)


def load(path: Path) -> None:
    from data import load_pairs

    load_pairs(path)


def load_and_key(path: Path) -> None:
    from data import load_pairs
    from features.pairs import with_text_keys

    with_text_keys(load_pairs(path))


def _timed(step, path: Path, runs: int, results) -> None:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        step(path)
        times.append(time.perf_counter() - start)
    results.put((min(times), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def measure(step, path: Path, runs: int) -> tuple[float, float]:
    """Best wall time of `runs` calls of `step(path)` in a fresh process, and its peak RSS in MB."""
    results = multiprocessing.get_context("spawn").Queue()
    process = multiprocessing.get_context("spawn").Process(target=_timed, args=(step, path, runs, results))
    process.start()
    seconds, peak = results.get()
    process.join()
    return seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "pairs.jsonl"
        write_jsonl(path, args.pairs)
        size_mb = path.stat().st_size / 1e6
        base, base_peak = measure(read_ndjson, path, args.runs)
        validated, validated_peak = measure(load, path, args.runs)
        keyed, keyed_peak = measure(load_and_key, path, args.runs)
    print(f"{args.pairs} pairs, {size_mb:.0f} MB of JSON Lines, best of {args.runs}; peak RSS per step")
    print(f"polars.read_ndjson:                 {base:7.2f} s  {base_peak:7.0f} MB")
    print(f"load_pairs (load + validate):       {validated:7.2f} s  {validated_peak:7.0f} MB  {validated / base:5.2f}x")
    print(f"+ with_text_keys (load+val.+key):   {keyed:7.2f} s  {keyed_peak:7.0f} MB  {keyed / base:5.2f}x  (target <= 3x)")


if __name__ == "__main__":
    main()
