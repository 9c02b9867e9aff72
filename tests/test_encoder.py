"""The frozen text encoder on real models: the bundled MiniLM and a tiny random Qwen3 built like
Qwen3-Embedding (see conftest.py). Offline throughout."""

import copy
import json
import shutil
import time

import numpy as np
import pytest
import torch

from data import ConfigError
from features.encoder import QWEN3_CONTEXT_PROMPT, ROLES, EncoderLoadError, TextEncoder, pick_device, resolve_encoder

# Common English words that MiniLM's WordPiece vocabulary holds whole, so a text of n of them is
# exactly n tokens and "the last k tokens" is "the last k words".
WORDS = "the cat sat on a mat while dog ran far away from home and then came back to eat some food".split()


def words(n: int, start: int = 0) -> list[str]:
    return [WORDS[(start + i) % len(WORDS)] for i in range(n)]


@pytest.fixture(scope="module")
def minilm() -> TextEncoder:
    return TextEncoder.load("minilm", device="cpu")


@pytest.fixture(scope="module")
def qwen(tiny_qwen3_path) -> TextEncoder:
    return TextEncoder.load(str(tiny_qwen3_path), device="cpu")


def tokens(encoder: TextEncoder, text: str) -> int:
    return len(encoder.tokenizer(text, add_special_tokens=False)["input_ids"])


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return np.allclose(a, b, atol=1e-5)


# --- MiniLM ----------------------------------------------------------------------------------------


def test_minilm_loads_384_d_normalised_float32(minilm):
    vectors, truncated = minilm.encode(["Book the cheapest flight.", "[Round 1]\n<plan>search flights</plan>"], "module")
    assert minilm.dimension == 384 and minilm.model.get_embedding_dimension() == 384
    assert vectors.shape == (2, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert truncated == 0


def test_minilm_fingerprint_is_stable_json_and_has_no_prompt(minilm):
    again = TextEncoder.load("minilm", device="cpu", batch_size=7)  # batch size is not part of it
    fingerprint = minilm.fingerprint()
    assert again.fingerprint() == fingerprint
    assert json.loads(json.dumps(fingerprint)) == fingerprint
    assert fingerprint["encoder"] == "minilm"
    assert fingerprint["weights"].startswith("sha256:")
    assert fingerprint["pooling"] == "mean"
    assert fingerprint["context_prompt"] == "" and minilm.prompts == {"context": "", "module": ""}  # "auto", mean pooling
    assert fingerprint["dimension"] == 384 and fingerprint["normalize"] is True
    # 2048 and 512 asked for, MiniLM takes 256 (its sentence-transformers max_seq_length)
    assert fingerprint["max_context_tokens"] == fingerprint["max_module_tokens"] == 256
    assert fingerprint["truncation_side"] == "left"


def test_minilm_vectors_match_raw_sentence_transformers(minilm):
    texts = ["short", " ".join(words(40)), " ".join(words(900))]  # the last one is over 256 tokens
    vectors, truncated = minilm.encode(texts, "context")
    raw = minilm.model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    assert truncated == 1
    assert same(vectors[:2], raw[:2])  # untouched texts: exactly what sentence-transformers gives
    tail = " ".join(words(900)[-254:])  # 256 - [CLS] - [SEP]
    assert same(vectors[2], minilm.model.encode(tail, normalize_embeddings=True))


def test_empty_input_and_unknown_role(minilm):
    vectors, truncated = minilm.encode([], "module")
    assert vectors.shape == (0, 384) and vectors.dtype == np.float32 and truncated == 0
    with pytest.raises(ValueError, match="role"):
        minilm.encode(["x"], "trajectory")
    assert ROLES == ("context", "module")


# --- loading failures, resolution, devices ----------------------------------------------------------


def test_unloadable_model_fails_with_what_was_tried_and_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    (not_a_model / "notes.txt").write_text("no weights here")
    cases = {
        "Qwen/Qwen3-Embedding-0.6B": "Hugging Face Hub id",  # not downloadable here
        str(tmp_path / "missing" / "folder"): "local folder",
        str(not_a_model): "local folder",
    }
    for name, tried in cases.items():
        started = time.perf_counter()
        with pytest.raises(EncoderLoadError) as caught:
            TextEncoder.load(name, device="cpu")
        message = str(caught.value)
        assert name in message and tried in message
        assert "--encoder /path/to/local/folder" in message and "--encoder minilm" in message
        assert time.perf_counter() - started < 10, "offline, a failed load must not wait on the network"


def test_hub_id_loads_from_the_local_cache_offline_and_records_the_revision(tiny_qwen3_path, tmp_path, monkeypatch):
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--acme--tiny-embedding"
    shutil.copytree(tiny_qwen3_path, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setenv("SENTENCE_TRANSFORMERS_HOME", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    encoder = TextEncoder.load("acme/tiny-embedding", device="cpu")
    assert encoder.fingerprint()["encoder"] == "acme/tiny-embedding"
    assert encoder.fingerprint()["weights"] == f"revision:{revision}"


def test_resolve_encoder_and_pick_device(minilm_path):
    assert resolve_encoder("minilm") == str(minilm_path)
    assert resolve_encoder("Qwen/Qwen3-Embedding-0.6B") == "Qwen/Qwen3-Embedding-0.6B"
    assert resolve_encoder("/some/folder") == "/some/folder"
    assert pick_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert pick_device("cpu") == "cpu"
    with pytest.raises(ConfigError, match="device"):
        pick_device("gpu-please")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            pick_device("cuda")


# --- tiny Qwen3: last-token pooling, left padding, prompt, truncation -------------------------------


def test_last_token_pooling_pads_left(qwen):
    assert qwen.pooling == "lasttoken"
    assert qwen.tokenizer.padding_side == "left" and qwen.fingerprint()["padding_side"] == "left"
    batch = qwen.model.preprocess(["one", "one two three four"])
    assert batch["attention_mask"][:, -1].all()  # every text ends in a real token


def test_auto_prompt_is_the_qwen3_instruction_on_the_context_only(qwen):
    assert qwen.prompts == {"context": QWEN3_CONTEXT_PROMPT, "module": ""}
    assert qwen.fingerprint()["context_prompt"] == QWEN3_CONTEXT_PROMPT
    text = "Task: book a flight. [Round 1] <plan>search</plan>"
    as_context, _ = qwen.encode([text], "context")
    as_module, _ = qwen.encode([text], "module")
    prompted_by_hand, _ = qwen.encode([QWEN3_CONTEXT_PROMPT + text], "module")
    assert same(as_context, prompted_by_hand)
    assert not same(as_context, as_module)


def test_a_text_gets_the_same_vector_alone_or_padded_in_a_batch(qwen):
    short = "the cat sat on the mat"
    longer = [" ".join(words(n, start=n)) for n in (60, 150, 300)]
    for role in ROLES:
        alone, _ = qwen.encode([short], role)
        batched, _ = qwen.encode([longer[0], short, longer[1], longer[2]], role)
        assert same(alone[0], batched[1])
        assert not same(batched[0], batched[1])


def test_left_truncation_keeps_the_end(tiny_qwen3_path):
    encoder = TextEncoder.load(str(tiny_qwen3_path), device="cpu", max_context_tokens=64, context_prompt="")
    assert all(tokens(encoder, w) == 1 for w in WORDS)
    budget = 64 - 2  # [CLS] and [SEP]
    long = words(200)
    vectors, truncated = encoder.encode([" ".join(long)], "context")
    assert truncated == 1
    tail, tail_truncated = encoder.encode([" ".join(long[-budget:])], "context")
    assert tail_truncated == 0 and same(vectors, tail)

    new_start, _ = encoder.encode([" ".join(["dog"] * 50 + long[50:])], "context")
    new_end, _ = encoder.encode([" ".join(long[:-5] + ["dog"] * 5)], "context")
    assert same(vectors, new_start)
    assert not same(vectors, new_end)


def test_right_truncation_keeps_the_start(tiny_qwen3_path):
    encoder = TextEncoder.load(str(tiny_qwen3_path), device="cpu", max_module_tokens=64, truncation_side="right")
    budget = 64 - 2
    long = words(200)
    vectors, truncated = encoder.encode([" ".join(long)], "module")
    assert truncated == 1
    head, _ = encoder.encode([" ".join(long[:budget])], "module")
    assert same(vectors, head)

    new_start, _ = encoder.encode([" ".join(["dog"] * 5 + long[5:])], "module")
    new_end, _ = encoder.encode([" ".join(long[:-50] + ["dog"] * 50)], "module")
    assert not same(vectors, new_start)
    assert same(vectors, new_end)


def test_the_prompt_survives_truncation(tiny_qwen3_path):
    long = " ".join(words(300))
    plain = TextEncoder.load(str(tiny_qwen3_path), device="cpu", max_context_tokens=64, context_prompt="")
    prompted = TextEncoder.load(str(tiny_qwen3_path), device="cpu", max_context_tokens=64, context_prompt="X: ")
    (plain_vector,), plain_truncated = plain.encode([long], "context")
    (prompted_vector,), prompted_truncated = prompted.encode([long], "context")
    assert plain_truncated == prompted_truncated == 1
    assert not same(plain_vector, prompted_vector)

    # exactly the prompt followed by the text's last tokens, as many as fit beside it
    budget = 64 - 2 - tokens(prompted, "X: ")
    expected = prompted.model.encode(" ".join(words(300)[-budget:]), prompt="X: ", normalize_embeddings=True)
    assert same(prompted_vector, expected)
    # and with the long Qwen3 instruction too: the cut text plus prompt fill the budget exactly
    instructed = TextEncoder.load(str(tiny_qwen3_path), device="cpu", max_context_tokens=64)
    (cut,), _ = instructed.prepare([long], "context")
    features = instructed.model.preprocess([cut], prompt=QWEN3_CONTEXT_PROMPT)
    assert features["input_ids"].shape[1] == 64
    assert instructed.tokenizer.decode(features["input_ids"][0]).startswith("[CLS] instruct : given an llm agent")


def test_truncation_counts_only_texts_over_budget(tiny_qwen3_path):
    encoder = TextEncoder.load(str(tiny_qwen3_path), device="cpu", max_context_tokens=64, context_prompt="")
    texts = [" ".join(words(n)) for n in (5, 61, 62, 63, 500)] + ["é" * 40, "😀 " * 100]
    prepared, truncated = encoder.prepare(texts, "context")
    assert truncated == 3  # 63 words, 500 words, 100 emoji
    assert prepared[:3] == texts[:3] and prepared[5] == texts[5]
    for text in prepared:
        assert len(encoder.tokenizer(text)["input_ids"]) <= 64


def test_max_lengths_are_clamped_to_what_the_model_takes(tiny_qwen3_path):
    encoder = TextEncoder.load(str(tiny_qwen3_path), device="cpu", max_context_tokens=100_000, max_module_tokens=100)
    assert encoder.max_tokens == {"context": 512, "module": 100}  # the tiny model has 512 positions
    fingerprint = encoder.fingerprint()
    assert (fingerprint["max_context_tokens"], fingerprint["max_module_tokens"]) == (512, 100)


def test_a_prompt_longer_than_the_budget_is_refused(tiny_qwen3_path):
    with pytest.raises(ConfigError, match="prompt"):
        TextEncoder.load(str(tiny_qwen3_path), device="cpu", max_context_tokens=8)


# --- fingerprints -----------------------------------------------------------------------------------


def test_fingerprint_changes_with_the_weights_not_with_a_reload(qwen, tiny_qwen3_path, tmp_path):
    from safetensors.torch import load_file, save_file

    assert TextEncoder.load(str(tiny_qwen3_path), device="cpu").fingerprint() == qwen.fingerprint()

    finetuned = tmp_path / "finetuned"
    shutil.copytree(tiny_qwen3_path, finetuned)
    weights = load_file(finetuned / "model.safetensors")
    name = next(k for k in sorted(weights) if k.endswith("mlp.up_proj.weight"))
    weights[name][0, 0] += 0.5
    save_file(weights, finetuned / "model.safetensors", metadata={"format": "pt"})

    changed = TextEncoder.load(str(finetuned), device="cpu").fingerprint()
    original = qwen.fingerprint()
    assert changed["weights"] != original["weights"]
    assert {k: v for k, v in changed.items() if k not in ("weights", "encoder")} == {
        k: v for k, v in original.items() if k not in ("weights", "encoder")
    }


def test_fingerprint_changes_with_lengths_prompt_and_truncation(qwen, tiny_qwen3_path):
    path = str(tiny_qwen3_path)
    base = qwen.fingerprint()
    variants = [
        TextEncoder.load(path, device="cpu", max_context_tokens=128),
        TextEncoder.load(path, device="cpu", max_module_tokens=128),
        TextEncoder.load(path, device="cpu", context_prompt=""),
        TextEncoder.load(path, device="cpu", truncation_side="right"),
    ]
    fingerprints = [v.fingerprint() for v in variants]
    assert all(f != base for f in fingerprints)
    assert len({json.dumps(f, sort_keys=True) for f in fingerprints}) == len(fingerprints)


def test_an_in_memory_model_is_fingerprinted_by_its_parameters(qwen):
    model = copy.deepcopy(qwen.model)  # as stage 1 holds it: no folder behind it
    before = TextEncoder(model, "tiny-in-memory").fingerprint()["weights"]
    assert before.startswith("params-sha256:")
    assert TextEncoder(model, "tiny-in-memory").fingerprint()["weights"] == before
    with torch.no_grad():
        next(model.parameters())[0, 0] += 1.0
    assert TextEncoder(model, "tiny-in-memory").fingerprint()["weights"] != before
