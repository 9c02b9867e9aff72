"""verl reward function: a checkpoint's per-module rewards as verl's custom reward function.

Which keys name it depends on verl's version (docs/rl-rewards.md, "verl", has the table and how each
row was checked); verl >= 0.9 reads only `reward.*` and silently ignores the old top-level keys:

    # verl >= 0.9 (also 0.7.1-0.8): in-process, each reward worker loads the checkpoint once
    # (REWARD_CACHE, REWARD_NORMALIZE=1, REWARD_DEVICE, REWARD_ENCODER are optional)
    REWARD_CHECKPOINT=/path/to/ckpt python -m verl.trainer.main_ppo ... \\
        reward.custom_reward_function.path=/path/to/module-reward-models/pipeline/verl_reward.py \\
        reward.custom_reward_function.name=compute_score
    # or through a running `pipeline serve` (one model for every worker, micro-batched)
    REWARD_URL=http://127.0.0.1:8000 python -m verl.trainer.main_ppo ...   # same two settings
    # verl <= 0.7.0: custom_reward_function.path=... custom_reward_function.name=compute_score; verl <= 0.6's
    # batch manager: reward_model.reward_manager=batch custom_reward_function.name=compute_score_batch
    # verl >= 0.7.1's reward loop has no batch manager: pipeline/verl_manager.py is one (see there)

    # will verl call it? composes verl's config as main_ppo does (run it in verl's environment)
    python -m pipeline.verl_reward --check-config reward.custom_reward_function.path=... [more overrides]

    from pipeline.verl_reward import compute_score
    compute_score("agent", "[Round 1]\\n<plan>...</plan>\\n<action>...</action>", None, {"task": "Book a flight ..."})
    # {"score": 0.12, "reflection_score": 0.0, "planner_score": 0.31, "executor_score": -0.07, "memory_score": 0.0}

What is scored, per sample (`extra_info` is the dataset row's extra_info column):
- A module is named, by `extra_info["module"]` or else the env var REWARD_MODULE: `solution_str` is
  that module's text, judged in the context `extra_info["context"]` (required then: the trajectory
  so far). `score` is that module's reward.
- No module named: `solution_str` is a trajectory in the tagged style of the pair format
  (`[Round N]`, `<reflection>`, `<plan>`, `<action>`, `<tool results>`, `<memory query>`, ...). Each
  module's text is cut out of it (`data.trajectory.module_texts_from_trajectory`) and scored in the
  context `Task: {extra_info["task"]}` + newline + `solution_str` (just `solution_str` without a
  task); `score` is the mean over the trained modules that have text.
- The result always holds `score` and one `<module>_score` per scored module of the checkpoint, so
  every sample has the same keys (verl gathers them into columns); a module that was not scored
  gets 0.0, and a response with no module text at all scores 0.0. A checkpoint with modules it does
  not score (no training pairs) adds `modules_left_out`, a string such as "reflection,planner,memory"
  (verl 0.9.1 carries string columns along and leaves them out of its metrics).
  `data_source` and `ground_truth` are not used.

Rewards are the heads' rewards, or (r - mean) / std per module with REWARD_NORMALIZE=1 in-process
(through the server, whatever it was started with: `pipeline serve --normalize`).

A checkpoint trained with `--ensemble K` adds one key, `uncertainty` (verl collects it into
`reward_extra_info` like the `<module>_score` keys): the members' standard deviation of the named
module's reward, or, for a trajectory, the mean of its scored modules' standard deviations (which
bounds the spread of `score` itself from above); 0.0 when nothing was scored. Single-model
checkpoints return the keys above and no other.
"""

import argparse
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

_scorer = None
_server_info: dict | None = None
_lock = threading.Lock()


def compute_score(data_source: Any, solution_str: str, ground_truth: Any, extra_info: Mapping | None = None, **kwargs: Any) -> dict[str, float]:
    """verl's per-sample reward function: `{"score": float, "<module>_score": float, ...}` (and
    `"uncertainty": float` for an ensemble checkpoint)."""
    return compute_score_batch([data_source], [solution_str], [ground_truth], [extra_info])[0]


def compute_score_batch(
    data_sources: Sequence[Any], solution_strs: Sequence[str], ground_truths: Sequence[Any], extra_infos: Sequence[Mapping | None] | None = None, **kwargs: Any
) -> list[dict[str, float]]:
    """The batch form: one dict per sample, all rows scored in one call (one request or as few as
    the server's limits allow). verl <= 0.6's batch manager calls it (`reward_model.reward_manager=batch`),
    and so does pipeline/verl_manager.py on verl >= 0.7.1."""
    extra_infos = list(extra_infos) if extra_infos is not None else [None] * len(solution_strs)
    modules, scorable = _modules()
    rows: list[tuple[int, str, str, str]] = []  # (sample, module, context, module text)
    for i, (solution, extra) in enumerate(zip(solution_strs, extra_infos)):
        rows += _rows(i, solution, extra or {}, modules, scorable)
    rewards, uncertainty = _score([r[2] for r in rows], [r[3] for r in rows], [r[1] for r in rows]) if rows else ([], [])
    ensemble = _members() > 1
    left_out = ",".join(m for m in modules if m not in scorable)
    results = [
        {"score": 0.0, **{f"{m}_score": 0.0 for m in scorable}, **({"uncertainty": 0.0} if ensemble else {}), **({"modules_left_out": left_out} if left_out else {})}
        for _ in solution_strs
    ]  # fmt: skip
    scored: list[list[float]] = [[] for _ in solution_strs]
    spread: list[list[float]] = [[] for _ in solution_strs]
    for (i, module, _, _), reward, std in zip(rows, rewards, uncertainty or [0.0] * len(rows)):
        results[i][f"{module}_score"] = float(reward)
        scored[i].append(float(reward))
        spread[i].append(float(std))
    for result, values, stds in zip(results, scored, spread):
        if values:
            result["score"] = sum(values) / len(values)
            if ensemble:
                result["uncertainty"] = sum(stds) / len(stds)
    return results


# how `--check-config` and pipeline/verl_manager.py recognise these functions in a copy verl loads by path
compute_score.module_reward_models = "compute_score"
compute_score_batch.module_reward_models = "compute_score_batch"


def _rows(i: int, solution: str, extra: Mapping, modules: Sequence[str], scorable: Sequence[str]) -> list[tuple[int, str, str, str]]:
    from data.trajectory import module_texts_from_trajectory

    if not isinstance(solution, str):
        raise TypeError(f"solution_str of sample {i} must be a string, got {type(solution).__name__}")
    module = extra.get("module") or os.environ.get("REWARD_MODULE")
    if module:
        if module not in modules:
            raise ValueError(f"sample {i}: unknown module {module!r} (the checkpoint has: {', '.join(modules)})")
        if module not in scorable:
            raise ValueError(f"sample {i}: {_refusal(module)}")
        context = extra.get("context")
        if not isinstance(context, str):
            raise ValueError(f"sample {i}: module {module!r} is named, so extra_info['context'] must hold the trajectory it is judged in")
        return [(i, module, context, solution)]
    task = extra.get("task")
    context = f"Task: {task}\n{solution}" if isinstance(task, str) and task else solution
    texts = module_texts_from_trajectory(solution)
    # only the modules whose heads were trained (and, normalised, have a mean/std): the others are
    # named in `modules_left_out`, never averaged in
    return [(i, m, context, texts[m]) for m in scorable if m in texts]


def _modules() -> tuple[list[str], list[str]]:
    """(the checkpoint's modules, the ones it scores: trained heads, with a mean/std when normalised)."""
    if os.environ.get("REWARD_URL"):
        info = _server()
        return list(info["modules"]), list(info.get("scorable_modules", info["modules"]))
    scorer = _local_scorer()
    return scorer.modules, scorer.scorable_modules


def _refusal(module: str) -> str:
    if os.environ.get("REWARD_URL"):
        info = _server()
        return f"module {module!r} is not scored by the server at {os.environ['REWARD_URL']} (it scores: {', '.join(info.get('scorable_modules', []))}; trained on {info.get('module_pairs')})"
    return _local_scorer().refusal(module)


def _members() -> int:
    if os.environ.get("REWARD_URL"):
        return int(_server().get("ensemble", 1))
    return _local_scorer().members


def _score(contexts: list[str], module_texts: list[str], modules: list[str]) -> tuple[list[float], list[float] | None]:
    """Rewards and, for an ensemble checkpoint, their uncertainty (else None)."""
    if not os.environ.get("REWARD_URL"):
        scored = _local_scorer().rewards(contexts, module_texts, modules)
        return scored.rewards.tolist(), scored.uncertainty.tolist() if _members() > 1 else None
    url, limits = os.environ["REWARD_URL"].rstrip("/"), _server()
    rewards: list[float] = []
    uncertainty: list[float] = []
    for items in _requests_within(limits["max_request_rows"], limits["max_body_bytes"], contexts, module_texts, modules):
        answer = _request(f"{url}/score", {"items": items})
        rewards += answer["rewards"]
        uncertainty += answer.get("uncertainty", [])
    return rewards, uncertainty if _members() > 1 else None


def _requests_within(max_rows: int, max_bytes: int, contexts: list[str], module_texts: list[str], modules: list[str]) -> list[list[dict]]:
    """/score items cut into requests that stay under the server's row and body limits."""
    requests: list[list[dict]] = [[]]
    size = 0
    for context, text, module in zip(contexts, module_texts, modules):
        item = {"context": context, "module": module, "module_text": text}
        item_size = len(json.dumps(item).encode()) + 2
        if requests[-1] and (len(requests[-1]) >= max_rows or size + item_size > 0.9 * max_bytes):
            requests.append([])
            size = 0
        requests[-1].append(item)
        size += item_size
    return requests if requests[0] else []


def _local_scorer():
    """The checkpoint named by REWARD_CHECKPOINT, loaded once per process."""
    global _scorer
    with _lock:
        if _scorer is None:
            from pipeline.rewards import load

            checkpoint = os.environ.get("REWARD_CHECKPOINT")
            if not checkpoint:
                raise RuntimeError("set REWARD_CHECKPOINT to a checkpoint folder (in-process scoring) or REWARD_URL to a `pipeline serve` address")
            _scorer = load(
                checkpoint,
                os.environ.get("REWARD_CACHE") or None,
                normalize=_flag("REWARD_NORMALIZE"),
                device=os.environ.get("REWARD_DEVICE", "auto"),
                encoder=os.environ.get("REWARD_ENCODER") or None,
                allow_untrained=_flag("REWARD_ALLOW_UNTRAINED"),
            )
        return _scorer


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _server() -> dict:
    """The server's /health, asked once per process: its modules and request limits."""
    global _server_info
    with _lock:
        if _server_info is None:
            _server_info = _request(f"{os.environ['REWARD_URL'].rstrip('/')}/health")
        return _server_info


def _request(url: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST" if data else "GET")
    timeout = float(os.environ.get("REWARD_TIMEOUT", "300"))
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            # 503: the server's queue is full (serve.max_pending); it says when to come back
            retry_after = e.headers.get("Retry-After", "")
            wait = int(retry_after) if e.code == 503 and retry_after.isdigit() else None
            if wait is None or time.monotonic() + wait > deadline:
                raise RuntimeError(f"{url} refused the request ({e.code}): {e.read().decode(errors='replace')}") from None
            time.sleep(wait)


# --- will verl call us? -------------------------------------------------------------------------

LEGACY_KEYS = ("custom_reward_function.path", "custom_reward_function.name", "reward_model.reward_manager", "reward_model.reward_loop_source")


def check_config(overrides: Sequence[str], config_name: str = "ppo_trainer") -> tuple[bool, str]:
    """Compose verl's trainer config with `overrides` as `python -m verl.trainer.main_ppo` does and
    ask verl's own loaders what its reward loop will score with: (True, how) when that is this
    project, else (False, why). Needs verl (>= 0.7.1, whose config has `reward`); tested on 0.9.1."""
    import verl
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    from verl.trainer import main_ppo
    from verl.trainer.ppo import reward as verl_rewards

    version = getattr(verl, "__version__", "?")
    with initialize_config_dir(config_dir=str(Path(verl.__file__).parent / "trainer" / "config"), version_base=None):
        config = compose(config_name=config_name, overrides=list(overrides))
    if "reward" not in config:
        return False, f"verl {version} has no `reward` config (verl <= 0.7.0): this check knows verl >= 0.7.1; see the version table in docs/rl-rewards.md"
    legacy = [key for key in LEGACY_KEYS if OmegaConf.select(config, key) is not None]
    translated = hasattr(main_ppo, "migrate_legacy_reward_impl")  # 0.7.1-0.8: main() translates the old keys into reward.*
    if translated:
        config = main_ppo.migrate_legacy_reward_impl(config)
    function = verl_rewards.get_custom_reward_fn(config)
    raw = function.args[0] if isinstance(function, partial) and function.args else function
    ours = getattr(raw, "module_reward_models", None)
    manager_config = config.reward.reward_manager
    if hasattr(verl_rewards, "resolve_reward_manager_cls"):
        manager = verl_rewards.resolve_reward_manager_cls(config)
    else:  # 0.7.1
        from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls
        from verl.utils.import_utils import load_extern_object

        register = manager_config.source == "register"
        manager = get_reward_manager_cls(manager_config.name) if register else load_extern_object(manager_config.module.path, manager_config.name)
    manager_name = manager_config.name if manager_config.source == "register" else f"{manager_config.module.path}:{manager_config.name}"
    custom = config.reward.custom_reward_function
    use_new_keys = (
        "set reward.custom_reward_function.path=/path/to/module-reward-models/pipeline/verl_reward.py reward.custom_reward_function.name=compute_score "
        "instead (or the reward.reward_manager.* keys of pipeline/verl_manager.py)."
    )
    if not legacy:
        ignored = ""
    elif translated:
        ignored = f" The top-level {', '.join(legacy)} are translated by this verl's main_ppo, but not by 0.8's main_ppo_sync nor by verl >= 0.9: {use_new_keys}"
    else:
        ignored = f" The top-level {', '.join(legacy)} you set {'is' if len(legacy) == 1 else 'are'} ignored by verl {version}'s main_ppo: {use_new_keys}"
    if custom.get("path") is None and config.reward.reward_model.get("enable"):
        return False, f"verl {version} will NOT call module-reward-models: with reward.reward_model.enable and no reward.custom_reward_function it scores with its reward model.{ignored}"
    if getattr(manager, "module_reward_models", None) == "manager":
        return True, f"verl {version} will call module-reward-models: its reward manager {manager_name} scores the samples of each reward worker together (compute_score_batch).{ignored}"
    if ours == "compute_score":
        return True, f"verl {version} will call module-reward-models: {custom.path}:{custom.name}, once per sample, through verl's {manager_name!r} reward manager.{ignored}"
    if ours == "compute_score_batch":
        return False, (
            f"verl {version} will call {custom.path}:compute_score_batch with one sample's keywords through its {manager_name!r} reward manager, "
            "which fails: compute_score_batch is for verl <= 0.6's batch manager. Name compute_score, or use pipeline/verl_manager.py to batch."
        )
    scorer = f"{custom.path}:{custom.name}" if custom.get("path") else "its default scorer (verl.utils.reward_score.default_compute_score: known data sources such as openai/gsm8k, NotImplementedError for others)"
    path = "unset" if custom.get("path") is None else repr(custom.path)
    return False, f"verl {version} will NOT call module-reward-models: reward.custom_reward_function.path is {path} and the reward manager is {manager_name!r}, so it scores with {scorer}.{ignored}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.verl_reward", description="Say whether verl's trainer will call this reward function.")
    parser.add_argument("--check-config", action="store_true", required=True, help="compose verl's trainer config with OVERRIDES and check its reward settings")
    parser.add_argument("--config-name", default="ppo_trainer", help="verl's trainer config (default: ppo_trainer)")
    parser.add_argument("overrides", nargs="*", help="the Hydra overrides you give verl.trainer.main_ppo")
    args = parser.parse_args(argv)
    try:
        called, message = check_config(args.overrides, args.config_name)
    except ImportError as e:
        print(f"--check-config needs verl installed in this environment: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # a bad override or path, as verl would report it
        print(f"verl could not build that config: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    print(message)
    return 0 if called else 1


if __name__ == "__main__":
    sys.exit(main())
