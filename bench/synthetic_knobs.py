"""What moves validation accuracy on the hard synthetic data: train-heads with one config overlay
after another on the same split, each on vectors the cache already holds (or embeds first).

    python bench/synthetic_knobs.py --work rq/synthetic            # after real_quality.py --synthetic
    python bench/synthetic_knobs.py --work rq/synthetic --only tokens512,tokens512+head256

The split is bench/real_quality.py's (`pipeline synth --pairs 4000 --seed 0`, default split: 3200
train, 400 val of unseen tasks). Each setting is the base config (MiniLM, 256 tokens, left
truncation) with one overlay; settings that change the encoder's view (tokens, truncation side) are
embedded first, into their own cache namespace. Prints validation accuracy overall and per module,
the best epoch and the train-heads time; nothing here looks at the test split.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import yaml  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_quality import BASE_CONFIG, merge, pipeline  # noqa: E402

TOKENS_512 = {"model": {"max_context_tokens": 512, "max_module_tokens": 512}}
SETTINGS = {
    "default": {},
    "head256": {"model": {"head": "256"}},
    "linear": {"model": {"head": "linear"}, "stage_0": {"lr": 1e-3, "epochs": 20, "patience": 3}},
    "epochs20": {"stage_0": {"epochs": 20, "patience": 3}},
    "lr1e-3": {"stage_0": {"lr": 1e-3}},
    "lr1e-4-epochs20": {"stage_0": {"lr": 1e-4, "epochs": 20, "patience": 3}},
    "wd0.1": {"training": {"weight_decay": 0.1}},
    "dropout0.3": {"model": {"dropout": 0.3}},
    "head256-epochs20-dropout0.3": {"model": {"head": "256", "dropout": 0.3}, "stage_0": {"epochs": 20, "patience": 3}},
    "tokens512": TOKENS_512,
    "tokens512+head256": merge(TOKENS_512, {"model": {"head": "256"}}),
    "tokens512+epochs20": merge(TOKENS_512, {"stage_0": {"epochs": 20, "patience": 3}}),
    "truncate-right": {"model": {"truncation_side": "right"}},
}


def measure(work: Path, name: str, overlay: dict) -> dict:
    folder = work / "knobs" / name
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "config-overlay.yaml"
    config.write_text(yaml.safe_dump(merge(BASE_CONFIG, overlay), sort_keys=False))
    train, val = work / "splits" / "train.jsonl", work / "splits" / "val.jsonl"
    pipeline("embed", train, val, "--cache", work / "cache", "--config", config)
    start = time.time()
    pipeline("train-heads", train, "--val", val, "--cache", work / "cache", "--out", folder / "checkpoint", "--config", config)
    seconds = time.time() - start
    trained = json.loads((folder / "checkpoint" / "config.json").read_text())
    val_metrics = trained["metrics"]["val"]
    return {
        "setting": name,
        "val": val_metrics["pairwise_accuracy"],
        "modules": {m: v["pairwise_accuracy"] for m, v in val_metrics["modules"].items()},
        "best_epoch": trained["best_epoch"],
        "seconds": seconds,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="real_quality.py's synthetic work folder (splits/, cache/)")
    parser.add_argument("--only", help="comma-separated settings (default: all): " + ", ".join(SETTINGS))
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(SETTINGS)
    results = []
    for name in names:
        results.append(measure(args.work, name, SETTINGS[name]))
        with (args.work / "knobs" / "results.jsonl").open("a") as log:
            log.write(json.dumps(results[-1]) + "\n")
    modules = list(results[0]["modules"])
    print("\n| setting | val accuracy | " + " | ".join(modules) + " | best epoch | train-heads s |")
    print("|---|---:|" + "---:|" * (len(modules) + 2))
    for r in results:
        cells = " | ".join("–" if r["modules"][m] is None else f"{r['modules'][m]:.3f}" for m in modules)
        print(f"| {r['setting']} | {r['val']:.3f} | {cells} | {r['best_epoch']} | {r['seconds']:.0f} |")
