"""verl's own trainer reward path, driven in-process on CPU; prints JSON. Run by the RL environment's
python with this checkout first on PYTHONPATH (tests/rl_env.py):

    python tests/rl_clients/drive_verl.py SPEC.json

SPEC: {"tokenizer": a folder for a small byte-level BPE tokenizer (made if missing),
       "runs": [{"name": ..., "overrides": [Hydra overrides, as given to verl.trainer.main_ppo],
                 "env": {...}, "samples": [{"prompt", "response", "data_source", "extra_info", "ground_truth"}]}],
       "checks": {name: [overrides]}}   # optional: pipeline.verl_reward.check_config on each

Per run, what verl 0.9.1's main_ppo does with the reward settings: its ppo_trainer config composed
with the overrides (plus actor_rollout_ref.model.path=<the tokenizer>; main_ppo changes no reward
key), `RewardLoopWorker(config)` (which calls verl's load_reward_manager), the worker's
`compute_score_batch` on a DataProto of the samples, `assemble_rm_scores`, the extra-info columns
gathered as `RewardLoopManager.compute_rm_score` gathers them, `DataProto.union`, `extract_reward`
and `process_validation_metrics`. Prints {"verl": version, "runs": {name: {"rewards": [...],
"extra": {column: [...]}, "metrics": [...], "manager": ..., "scorer_calls": n} or {"error": "..."}},
"checks": {name: {"called": bool, "message": str}}}.
"""

import copy
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
import verl
from hydra import compose, initialize_config_dir
from tensordict import TensorDict
from verl import DataProto
from verl.experimental.reward_loop import RewardLoopWorker
from verl.trainer.ppo.metric_utils import process_validation_metrics
from verl.trainer.ppo.reward import extract_reward, resolve_reward_manager_cls

from pipeline import verl_reward
from pipeline.rewards import RewardScorer

CONFIG_DIR = Path(verl.__file__).parent / "trainer" / "config"


def make_tokenizer(folder: Path):
    """A byte-level BPE tokenizer (512 tokens, learnt on synthetic trajectories) saved as a transformers
    fast tokenizer: any text encodes and decodes back unchanged, and no model hub is needed."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if not (folder / "tokenizer.json").exists():
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        from data.synth import generate_pairs

        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        texts = [r[side]["trajectory_full_context"] for r in generate_pairs(8, seed=0) for side in ("positive", "negative")]
        trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<pad>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tokenizer.train_from_iterator(texts, trainer)
        fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", clean_up_tokenization_spaces=False)
        fast.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def trainer_config(overrides: list[str], tokenizer_folder: Path):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(config_name="ppo_trainer", overrides=[*overrides, f"actor_rollout_ref.model.path={tokenizer_folder}"])


def make_data(tokenizer, samples: list[dict]) -> DataProto:
    """A rollout batch as the trainer hands it to the reward loop: prompts left-padded, responses
    (EOS appended) right-padded, and the dataset columns the reward managers read."""
    prompts = [tokenizer.encode(s["prompt"], add_special_tokens=False) for s in samples]
    responses = [tokenizer.encode(s["response"], add_special_tokens=False) + [tokenizer.eos_token_id] for s in samples]
    for s, ids in zip(samples, responses):
        if tokenizer.decode(ids, skip_special_tokens=True) != s["response"]:
            raise ValueError(f"the tokenizer does not round-trip {s['response'][:60]!r}")
    p, r, pad = max(map(len, prompts)), max(map(len, responses)), tokenizer.pad_token_id
    prompt_ids = torch.tensor([[pad] * (p - len(x)) + x for x in prompts])
    response_ids = torch.tensor([x + [pad] * (r - len(x)) for x in responses])
    prompt_mask = torch.tensor([[0] * (p - len(x)) + [1] * len(x) for x in prompts])
    response_mask = torch.tensor([[1] * len(x) + [0] * (r - len(x)) for x in responses])
    attention_mask = torch.cat([prompt_mask, response_mask], dim=1)
    tensors = {
        "prompts": prompt_ids, "responses": response_ids, "input_ids": torch.cat([prompt_ids, response_ids], dim=1),
        "attention_mask": attention_mask, "position_ids": (attention_mask.cumsum(dim=1) - 1).clamp(min=0),
    }  # fmt: skip
    non_tensors = {
        "data_source": np.array([s["data_source"] for s in samples], dtype=object),
        "reward_model": np.array([{"ground_truth": s.get("ground_truth")} for s in samples], dtype=object),
        "extra_info": np.array([dict(s.get("extra_info") or {}) for s in samples], dtype=object),
        "uid": np.array([str(i) for i in range(len(samples))], dtype=object),
    }
    return DataProto.from_dict(tensors=tensors, non_tensors=non_tensors)


def score(worker: RewardLoopWorker, config, data: DataProto) -> DataProto:
    """The worker's scores as the trainer receives them: rm_scores plus the extra-info columns (on a
    copy of `data`: verl's managers and `union` change what they are given)."""
    data = copy.deepcopy(data)
    outputs = worker.loop.run_until_complete(worker.compute_score_batch(data))
    rm_scores = resolve_reward_manager_cls(config).assemble_rm_scores(data, [o["reward_score"] for o in outputs])
    # as RewardLoopManager.compute_rm_score gathers them (verl/experimental/reward_loop/reward_loop.py)
    infos = [o.get("reward_extra_info", {}) for o in outputs]
    keys = list(infos[0].keys())
    columns = {key: np.array([info[key] for info in infos]) for key in keys}
    reward = DataProto(batch=TensorDict({"rm_scores": rm_scores}, batch_size=len(data)), non_tensor_batch=columns, meta_info={"reward_extra_keys": keys})
    return data.union(reward)


def run(spec: dict, tokenizer, tokenizer_folder: Path) -> dict:
    saved = dict(os.environ)
    os.environ.update(spec.get("env", {}))
    verl_reward._scorer, verl_reward._server_info = None, None  # a fresh checkpoint per run
    calls_before = RewardScorer.calls_seen
    try:
        config = trainer_config(spec["overrides"], tokenizer_folder)
        worker = RewardLoopWorker(config)
        data = score(worker, config, make_data(tokenizer, spec["samples"]))
        reward_tensor, extra = extract_reward(data)
        rewards = reward_tensor.sum(dim=-1).tolist()
        # the trainer's validation metrics over the same columns (strings are carried, not averaged)
        infos = {"reward": rewards, **{key: values.tolist() for key, values in extra.items()}}
        metrics = process_validation_metrics(data.non_tensor_batch["data_source"], data.non_tensor_batch["uid"].tolist(), infos)
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"}
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return {
        "rewards": rewards,
        "extra": {key: values.tolist() for key, values in extra.items()},
        "metrics": sorted({f"{variable}/{name}" for per_source in metrics.values() for variable, names in per_source.items() for name in names}),
        "manager": type(worker.reward_manager).__name__,
        "scorer_calls": RewardScorer.calls_seen - calls_before,
    }


def count_scorer_calls() -> None:
    """Count the checkpoint's scoring calls in this process, whichever copy of our module makes them."""
    original = RewardScorer.rewards

    def counted(self, *args, **kwargs):
        RewardScorer.calls_seen += 1
        return original(self, *args, **kwargs)

    RewardScorer.calls_seen = 0
    RewardScorer.rewards = counted


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    folder = Path(spec["tokenizer"])
    tokenizer = make_tokenizer(folder)
    count_scorer_calls()
    runs = {r["name"]: run(r, tokenizer, folder) for r in spec["runs"]}
    checks = {name: dict(zip(("called", "message"), verl_reward.check_config(overrides))) for name, overrides in spec.get("checks", {}).items()}
    print(json.dumps({"verl": verl.__version__, "runs": runs, "checks": checks}))


if __name__ == "__main__":
    main()
