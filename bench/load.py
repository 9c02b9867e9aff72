"""How fast `load_pairs` reads and validates 100k pairs, next to plain `json.load` of the same file.

    .venv/bin/python bench/load.py [--pairs 100000]

Prints both wall times and their ratio, measured in one run on one file (this machine is noisy:
compare the ratio, not the seconds).
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

from data import load_pairs
from data.synth import generate_pairs


def best_of(runs: int, function) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "pairs.json"
        path.write_text(json.dumps(generate_pairs(args.pairs, seed=0)))
        size_mb = path.stat().st_size / 1e6
        parse = best_of(3, lambda: json.loads(path.read_bytes()))
        load = best_of(3, lambda: load_pairs(path))
    print(f"{args.pairs} pairs, {size_mb:.0f} MB of JSON")
    print(f"json.loads only:              {parse:6.2f} s")
    print(f"load_pairs (parse+validate):  {load:6.2f} s")
    print(f"load_pairs / json.loads:      {load / parse:6.2f}x")


if __name__ == "__main__":
    main()
