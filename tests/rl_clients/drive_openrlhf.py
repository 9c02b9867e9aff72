"""Drives OpenRLHF's own reward client (0.11.2: `SingleTurnAgentExecutor` with `remote_rm_url`)
against a running `pipeline serve`, as its rollout does: the prompt is tokenized, left-truncated to
fit `max_length`, "generated" by a stand-in engine that answers a fixed response, decoded, and sent
to /get_reward with OpenRLHF's own HTTP code (retries and all). Runs in the RL clients' environment
(tests/rl_env.py); prints one JSON object per case, in order, as a JSON list on the last line of
stdout (OpenRLHF's logger writes to stdout too).

    python tests/rl_clients/drive_openrlhf.py --url http://127.0.0.1:8000/get_reward --cases cases.json --work DIR

cases.json: [{"prompt": "...", "label": "planner", "response": "<plan>...</plan>", "max_length": 64}, ...]
(or "keep_prompt_tokens": n instead of "max_length": room for the response and the prompt's last n tokens).
Each answer: reward, scores and extra_logs as the client kept them, the query it decoded, and how many
of the prompt's tokens it kept. The tokenizer is a byte-level BPE (as Qwen's and Llama 3's are) trained
here on the cases' texts and loaded through transformers, so no model hub is needed.
"""

import argparse
import asyncio
import json
from pathlib import Path
from types import SimpleNamespace


def make_tokenizer(texts: list[str], folder: Path):
    """A small byte-level BPE saved and reloaded as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<|endoftext|>"])
    tokenizer.train_from_iterator(texts, trainer)
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>", pad_token="<|endoftext|>").save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


class Engine:
    """Stands in for vLLM: `generate` answers the case's response, as token ids."""

    def __init__(self, response_ids: list[int]):
        self.response_ids = response_ids
        self.prompt_ids: list[int] | None = None

    async def generate(self, prompt_ids, sampling_params, multi_modal_data=None):
        self.prompt_ids = list(prompt_ids)
        ids = self.response_ids[: sampling_params.max_tokens]
        return SimpleNamespace(outputs=[SimpleNamespace(token_ids=ids, text=None, finish_reason="stop", logprobs=None)])


async def drive(url: str, cases: list[dict], tokenizer) -> list[dict]:
    from openrlhf.utils.agent import SingleTurnAgentExecutor

    executor = SingleTurnAgentExecutor(remote_rm_url=url)
    results = []
    for case in cases:
        response_ids = tokenizer(case["response"], add_special_tokens=False)["input_ids"]
        engine = Engine(response_ids)
        params = SimpleNamespace(max_tokens=len(response_ids), logprobs=None)
        max_length = case["max_length"] if "max_length" in case else len(response_ids) + case["keep_prompt_tokens"]
        out = await executor.execute(case["prompt"], case["label"], params, max_length, tokenizer, engine)
        results.append({
            "reward": out["reward"], "scores": out["scores"], "extra_logs": out["extra_logs"],
            "query": tokenizer.decode(out["observation_tokens"], skip_special_tokens=False),
            "prompt_tokens": len(tokenizer(case["prompt"], add_special_tokens=False)["input_ids"]),
            "kept_prompt_tokens": len(engine.prompt_ids),
        })  # fmt: skip
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--cases", required=True, type=Path)
    parser.add_argument("--work", required=True, type=Path)
    args = parser.parse_args()
    cases = json.loads(args.cases.read_text())
    tokenizer = make_tokenizer([c["prompt"] for c in cases] + [c["response"] for c in cases], args.work / "tokenizer")
    print(json.dumps(asyncio.run(drive(args.url, cases, tokenizer))))


if __name__ == "__main__":
    main()
