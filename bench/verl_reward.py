"""verl's reward path per sample vs batched, side by side in one run, on the same samples.

Both go through verl 0.9.1's own `RewardLoopWorker` (its ppo_trainer config composed with the
overrides of docs/rl-rewards.md, `compute_score_batch` on a DataProto of the samples, as
tests/rl_clients/drive_verl.py drives it):
- per sample: verl's naive manager calling `pipeline/verl_reward.py:compute_score` once per sample
  (on verl's thread pool, so the calls overlap; the scorer serialises them);
- batched: `pipeline/verl_manager.py:ModuleRewardManager`, one `compute_score_batch` call for all.
In-process (each worker its own copy of the checkpoint) and, with --server, through one
`pipeline serve` (per sample: one request per sample, micro-batched by the server; batched: one
request). Every round scores new samples (no vector is remembered from an earlier round), both
paths the same ones, in alternating order. Prints seconds per sample, the ratio and the largest
reward difference. Compare ratios, not seconds. Needs the RL clients' environment:

    PYTHONPATH=. .venv-rl/bin/python bench/verl_reward.py [--samples 32] [--rounds 3] [--max-tokens 128] [--server]
"""

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the pipeline command sets it; see docs/gpu.md "CPU threads"

import numpy as np  # noqa: E402

from data import pairs_from_records, write_pairs  # noqa: E402
from data.synth import generate_pairs  # noqa: E402
from data.trajectory import module_texts_from_trajectory  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.embed import embed_pairs, load_encoder  # noqa: E402
from pipeline.train_heads import train_heads  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OVERRIDES = {
    "per sample": [f"reward.custom_reward_function.path={ROOT}/pipeline/verl_reward.py", "reward.custom_reward_function.name=compute_score"],
    "batched": [
        "reward.reward_manager.source=importlib", "reward.reward_manager.name=ModuleRewardManager",
        f"reward.reward_manager.module.path={ROOT}/pipeline/verl_manager.py",
    ],
}  # fmt: skip


def load_script(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def workloads(n: int, rounds: int) -> dict[str, list[list[dict]]]:
    """Per workload, `rounds + 1` lists of n new samples (the first warms up): whole tagged
    trajectories (4 module texts each), and a trajectory's executor text named, in its trajectory
    as the context (1 each)."""
    records = generate_pairs(2 * n * (rounds + 1), seed=11)
    trajectories, named = [], []
    for i, r in enumerate(records):
        full = r["negative"]["trajectory_full_context"]  # distinct for every pair
        rounds_only = full.split("\n", 1)[1].lstrip()
        if i % 2 == 0:
            trajectories.append({"prompt": f"Task: {r['task']}", "response": rounds_only, "data_source": "agent", "extra_info": {"task": r["task"]}})
        else:
            executor = module_texts_from_trajectory(rounds_only)["executor"]
            named.append({"prompt": full[-300:], "response": executor, "data_source": "agent", "extra_info": {"module": "executor", "context": full}})
    chunk = lambda xs: [xs[i * n : (i + 1) * n] for i in range(rounds + 1)]  # noqa: E731
    return {"trajectory (4 modules)": chunk(trajectories), "named module (1)": chunk(named)}


def train_checkpoint(work: Path, max_tokens: int) -> Path:
    write_pairs(pairs_from_records(generate_pairs(120, seed=5)), work / "train.jsonl")
    config = load_config(
        overrides={
            "model.encoder": "minilm", "model.max_context_tokens": max_tokens, "model.max_module_tokens": max_tokens,
            "stage_0.epochs": 1, "training.device": "cpu",
        }
    )  # fmt: skip
    embed_pairs([work / "train.jsonl"], work / "cache", config, encoder=load_encoder(config), progress=False)
    train_heads(files=[work / "train.jsonl"], cache_dir=work / "cache", out=work / "checkpoint", config=config, progress=False)
    return work / "checkpoint"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=32, help="samples per round and workload (one reward worker's share)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--server", action="store_true", help="also through one `pipeline serve`")
    args = parser.parse_args()

    drive = load_script(ROOT / "tests" / "rl_clients" / "drive_verl.py", "drive_verl")
    work = Path(tempfile.mkdtemp(prefix="bench-verl-"))
    print(f"training heads (setup, not measured) in {work} ...", flush=True)
    checkpoint = train_checkpoint(work, args.max_tokens)
    tokenizer = drive.make_tokenizer(work / "tokenizer")
    drive.count_scorer_calls()
    # per mode, each path's environment and how many scorer calls it has made so far
    in_process = {"REWARD_CHECKPOINT": str(checkpoint), "REWARD_DEVICE": "cpu"}
    modes = {"in-process": {path: (in_process, lambda: drive.RewardScorer.calls_seen) for path in OVERRIDES}}
    servers = []
    if args.server:  # a server per path: each remembers only the vectors of its own requests
        serve = load_script(ROOT / "bench" / "serve.py", "bench_serve")
        servers = [serve.Server(checkpoint, work / "cache", work / f"server-{i}.log").__enter__() for i in range(len(OVERRIDES))]
        modes["pipeline serve"] = {
            path: ({"REWARD_URL": f"http://127.0.0.1:{server.port}"}, lambda server=server: server.health()["scorer_calls"])
            for path, server in zip(OVERRIDES, servers)
        }  # fmt: skip
    try:
        results = {}
        for mode, paths in modes.items():
            workers = {}
            for path, overrides in OVERRIDES.items():
                os.environ.update(paths[path][0])  # read when the worker's first sample is scored
                workers[path] = (drive.RewardLoopWorker(drive.trainer_config(overrides, work / "tokenizer")), overrides)
            for workload, rounds in workloads(args.samples, args.rounds).items():
                seconds = {path: 0.0 for path in OVERRIDES}
                calls = {path: 0 for path in OVERRIDES}
                rewards = {path: [] for path in OVERRIDES}
                for i, samples in enumerate(rounds):
                    data = drive.make_data(tokenizer, samples)
                    for path in list(OVERRIDES) if i % 2 else list(reversed(OVERRIDES)):
                        worker, overrides = workers[path]
                        environment, calls_so_far = paths[path]
                        os.environ.update(environment)
                        before = calls_so_far()
                        start = time.perf_counter()
                        scored = drive.score(worker, worker.config, data)
                        if i > 0:  # round 0 warms up
                            seconds[path] += time.perf_counter() - start
                            calls[path] += calls_so_far() - before
                            rewards[path] += scored.batch["rm_scores"].sum(dim=-1).tolist()
                        for name in environment:
                            del os.environ[name]
                results[(mode, workload)] = (seconds, calls, rewards)
    finally:
        for server in servers:
            server.__exit__(None, None, None)
        shutil.rmtree(work)

    n = args.samples * args.rounds
    print(f"\nverl {drive.verl.__version__} RewardLoopWorker, {args.samples} samples per call x {args.rounds} rounds, MiniLM heads at {args.max_tokens} tokens, {os.cpu_count()} CPUs")
    print(f"{'scorer':15} {'workload':23} {'per sample ms':>14} {'batched ms':>11} {'calls':>11} {'ratio':>7} {'max diff':>9}")
    for (mode, workload), (seconds, calls, rewards) in results.items():
        single, batched = (1000 * seconds[p] / n for p in OVERRIDES)
        diff = float(np.max(np.abs(np.array(rewards["per sample"]) - np.array(rewards["batched"]))))
        print(f"{mode:15} {workload:23} {single:14.1f} {batched:11.1f} {calls['per sample']:5d}/{calls['batched']:<5d} {single / batched:6.1f}x {diff:9.1e}")


if __name__ == "__main__":
    sys.exit(main())
