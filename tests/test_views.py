"""Views of long texts (features/views.py): how texts are cut into pieces, the head_tail encoder
cut, pieces in the cache, stage 0 on piece vectors, the rounds heads' pooling, per-round rewards
and checkpoints that keep to their view."""

import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cache import EmbeddingCache
from data import ConfigError, load_pairs, pairs_from_records, write_pairs
from data.synth import generate_pairs
from data.trajectory import render_context, render_module
from features.encoder import HEAD_TAIL_GAP, TextEncoder
from features.pairs import pair_vectors, unique_texts
from features.views import View, ViewMismatch, cut_texts, pieces, piece_features, round_blocks, windows
from heads.finetuning import PairColumns, TextBatch
from heads.model import CheckpointError, MultiModuleRewardModel
from heads.training import PairTensors, train_epoch, warmup_linear_schedule
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.embed import embed_pairs, load_encoder
from pipeline.finetune import finetune
from pipeline.evaluate_scoring import cached_pair_vectors, pair_scores
from pipeline.rewards import ScoringError, load
from pipeline.train_heads import read_features, train_heads

MODULES = ["reflection", "planner", "executor", "memory"]
ROUNDS = [{"plan": f"step {i}: look at file{i}.txt", "action": f"cat file{i}.txt", "observation": f"line {i} of the file"} for i in range(1, 6)]


# --- pieces: plain text ----------------------------------------------------------------------


def test_one_piece_views_keep_the_text_whole():
    text = render_context("Count the files", ROUNDS)
    for view in ("truncate", "head_tail"):
        assert pieces(text, "context", view, window_words=3, max_pieces=2) == [text]


def test_chunks_are_exact_windows_of_the_text():
    text = "  alpha beta\tgamma\n\ndelta epsilon  zeta eta "
    found = pieces(text, "module", "chunks", window_words=3, max_pieces=32)
    assert "".join(found) == text  # nothing re-joined with new whitespace
    assert [len(p.split()) for p in found] == [3, 3, 1]
    assert found[0] == "  alpha beta\tgamma\n\n"


def test_rounds_are_the_task_line_then_each_round_block():
    text = render_context("Count the files", ROUNDS[:3])
    found = pieces(text, "context", "rounds", window_words=100, max_pieces=32)
    assert found[0] == "Task: Count the files"
    assert [p.splitlines()[0] for p in found[1:]] == ["[Round 1]", "[Round 2]", "[Round 3]"]
    assert "\n".join(found) == text
    module = render_module(ROUNDS[:3], ["plan"])
    assert pieces(module, "module", "rounds", 100, 32) == round_blocks(module) == [f"[Round {i}]\n<plan>step {i}: look at file{i}.txt</plan>" for i in (1, 2, 3)]


def test_a_round_longer_than_the_window_is_cut_into_windows():
    long_round = [{"observation": " ".join(f"w{i}" for i in range(25))}]
    text = render_module(long_round, ["observation"])
    found = pieces(text, "module", "rounds", window_words=10, max_pieces=32)
    assert len(found) == 3 and "".join(found) == text and found[0].startswith("[Round 1]")


def test_a_text_without_rounds_falls_back_to_windows():
    text = " ".join(f"word{i}" for i in range(7))
    assert pieces(text, "context", "rounds", window_words=3, max_pieces=32) == windows(text, 3) == ["word0 word1 word2 ", "word3 word4 word5 ", "word6"]


def test_more_than_max_pieces_keeps_the_first_and_the_last():
    text = " ".join(f"w{i}" for i in range(10))
    assert pieces(text, "module", "chunks", window_words=1, max_pieces=5) == ["w0 ", "w1 ", "w7 ", "w8 ", "w9"]
    assert pieces(text, "module", "chunks", window_words=1, max_pieces=1) == ["w9"]


def test_an_empty_text_is_one_empty_piece():
    for view in ("truncate", "head_tail", "chunks", "rounds"):
        assert pieces("", "module", view, 3, 4) == [""]


def test_window_words_default_to_half_the_token_limit_and_are_validated():
    config = load_config(overrides={"model.max_context_tokens": 256, "model.max_module_tokens": 64, "features.view": "rounds"})
    assert View.from_config(config.features, config.model).window_words == {"context": 128, "module": 32}
    config = config.override({"features.window_words": 50})
    assert View.from_config(config.features, config.model).window_words == {"context": 50, "module": 50}
    for key, value in (("features.view", "sentences"), ("features.max_pieces", 0), ("features.window_words", -1)):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config(overrides={key: value})


def test_distinct_pieces_are_kept_once_in_a_csr_layout():
    context = render_context("Count the files", ROUNDS[:2])
    other = render_context("Count the files", ROUNDS[:3])  # shares its first three pieces, its round 2 not last
    texts = unique_texts(pairs_from_records([_record(context, other)]))
    cut = cut_texts(texts, View("rounds", {"context": 100, "module": 100}, 32))
    context_rows = [cut.piece_ids[cut.offsets[i] : cut.offsets[i + 1]].tolist() for i in range(2)]
    assert context_rows == [[0, 1, 2], [0, 1, 2, 3]]
    assert cut.table.height == len(set(cut.table["key"]))


# --- head_tail: the encoder's cut ------------------------------------------------------------


WORDS = ["apple", "house", "river", "green", "music", "table", "water", "light", "paper", "stone", "horse", "bread"]


@pytest.mark.parametrize("which", ["minilm", "tiny_qwen3"])
def test_head_tail_keeps_a_third_of_the_budget_from_the_start_and_the_rest_from_the_end(which, minilm_path, tiny_qwen3_path):
    path = minilm_path if which == "minilm" else tiny_qwen3_path
    encoder = TextEncoder.load(str(path), device="cpu", max_module_tokens=64, truncation_side="head_tail")
    long = [WORDS[(i * 7) % len(WORDS)] for i in range(300)]
    assert all(len(encoder.tokenizer(w, add_special_tokens=False)["input_ids"]) == 1 for w in WORDS)
    (cut,), n_cut = encoder.prepare([" ".join(long)], "module")
    assert n_cut == 1
    head, tail = (part.split() for part in cut.split(HEAD_TAIL_GAP))
    assert head == long[: len(head)] and tail == long[-len(tail) :]  # token-exact at both ends
    assert len(head) == (len(head) + len(tail)) // 3 and len(encoder.tokenizer(cut)["input_ids"]) <= 64
    assert len(head) + len(tail) >= 64 - 2 - 4  # the budget, less the special tokens and the gap

    vectors, _ = encoder.encode([" ".join(long)], "module")
    middle, _ = encoder.encode([" ".join(long[:100] + ["dog"] * 100 + long[200:])], "module")
    start, _ = encoder.encode([" ".join(["dog"] * 5 + long[5:])], "module")
    end, _ = encoder.encode([" ".join(long[:-5] + ["dog"] * 5)], "module")
    np.testing.assert_allclose(vectors, middle, atol=1e-6)
    assert not np.allclose(vectors, start, atol=1e-4) and not np.allclose(vectors, end, atol=1e-4)

    left = TextEncoder.load(str(path), device="cpu", max_module_tokens=64)
    assert encoder.fingerprint()["truncation_side"] == "head_tail" != left.fingerprint()["truncation_side"]
    short = "a short text"
    np.testing.assert_allclose(encoder.encode([short], "module")[0], left.encode([short], "module")[0], atol=1e-6)


# --- stage 0 on pieces -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def rounds_setup(tmp_path_factory):
    """Small synthetic pairs embedded with MiniLM at 32 tokens under the truncate and rounds views."""
    root = tmp_path_factory.mktemp("views")
    records = generate_pairs(32, seed=7)
    for name, part in (("train", records[:24]), ("val", records[24:])):
        write_pairs(pairs_from_records(part), root / f"{name}.jsonl")
    base = load_config(
        overrides={
            "model.encoder": "minilm", "model.max_context_tokens": 32, "model.max_module_tokens": 32,
            "stage_0.epochs": 2, "stage_0.batch_size": 16, "training.device": "cpu", "features.window_words": 24,
        }
    )  # fmt: skip
    encoder = load_encoder(base)
    files = [root / "train.jsonl", root / "val.jsonl"]
    reports = {view: embed_pairs(files, root / "cache", base.override({"features.view": view}), encoder=encoder, progress=False) for view in ("truncate", "rounds")}
    rounds = base.override({"features.view": "rounds"})
    train_heads(files=[root / "train.jsonl"], cache_dir=root / "cache", out=root / "rounds-ckpt", config=rounds, val_file=root / "val.jsonl", progress=False)
    return root, base, reports


def test_embedding_a_view_stores_each_distinct_piece_once(rounds_setup):
    root, base, reports = rounds_setup
    pairs = load_pairs([root / "train.jsonl", root / "val.jsonl"])
    cut = cut_texts(unique_texts(pairs), View.from_config(base.override({"features.view": "rounds"}).features, base.model))
    report = reports["rounds"]
    assert report.texts == unique_texts(pairs).height < report.pieces == cut.references
    assert report.unique == cut.table.height < report.pieces  # rounds repeat across contexts and sides
    assert report.new + report.reused == report.unique
    namespace = EmbeddingCache(root / "cache").namespaces()[0]
    assert len(namespace) == len(set(cut.table["key"]) | set(unique_texts(pairs)["key"]))
    again = embed_pairs([root / "train.jsonl", root / "val.jsonl"], root / "cache", base.override({"features.view": "rounds"}), progress=False)
    assert again.new == 0 and "view rounds" in again.line()


def test_pooled_in_blocks_is_each_texts_mean_bit_for_bit(rounds_setup):
    root, base, _ = rounds_setup
    pairs = load_pairs(root / "train.jsonl")
    namespace = EmbeddingCache(root / "cache").namespaces()[0]
    features = piece_features(namespace, pairs, View.from_config(base.override({"features.view": "rounds"}).features, base.model))
    whole, blocks = features.pooled(), features.pooled(block=3)
    assert np.array_equal(whole, blocks)
    t = int(np.argmax(np.diff(features.offsets)))  # the text of most pieces
    pieces = features.vectors[features.piece_ids[features.offsets[t] : features.offsets[t + 1]]].astype(np.float64)
    assert len(pieces) > 1 and np.array_equal(whole[t], pieces.mean(axis=0).astype(np.float32))


def test_split_features_share_one_matrix_and_gather_what_separate_reads_do(rounds_setup):
    root, base, _ = rounds_setup
    train, val = load_pairs(root / "train.jsonl"), load_pairs(root / "val.jsonl")
    namespace = EmbeddingCache(root / "cache").namespaces()[0]
    view = View.from_config(base.override({"features.view": "rounds"}).features, base.model)
    both = read_features(namespace, train, val, view, memory_map_above_mb=4096, scratch=root)
    assert both["train"].vectors is both["val"].vectors
    model = MultiModuleRewardModel(1, MODULES)
    for name, pairs in (("train", train), ("val", val)):
        features = piece_features(namespace, pairs, view)
        assert both[name].text_keys.equals(features.text_keys) and list(both[name].target_module) == list(features.target_module)
        alone, shared = PairTensors.from_pieces(features, model), PairTensors.from_pieces(both[name], model)
        assert len(shared) == pairs.height
        for column in range(4):
            assert torch.equal(shared.pieces(shared.pair_texts[:, column])[0], alone.pieces(alone.pair_texts[:, column])[0])


class _FourMatrices:
    """The stage 0 data path before views, kept here as the reference: four (pairs, d) matrices
    gathered per batch."""

    def __init__(self, vectors, model, index=None):
        self.vectors, self.model = vectors, model
        self.module_index = model.module_index(vectors.target_module.tolist()) if index is None else index
        self.columns = [torch.from_numpy(np.ascontiguousarray(getattr(vectors, c))) for c in ("positive_context", "positive_module_text", "negative_context", "negative_module_text")]

    def __len__(self):
        return len(self.module_index)

    def rows(self, index):
        picked = _FourMatrices.__new__(_FourMatrices)
        picked.model, picked.module_index, picked.columns = self.model, self.module_index[index], [c[index] for c in self.columns]
        return picked

    def scores(self, model):
        c = self.columns
        return model(c[0], c[1], self.module_index), model(c[2], c[3], self.module_index)

    def joint_scores(self, model):  # training's one pass for both sides, as before views
        c, n = self.columns, len(self)
        scores = model(torch.cat([c[0], c[2]]), torch.cat([c[1], c[3]]), torch.cat([self.module_index, self.module_index]))
        return scores[:n], scores[n:]


def test_truncate_view_trains_exactly_as_the_four_matrix_path(rounds_setup):
    root, base, _ = rounds_setup
    pairs = load_pairs(root / "train.jsonl")
    namespace = EmbeddingCache(root / "cache").namespaces()[0]
    losses, states = [], []
    for build in ("reference", "pieces"):
        torch.manual_seed(0)
        model = MultiModuleRewardModel(namespace.dimension, MODULES)
        if build == "reference":
            data = _FourMatrices(pair_vectors(namespace, pairs), model)
        else:
            data = PairTensors.from_pieces(piece_features(namespace, pairs, View.from_config(base.features, base.model)), model)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
        scheduler = warmup_linear_schedule(optimizer, 2, 20)
        generator = torch.Generator().manual_seed(0)
        steps = []
        for _ in range(2):
            train_epoch(model, data, optimizer, scheduler, batch_size=4, grad_accumulation=2, grad_clip=1.0, margin=0.1,
                        margin_weight=0.1, generator=generator, on_step=steps.append)  # fmt: skip
        losses.append(steps)
        states.append(model.state_dict())
    assert len(losses[0]) >= 6
    np.testing.assert_allclose(losses[1], losses[0], rtol=0, atol=1e-6)
    for name, value in states[0].items():
        torch.testing.assert_close(states[1][name], value, rtol=0, atol=1e-6)


def test_rounds_pooling_is_the_same_alone_or_padded_beside_longer_texts():
    torch.manual_seed(0)
    model = MultiModuleRewardModel(8, MODULES, pooling="attention").eval()
    for head in model.heads.values():  # a query that is not zero, so attention is not the mean
        for pooler in head.poolers.values():
            torch.nn.init.normal_(pooler.query)
    one, many = torch.randn(1, 1, 8), torch.randn(1, 6, 8)
    context = torch.randn(1, 3, 8)
    index = model.module_index(["planner"])

    def score(module_pieces):
        return model.score_pieces((context, torch.ones(1, 3, dtype=torch.bool)), (module_pieces, torch.ones(module_pieces.shape[:2], dtype=torch.bool)), index)

    alone = [score(one), score(many)]
    padded = torch.cat([torch.cat([one, torch.full((1, 5, 8), 7.0)], 1), many])  # padding of garbage, masked
    mask = torch.tensor([[True] + [False] * 5, [True] * 6])
    with torch.no_grad():
        scores, weights = model.score_pieces((context.expand(2, 3, 8), torch.ones(2, 3, dtype=torch.bool)), (padded, mask), index.expand(2))
    torch.testing.assert_close(scores, torch.cat([alone[0][0], alone[1][0]]), rtol=0, atol=1e-6)
    assert weights[0, 0] == 1 and (weights[0, 1:] == 0).all()
    torch.testing.assert_close(weights.sum(1), torch.ones(2))
    assert len(set(weights[1].tolist())) > 1  # the learned query weighs rounds unequally
    head = model.heads["planner"]
    assert head.mlp[0].in_features == 3 * 2 * 8


def test_round_rewards_sum_to_the_reward_and_the_score_cli_writes_them(rounds_setup, tmp_path):
    root, _, _ = rounds_setup
    scorer = load(root / "rounds-ckpt", root / "cache", device="cpu")
    pairs = load_pairs(root / "val.jsonl").head(6)
    contexts, texts, modules = pairs["positive_context"].to_list(), pairs["positive_module_text"].to_list(), pairs["target_module"].to_list()
    result = scorer.rewards(contexts, texts, modules, round_rewards=True)
    rewards, shares = result.rewards, result.round_rewards
    np.testing.assert_allclose(rewards, scorer.score(contexts, texts, modules), atol=1e-5)
    np.testing.assert_allclose([s.sum() for s in shares], rewards, atol=1e-5)
    assert [len(s) for s in shares] == [len(scorer.view.pieces(t, "module")) for t in texts]

    records = tmp_path / "records.jsonl"
    records.write_text("".join(json.dumps({"context": c, "modules": {m: t}}) + "\n" for c, t, m in zip(contexts, texts, modules)))
    from pipeline.score import score_records

    calls = scorer.calls
    records_scored = score_records(scorer, [json.loads(line) for line in records.read_text().splitlines()], batch_size=4)
    assert scorer.calls - calls == 2  # 6 rows in batches of 4: one pass of the heads per batch gives rewards and round shares
    assert [sum(r["round_rewards"][m]) for r, m in zip(records_scored, modules)] == pytest.approx(list(rewards), abs=1e-5)
    result = CliRunner().invoke(main, ["score", str(root / "rounds-ckpt"), str(records), "--out", str(tmp_path / "scored.jsonl"), "--cache", str(root / "cache")])
    assert result.exit_code == 0, result.output
    scored = [json.loads(line) for line in (tmp_path / "scored.jsonl").read_text().splitlines()]
    for row, reward in zip(scored, rewards):
        (module, score), = row["scores"].items()
        assert score == pytest.approx(float(reward), abs=1e-5)
        assert sum(row["round_rewards"][module]) == pytest.approx(score, abs=1e-5)


def test_served_items_carry_their_round_rewards(rounds_setup):
    import urllib.request

    from pipeline.config import ServeConfig
    from pipeline.serve import BackgroundServer, create_app

    root, _, _ = rounds_setup
    scorer = load(root / "rounds-ckpt", root / "cache", device="cpu")
    pairs = load_pairs(root / "val.jsonl").head(4)
    items = [{"context": c, "module": m, "module_text": t} for c, m, t in zip(pairs["negative_context"], pairs["target_module"], pairs["negative_module_text"])]
    with BackgroundServer(create_app(scorer, ServeConfig())) as server:
        call = urllib.request.Request(f"{server.url}/score", data=json.dumps({"items": items}).encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(call, timeout=60) as response:
            answer = json.loads(response.read())
    assert scorer.calls == 1  # rewards and round shares came from one pass of the heads
    result = scorer.rewards(pairs["negative_context"].to_list(), pairs["negative_module_text"].to_list(), pairs["target_module"].to_list(), round_rewards=True)
    rewards, shares = result.rewards, result.round_rewards
    np.testing.assert_allclose(answer["rewards"], rewards, atol=1e-5)
    for served, expected in zip(answer["round_rewards"], shares):
        np.testing.assert_allclose(served, expected, atol=1e-5)


def test_round_rewards_are_refused_for_views_without_rounds(reward_checkpoint, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(reward_checkpoint / "plain", old)
    saved = json.loads((old / "config.json").read_text())
    (old / "config.json").write_text(json.dumps({k: v for k, v in saved.items() if k not in ("view", "window_words", "max_pieces", "pooling", "format_version")}))
    scorer = load(old, device="cpu")
    assert scorer.view == View()  # a checkpoint from before views reads as truncate
    with pytest.raises(ScoringError, match="rounds view"):
        scorer.rewards(["Task: x"], ["[Round 1]\n<plan>y</plan>"], ["planner"], round_rewards=True)


def test_a_checkpoint_refuses_another_view(rounds_setup, tmp_path):
    root, base, _ = rounds_setup
    saved = json.loads((root / "rounds-ckpt" / "config.json").read_text())
    assert (saved["view"], saved["window_words"], saved["max_pieces"], saved["pooling"]) == ("rounds", {"context": 24, "module": 24}, 32, "attention")
    with pytest.raises(CheckpointError, match="view rounds.*this run uses truncate"):
        train_heads(files=[root / "train.jsonl"], cache_dir=root / "cache", out=tmp_path / "resumed", config=base, val_file=root / "val.jsonl", resume=root / "rounds-ckpt", progress=False)
    # head_tail vectors are another namespace: the truncate-view cache holds none of them
    with pytest.raises(ViewMismatch, match="head_tail"):
        train_heads(files=[root / "train.jsonl"], cache_dir=root / "cache", out=tmp_path / "ht", config=base.override({"features.view": "head_tail"}), val_file=root / "val.jsonl", progress=False)
    # a checkpoint whose recorded view does not match its vectors' truncation is refused on load
    forged = tmp_path / "forged"
    shutil.copytree(root / "rounds-ckpt", forged)
    (forged / "config.json").write_text(json.dumps({**saved, "view": "head_tail"}))
    with pytest.raises(CheckpointError, match="head_tail"):
        load(forged, device="cpu")


def _record(positive_context: str, negative_context: str) -> dict:
    return {
        "pair_id": "p", "target_module": "planner", "task": "Count the files",
        "positive": {"trajectory_full_context": positive_context, "module_k_all_rounds": "[Round 1]\n<plan>a</plan>", "outcome": 1},
        "negative": {"trajectory_full_context": negative_context, "module_k_all_rounds": "[Round 1]\n<plan>b</plan>", "outcome": 0},
    }  # fmt: skip


# --- stage 1 on the same pieces --------------------------------------------------------------


def test_a_stage_1_batch_encodes_each_distinct_piece_once():
    pairs = pairs_from_records(generate_pairs(8, seed=3))
    view = View("rounds", {"context": 24, "module": 24}, 32)
    model = MultiModuleRewardModel(8, MODULES, pooling="attention")
    columns = PairColumns(pairs)
    batch = TextBatch.of(columns, list(range(8)), model, view)
    context_pieces = {p for text in set(columns.positive_context + columns.negative_context) for p in view.pieces(text, "context")}
    assert sorted(batch.contexts) == sorted(context_pieces)
    for i in range(8):  # the CSR rows give every pair back its own text, piece by piece
        t = batch.negative_context[i]
        rows = batch.context_piece_ids[batch.context_offsets[t] : batch.context_offsets[t + 1]]
        assert [batch.contexts[r] for r in rows] == view.pieces(columns.negative_context[i], "context")


@pytest.mark.slow
@pytest.mark.parametrize("which", ["minilm", "tiny_qwen3"])
def test_a_rounds_view_finetune_runs_and_keeps_its_view(which, tiny_qwen3_path, tmp_path):
    encoder = "minilm" if which == "minilm" else str(tiny_qwen3_path)
    records = generate_pairs(16, seed=2)
    write_pairs(pairs_from_records(records[:12]), tmp_path / "train.jsonl")
    write_pairs(pairs_from_records(records[12:]), tmp_path / "val.jsonl")
    config = load_config(overrides={
        "model.encoder": encoder, "model.max_context_tokens": 32, "model.max_module_tokens": 32, "features.view": "rounds",
        "features.window_words": 24, "stage_0.epochs": 1, "training.device": "cpu", "stage_1.batch_size": 4, "stage_1.precision": "fp32",
    })  # fmt: skip
    embed_pairs([tmp_path / "train.jsonl", tmp_path / "val.jsonl"], tmp_path / "cache", config, progress=False)
    train_heads(files=[tmp_path / "train.jsonl"], cache_dir=tmp_path / "cache", out=tmp_path / "stage0", config=config, val_file=tmp_path / "val.jsonl", progress=False)
    result = finetune(files=[tmp_path / "train.jsonl"], init=tmp_path / "stage0", out=tmp_path / "stage1", config=config, val_file=tmp_path / "val.jsonl", max_steps=2, progress=False)
    assert all(np.isfinite(result.history[0]["step_losses"])) and result.validation["loss"] is not None
    saved = json.loads((tmp_path / "stage1" / "config.json").read_text())
    assert (saved["view"], saved["pooling"]) == ("rounds", "attention")
    scorer = load(tmp_path / "stage1", device="cpu")  # no cache: its own fine-tuned encoder reads the pieces
    pairs = load_pairs(tmp_path / "val.jsonl")
    result = scorer.rewards(pairs["positive_context"].to_list(), pairs["positive_module_text"].to_list(), pairs["target_module"].to_list(), round_rewards=True)
    rewards, shares = result.rewards, result.round_rewards
    np.testing.assert_allclose([s.sum() for s in shares], rewards, atol=1e-5)
    with pytest.raises(CheckpointError, match="view 'rounds'.*'chunks'"):
        finetune(files=[tmp_path / "train.jsonl"], init=tmp_path / "stage0", out=tmp_path / "other", config=config.override({"features.view": "chunks"}), max_steps=1, progress=False)


@pytest.mark.slow  # it runs the encoder or several trainings: the full suite runs it, the fast lane stays quick
def test_train_heads_picks_the_namespace_of_its_view(rounds_setup, tmp_path):
    root, base, _ = rounds_setup
    cache = tmp_path / "cache"
    shutil.copytree(root / "cache", cache)
    head_tail = base.override({"features.view": "head_tail"})
    files = [root / "train.jsonl", root / "val.jsonl"]
    embed_pairs(files, cache, head_tail, progress=False)
    assert len(EmbeddingCache(cache).namespaces()) == 2  # the same encoder, two truncations
    train_heads(files=[root / "train.jsonl"], cache_dir=cache, out=tmp_path / "ht", config=head_tail, val_file=root / "val.jsonl", progress=False)
    saved = json.loads((tmp_path / "ht" / "config.json").read_text())
    assert saved["view"] == "head_tail" and saved["encoder_fingerprint"]["truncation_side"] == "head_tail"
    train_heads(files=[root / "train.jsonl"], cache_dir=cache, out=tmp_path / "tr", config=base, val_file=root / "val.jsonl", progress=False)
    assert json.loads((tmp_path / "tr" / "config.json").read_text())["encoder_fingerprint"]["truncation_side"] == "left"


def test_an_ensemble_of_the_rounds_view_gives_uncertainty_and_round_rewards(rounds_setup, tmp_path):
    root, base, _ = rounds_setup
    config = base.override({"features.view": "rounds", "stage_0.ensemble": 2})
    train_heads(files=[root / "train.jsonl"], cache_dir=root / "cache", out=tmp_path / "ens", config=config, val_file=root / "val.jsonl", progress=False)
    scorer = load(tmp_path / "ens", root / "cache", device="cpu")
    assert scorer.members == 2 and scorer.view.attention
    pairs = load_pairs(root / "val.jsonl").head(6)
    texts = (pairs["positive_context"].to_list(), pairs["positive_module_text"].to_list(), pairs["target_module"].to_list())
    result = scorer.rewards(*texts)
    rewards, uncertainty = result.rewards, result.uncertainty
    assert (uncertainty > 0).all()  # members trained on other task resamples disagree
    result = scorer.rewards(*texts, round_rewards=True)
    same, shares = result.rewards, result.round_rewards
    np.testing.assert_allclose(same, rewards, atol=1e-5)
    np.testing.assert_allclose([s.sum() for s in shares], rewards, atol=1e-5)
    # evaluation scores the pairs' pieces with every member: the mean is what the scorer gives
    positive, _ = pair_scores(scorer, cached_pair_vectors(scorer, pairs)[0], pairs)
    np.testing.assert_allclose(positive.members.mean(axis=0), rewards, atol=1e-5)
