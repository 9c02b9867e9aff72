"""`pipeline serve` with micro-batching vs one request at a time, side by side in one run.

Two servers on 127.0.0.1 serve the same checkpoint (MiniLM heads, 128 tokens): one as configured
by default (micro-batches of up to 64 rows within 5 ms), one with `--max-batch 1` (every request
scored alone). 16 client threads each send one-row POST /score requests back to back, over
keep-alive connections, until a fixed list of requests is done; the script prints throughput,
p50/p99 latency and errors for two workloads, and checks that both servers return the same rewards.

- cached texts: the rows' vectors are in the embedding cache the server reads (`--cache`), as when
  re-scoring stored trajectories; a call's cost is mostly fixed (the heads; cached vectors come from an index read at start), which
  batching shares out.
- new texts: texts the server has never seen, as in RL rollouts (contexts shared by the rows of a
  task, as a prompt is shared by its samples); the encoder runs on every module text.

Loopback only, a bounded number of requests, stops by itself. Compare ratios, not seconds.

`--adversarial` measures instead what one maximal request costs everyone else: a /score request of
long module texts (("w%d " % i) * 3000 each, as many items as fit in serve.max_request_chars),
then one-row requests of new texts sent one after another while it is in flight. It prints the
one-row latency unloaded and meanwhile, their ratio, the server's RSS before, at its peak and
after the burst, and how soon a request whose client hangs up after 3 s stops being scored.

    .venv/bin/python bench/serve.py [--pairs 200] [--new-pairs 100] [--clients 16] [--max-tokens 128]
    .venv/bin/python bench/serve.py --adversarial [--pairs 40] [--max-tokens 256]
"""

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the pipeline command sets it; see docs/gpu.md "CPU threads"

import numpy as np  # noqa: E402

from data import load_pairs, pairs_from_records, write_pairs  # noqa: E402
from data.synth import generate_pairs  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.embed import embed_pairs, load_encoder  # noqa: E402
from pipeline.train_heads import train_heads  # noqa: E402


def rows_of(path: Path) -> list[dict]:
    """Both sides of every pair as /score items."""
    pairs = load_pairs(path)
    return [
        {"context": c, "module": m, "module_text": t}
        for side in ("positive", "negative")
        for c, m, t in zip(pairs[f"{side}_context"], pairs["target_module"], pairs[f"{side}_module_text"])
    ]


class Server:
    """`pipeline serve` in a subprocess on a free loopback port; stopped on exit."""

    def __init__(self, checkpoint: Path, cache: Path, log: Path, *flags: str):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        script = shutil.which("pipeline", path=str(Path(sys.executable).parent))
        command = [script, "serve", str(checkpoint), "--cache", str(cache), "--port", str(self.port), "--device", "cpu", *flags]
        self.log = open(log, "w")
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)

    def __enter__(self) -> "Server":
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                connection.request("GET", "/health")
                if connection.getresponse().status == 200:
                    return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"the server did not start; see {self.log.name}")

    def health(self) -> dict:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        connection.request("GET", "/health")
        return json.loads(connection.getresponse().read())

    def __exit__(self, *exc) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)
        self.log.close()


def run_clients(port: int, rows: list[dict], clients: int) -> dict:
    """`clients` threads send one-row requests back to back until all `rows` are done."""
    latencies = np.zeros(len(rows))
    rewards = np.full(len(rows), np.nan)
    errors: list[str] = []
    next_row = iter(range(len(rows)))
    lock = threading.Lock()

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            with lock:
                i = next(next_row, None)
            if i is None:
                return
            body = json.dumps({"items": [rows[i]]})
            start = time.perf_counter()
            try:
                connection.request("POST", "/score", body=body, headers={"Content-Type": "application/json"})
                response = connection.getresponse()
                answer = json.loads(response.read())
                if response.status != 200:
                    errors.append(f"{response.status}: {answer}")
                    continue
                rewards[i] = answer["rewards"][0]
            except (OSError, http.client.HTTPException) as e:
                errors.append(repr(e))
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            latencies[i] = time.perf_counter() - start

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    return {
        "requests": len(rows),
        "seconds": seconds,
        "throughput": len(rows) / seconds,
        "p50_ms": 1000 * float(np.percentile(latencies, 50)),
        "p99_ms": 1000 * float(np.percentile(latencies, 99)),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "rewards": rewards,
    }


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def one_row(port: int, i: int) -> float:
    """Seconds for a one-row /score of texts the server has not seen."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    body = json.dumps({"items": [{"context": f"Task: probe {i}", "module": "planner", "module_text": f"<plan>step {i}</plan>"}]})
    start = time.perf_counter()
    connection.request("POST", "/score", body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    response.read()
    assert response.status == 200, response.status
    return time.perf_counter() - start


def adversarial(checkpoint: Path, cache: Path, work: Path) -> None:
    limit = load_config().serve.max_request_chars  # the default
    items, chars = [], 0
    for i in range(1024):
        text = ("w%d " % i) * 3000
        if chars + len(text) + 9 > limit:
            break
        items.append({"context": "Task: x", "module": "planner", "module_text": text})
        chars += len(text) + 7
    body = json.dumps({"items": items}).encode()
    with Server(checkpoint, cache, work / "server-adversarial.log") as server:
        pid = server.process.pid
        for i in range(5):
            one_row(server.port, -1 - i)  # warm up
        unloaded = [one_row(server.port, i) for i in range(20)]
        before = rss_mb(pid)
        peak = [before]
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.is_set():
                peak.append(rss_mb(pid))
                time.sleep(0.05)

        threading.Thread(target=sample, daemon=True).start()
        big: dict = {}

        def send_big(hang_up_after: float | None) -> None:
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=hang_up_after or 600)
            start = time.perf_counter()
            try:
                connection.request("POST", "/score", body=body, headers={"Content-Type": "application/json"})
                response = connection.getresponse()
                response.read()
                big["status"] = response.status
            except OSError as e:  # the timeout: the client hangs up
                big["status"] = repr(e)
            connection.close()
            big["seconds"] = time.perf_counter() - start

        thread = threading.Thread(target=send_big, args=(None,))
        thread.start()
        time.sleep(1.0)  # it is read and queued
        loaded = []
        while thread.is_alive() and len(loaded) < 20:
            loaded.append(one_row(server.port, 100 + len(loaded)))
        thread.join()
        first = dict(big)
        # the same request again, its client hanging up after 3 s: when does the server stop scoring it?
        calls = server.health()["scorer_calls"]
        body = body.replace(b'"module_text": "w', b'"module_text": "v')  # new texts: the first ones are in the server's memory now
        send_big(3.0)
        time.sleep(1.0)
        calls_after_hangup = server.health()["scorer_calls"]
        time.sleep(2.0)
        health = server.health()
        time.sleep(2.0)
        sampling.set()
        after = rss_mb(pid)
        health = server.health()

    u, l = 1000 * float(np.median(unloaded)), 1000 * float(np.median(loaded))
    print(f"\nadversarial: one /score of {len(items)} items, {chars:,} characters ({len(body):,} bytes), {os.cpu_count()} CPUs")
    print(f"  the large request: {first['status']} in {first['seconds']:.1f} s")
    print(f"  one-row latency unloaded p50 {u:.0f} ms; while the large request is in flight p50 {l:.0f} ms, max {1000 * max(loaded):.0f} ms "
          f"({len(loaded)} requests); ratio {l / u:.1f}x")  # fmt: skip
    print(f"  client hung up after 3 s: scorer calls 1 s later +{calls_after_hangup - calls}, 3 s later +{health['scorer_calls'] - calls}; "
          f"abandoned {health['abandoned']}")  # fmt: skip
    print(f"  server RSS before {before:.0f} MB, peak {max(peak):.0f} MB, after {after:.0f} MB ({after - before:+.0f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=200, help="pairs embedded into the cache: 2 requests each (cached texts)")
    parser.add_argument("--new-pairs", type=int, default=100, help="pairs never embedded: 2 requests each (new texts)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--adversarial", action="store_true", help="one maximal request against one-row requests (see the docstring)")
    args = parser.parse_args()
    if args.adversarial:
        args.new_pairs = 0

    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    records = generate_pairs(args.pairs + args.new_pairs, seed=0)
    write_pairs(pairs_from_records(records[: args.pairs]), work / "cached.jsonl")
    write_pairs(pairs_from_records(records[args.pairs :]), work / "new.jsonl")
    config = load_config(
        overrides={
            "model.encoder": "minilm", "model.max_context_tokens": args.max_tokens, "model.max_module_tokens": args.max_tokens,
            "stage_0.epochs": 1, "training.device": "cpu",
        }
    )  # fmt: skip
    print(f"embedding {args.pairs} pairs and training heads (setup, not measured) in {work} ...", flush=True)
    embed_pairs([work / "cached.jsonl"], work / "cache", config, encoder=load_encoder(config), progress=False)
    train_heads(files=[work / "cached.jsonl"], cache_dir=work / "cache", out=work / "checkpoint", config=config, progress=False)
    if args.adversarial:
        adversarial(work / "checkpoint", work / "cache", work)
        shutil.rmtree(work)
        return
    workloads = {"cached texts": rows_of(work / "cached.jsonl"), "new texts": rows_of(work / "new.jsonl")}
    warm_up = [{"context": f"warm-up context {i}", "module": "planner", "module_text": f"warm-up plan {i}"} for i in range(32)]

    results: dict[str, dict[str, dict]] = {}
    for mode, flags in (("micro-batched", ()), ("one at a time", ("--max-batch", "1"))):
        with Server(work / "checkpoint", work / "cache", work / f"server-{mode.replace(' ', '-')}.log", *flags) as server:
            run_clients(server.port, warm_up, args.clients)
            for name, rows in workloads.items():
                before = server.health()["scorer_calls"]
                results.setdefault(name, {})[mode] = run_clients(server.port, rows, args.clients)
                results[name][mode]["calls"] = server.health()["scorer_calls"] - before

    print(f"\n{args.clients} concurrent clients, one row per POST /score, MiniLM heads at {args.max_tokens} tokens, {os.cpu_count()} CPUs, 127.0.0.1")
    print(f"{'workload':13} {'server':14} {'requests':>8} {'calls':>6} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
    for name, modes in results.items():
        for mode, r in modes.items():
            print(f"{name:13} {mode:14} {r['requests']:8d} {r['calls']:6d} {r['throughput']:8.1f} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f} {r['errors']:6d}")
            if r["first_error"]:
                print(f"  first error: {r['first_error']}")
        batched, single = modes["micro-batched"], modes["one at a time"]
        same = float(np.nanmax(np.abs(batched["rewards"] - single["rewards"])))
        print(f"{name}: throughput micro-batched / one at a time = {batched['throughput'] / single['throughput']:.1f}x (target >= 10x); "
              f"largest reward difference between the two servers {same:.1e}")  # fmt: skip
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
