"""A verl reward manager (verl >= 0.7.1's reward loop) that scores the samples reaching a reward
worker together: one scorer call (or one request to `pipeline serve`) for all of them.

verl's reward loop has no `batch` manager: each reward worker hands its samples to the manager one
at a time (`run_single`), as concurrent asyncio tasks. This manager queues them and scores whatever
is queued with `pipeline.verl_reward.compute_score_batch` as soon as the worker is free, so the
samples verl hands over at once (a worker's share of a batch) make one call, and samples that
arrive while a call runs make the next one. Each sample's result is exactly what `compute_score`
would return for it (same keys, same rewards).

    REWARD_CHECKPOINT=/path/to/ckpt python -m verl.trainer.main_ppo ... \\
        reward.reward_manager.source=importlib \\
        reward.reward_manager.name=ModuleRewardManager \\
        reward.reward_manager.module.path=/path/to/module-reward-models/pipeline/verl_manager.py

It needs no `reward.custom_reward_function` (it always scores with this project); it refuses to
start when one is set that is not this project's. Importing this file needs verl.
"""

import asyncio
from functools import partial
from typing import Any

from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase

from pipeline import verl_reward


class ModuleRewardManager(RewardManagerBase):
    """verl's reward-loop manager interface (`run_single` per sample), batched underneath."""

    module_reward_models = "manager"  # how `python -m pipeline.verl_reward --check-config` recognises it

    def __init__(self, config, tokenizer, compute_score=None, reward_router_address=None, reward_model_tokenizer=None, **kwargs: Any):
        super().__init__(config, tokenizer, compute_score)
        custom = (config.get("reward") or {}).get("custom_reward_function") or {}
        raw = compute_score.args[0] if isinstance(compute_score, partial) and compute_score.args else compute_score
        if custom.get("path") and not getattr(raw, "module_reward_models", None):
            raise ValueError(
                f"ModuleRewardManager scores with module-reward-models only, but reward.custom_reward_function names "
                f"{custom.get('path')}:{custom.get('name')}; unset reward.custom_reward_function.path, or use verl's naive manager with that function"
            )
        self.batches = 0  # scorer calls made, for tests and the bench
        self._queue: list[tuple[tuple, asyncio.Future]] = []
        self._draining: asyncio.Task | None = None

    async def run_single(self, data) -> dict:
        """One sample's `{"reward_score": float, "reward_extra_info": dict}`, as verl's naive manager returns it."""
        sample = self._sample(data)
        loop = asyncio.get_running_loop()
        answer = loop.create_future()
        self._queue.append((sample, answer))
        if self._draining is None or self._draining.done():
            # scheduled behind the tasks verl has already started, so a worker's whole share is queued first
            self._draining = loop.create_task(self._drain())
        return await answer

    def _sample(self, data) -> tuple:
        """(data_source, response text, ground truth, extra_info) of the last sequence, read as the naive manager reads them."""
        item = data[-1:][0]
        response_ids = item.batch["responses"]
        valid_length = int(item.batch["attention_mask"][-response_ids.shape[-1] :].sum())
        response = self.tokenizer.decode(response_ids[:valid_length], skip_special_tokens=True)
        extra_info = dict(item.non_tensor_batch.get("extra_info") or {})
        tool_extra_fields = item.non_tensor_batch.get("tool_extra_fields", None)
        if tool_extra_fields is not None:
            extra_info.update(tool_extra_fields.items())
        reward_model = item.non_tensor_batch.get("reward_model") or {}
        return item.non_tensor_batch.get("data_source"), response, reward_model.get("ground_truth"), extra_info

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            batch, self._queue = self._queue, []
            columns = [list(column) for column in zip(*(sample for sample, _ in batch))]
            self.batches += 1
            try:
                results = await loop.run_in_executor(None, verl_reward.compute_score_batch, *columns)
            except Exception as error:  # every sample of the call fails with it, as each would alone
                for _, answer in batch:
                    if not answer.done():
                        answer.set_exception(error)
                continue
            for (_, answer), result in zip(batch, results):
                if not answer.done():
                    answer.set_result({"reward_score": result["score"], "reward_extra_info": result})
