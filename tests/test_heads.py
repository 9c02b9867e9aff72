"""Stage 0 heads: architecture, loss, per-module isolation, checkpoints, resume, and the cache contract."""

import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from cache import EmbeddingCache
from data import ConfigError, UserError, load_pairs, pairs_from_records, write_pairs
from data.synth import generate_pairs
from heads import CheckpointError, MultiModuleRewardModel, RewardHead, bradley_terry_loss
from heads.blend import describe_reward
from heads.checkpoint import read_record
from heads.training import EarlyStopping, PairTensors, train_epoch, warmup_linear_schedule
import pipeline.train_heads
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.embed import embed_pairs, load_encoder
from pipeline.train_heads import train_heads

MODULES = ["reflection", "planner", "executor", "memory"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Small real data embedded with the bundled MiniLM (32 tokens, to keep it fast)."""
    root = tmp_path_factory.mktemp("heads")
    records = generate_pairs(96, seed=11)
    for name, part in (("train", records[:64]), ("val", records[64:80]), ("more", records[80:])):
        write_pairs(pairs_from_records(part), root / f"{name}.jsonl")
    config = load_config(
        overrides={
            "model.encoder": "minilm", "model.max_context_tokens": 32, "model.max_module_tokens": 32,
            "stage_0.epochs": 2, "stage_0.batch_size": 16, "training.device": "cpu",
            "model.blend": "off",  # the heads' training alone; the tests that save, repeat or resume a run turn it on
        }
    )  # fmt: skip
    encoder = load_encoder(config)
    embed_pairs([root / "train.jsonl", root / "val.jsonl"], root / "cache", config, encoder=encoder, progress=False)
    return root, config, encoder


BLEND = {"model.blend": "auto"}  # the default (tests/test_blend.py tests the blend itself)


def test_head_for_1024_dimensions_is_3072_2048_1024_1():
    head = RewardHead(1024)
    linears = [m for m in head.mlp if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(3072, 2048), (2048, 1024), (1024, 1)]
    expected = (3072 * 2048 + 2048) + 2 * 2048 + (2048 * 1024 + 1024) + 2 * 1024 + (1024 + 1)
    assert sum(p.numel() for p in head.parameters()) == expected == 8_398_849


def test_loss_is_bradley_terry_plus_margin_hinge():
    positive, negative = torch.tensor([2.0, 0.0, 0.05]), torch.tensor([0.0, 1.0, 0.0])
    difference = positive - negative
    expected = -torch.nn.functional.logsigmoid(difference).mean() + 0.5 * torch.relu(0.1 - difference).mean()
    assert torch.isclose(bradley_terry_loss(positive, negative, margin=0.1, margin_weight=0.5), expected)


def test_a_head_stays_unchanged_when_only_other_modules_pairs_train(setup):
    root, config, _ = setup
    from features.pairs import pair_vectors

    pairs = load_pairs(root / "train.jsonl")
    planner_only = pairs.filter(pairs["target_module"] == "planner")
    namespace = EmbeddingCache(root / "cache").namespaces()[0]
    torch.manual_seed(0)
    model = MultiModuleRewardModel(namespace.dimension, MODULES)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    data = PairTensors.from_vectors(pair_vectors(namespace, planner_only), model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    train_epoch(
        model, data, optimizer, warmup_linear_schedule(optimizer, 1, 10),
        batch_size=4, grad_accumulation=1, grad_clip=1.0, margin=0.1, margin_weight=0.1, generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    for name, parameter in model.named_parameters():
        changed = not torch.equal(before[name], parameter)
        assert changed == name.startswith("heads.planner."), name


def test_checkpoint_is_a_readable_folder_without_pickle(setup, tmp_path):
    root, config, _ = setup
    result = train_heads(files=[root / "train.jsonl"], cache_dir=root / "cache", out=tmp_path / "ckpt", config=config.override(BLEND), val_file=root / "val.jsonl", progress=False)
    files = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    blend = saved["blend"]["files"] if "blend" in saved else []  # the linear and TF-IDF parts, when held-out pairs chose them
    assert files == sorted(["config.json", "config.yaml", "heads.safetensors", "metrics.jsonl", "blend.jsonl", *blend])
    assert saved["dimension"] == 384 and saved["modules"] == MODULES and saved["format_version"] == 2
    assert saved["encoder_fingerprint"]["encoder"] == "minilm" and saved["training_config"]["stage_0"]["epochs"] == 2
    assert len(saved["train_data_sha256"]) == 64 and "torch" in saved["versions"]
    assert saved["metrics"]["val"] == result.validation
    assert set(saved["metrics"]["val"]["modules"]) == set(MODULES)
    assert len((tmp_path / "ckpt" / "metrics.jsonl").read_text().splitlines()) == result.epochs_run
    assert set(load_file(tmp_path / "ckpt" / "heads.safetensors")) == set(MultiModuleRewardModel(384, MODULES).state_dict())
    model, _ = MultiModuleRewardModel.load(tmp_path / "ckpt")
    assert model.modules_order == MODULES
    assert not list(tmp_path.glob(".ckpt.*")), "no temporary folder left behind"


def test_training_is_deterministic_on_cpu(setup, tmp_path):
    root, config, _ = setup
    for name in ("a", "b"):
        train_heads(files=[root / "train.jsonl"], cache_dir=root / "cache", out=tmp_path / name, config=config.override(BLEND), val_file=root / "val.jsonl", progress=False)
    a, b = load_file(tmp_path / "a" / "heads.safetensors"), load_file(tmp_path / "b" / "heads.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the blend too: its out-of-fold heads, folds and weights
    assert (tmp_path / "a" / "blend.jsonl").read_text() == (tmp_path / "b" / "blend.jsonl").read_text()
    saved = [json.loads((tmp_path / name / "config.json").read_text()) for name in ("a", "b")]
    assert saved[0]["blend_choice"] == saved[1]["blend_choice"] and saved[0].get("blend") == saved[1].get("blend")


def test_resume_starts_from_the_checkpoint_and_learns_new_pairs(setup, tmp_path):
    root, config, encoder = setup
    train_heads(files=[root / "train.jsonl"], cache_dir=root / "cache", out=tmp_path / "first", config=config, val_file=root / "val.jsonl", progress=False)
    embed_pairs([root / "more.jsonl"], root / "cache", config, encoder=encoder, progress=False)  # only the new texts

    frozen = config.override({"stage_0.lr": 1e-30, "training.weight_decay": 0.0})  # lr must be > 0: as good as frozen
    train_heads(files=[root / "more.jsonl"], cache_dir=root / "cache", out=tmp_path / "same", config=frozen, val_file=root / "val.jsonl", resume=tmp_path / "first", progress=False)
    first, same = load_file(tmp_path / "first" / "heads.safetensors"), load_file(tmp_path / "same" / "heads.safetensors")
    assert all(torch.allclose(first[k], same[k], rtol=0, atol=1e-20) for k in first), "with lr ~0 a resumed run must keep the checkpoint's weights"

    train_heads(files=[root / "train.jsonl", root / "more.jsonl"], cache_dir=root / "cache", out=tmp_path / "second", config=config.override(BLEND), val_file=root / "val.jsonl", resume=tmp_path / "first", progress=False)
    second = json.loads((tmp_path / "second" / "config.json").read_text())
    assert second["resumed_from"] == str(tmp_path / "first")
    # a resumed model's start cannot be repeated per fold: its blend is chosen on validation alone
    assert second["blend_choice"]["held_out_pairs"] == {"validation": 16, "out_of_fold": 0, "folds": 0}
    assert second["train_data_sha256"] != json.loads((tmp_path / "first" / "config.json").read_text())["train_data_sha256"]


def test_resume_refuses_a_cache_of_another_encoder(setup, tmp_path, tiny_qwen3_path):
    root, config, _ = setup
    train_heads(files=[root / "train.jsonl"], cache_dir=root / "cache", out=tmp_path / "ckpt", config=config, val_file=root / "val.jsonl", progress=False)
    qwen = config.override({"model.encoder": str(tiny_qwen3_path)})
    embed_pairs([root / "train.jsonl", root / "val.jsonl"], tmp_path / "qwen-cache", qwen, progress=False)
    with pytest.raises(CheckpointError, match="trained on vectors of encoder 'minilm'"):
        train_heads(files=[root / "train.jsonl"], cache_dir=tmp_path / "qwen-cache", out=tmp_path / "out", config=qwen, val_file=root / "val.jsonl", resume=tmp_path / "ckpt", progress=False)
    assert not (tmp_path / "out").exists()


def test_missing_vectors_stop_with_the_count_and_the_embed_command(setup, tmp_path):
    root, config, _ = setup
    unseen = tmp_path / "unseen.jsonl"
    write_pairs(pairs_from_records(generate_pairs(8, seed=77)), unseen)
    result = CliRunner().invoke(
        main, ["train-heads", str(unseen), "--val", str(root / "val.jsonl"), "--cache", str(root / "cache"), "--out", str(tmp_path / "ckpt"), "--encoder", "minilm"]
    )
    assert result.exit_code == 1
    assert "texts these pairs reference have no vector" in result.output
    assert f"pipeline embed {unseen} {root / 'val.jsonl'} --cache {root / 'cache'} --encoder minilm" in result.output
    assert not (tmp_path / "ckpt").exists()


def test_embed_missing_embeds_then_trains(setup, tmp_path):
    root, config, _ = setup
    unseen = tmp_path / "unseen.jsonl"
    write_pairs(pairs_from_records(generate_pairs(8, seed=78)), unseen)
    cache = tmp_path / "cache"
    result = train_heads(files=[unseen], cache_dir=cache, out=tmp_path / "ckpt", config=config.override({"stage_0.epochs": 1}), val_file=root / "val.jsonl", embed_missing=True, progress=False)
    assert result.epochs_run == 1 and (tmp_path / "ckpt" / "heads.safetensors").exists()


def test_cli_train_heads_prints_per_module_validation(setup, tmp_path):
    root, _, _ = setup
    result = CliRunner().invoke(
        main,
        ["train-heads", str(root / "train.jsonl"), "--cache", str(root / "cache"), "--out", str(tmp_path / "ckpt"), "--encoder", "minilm", "--epochs", "2"],
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()  # without the progress bars of stderr
    header = lines.index("epoch  train loss  val loss  val acc  reflection  planner  executor  memory")  # whole module names
    epochs = lines[header + 1 : header + 3]
    assert [row.split()[0] for row in epochs] == ["1", "2"] and {len(row) for row in epochs} == {len(lines[header])}
    assert "best epoch" in result.output and (tmp_path / "ckpt" / "config.yaml").exists()
    # the last line says what the checkpoint's reward is: the heads above, or a blend of them with other parts
    assert lines[-1] == describe_reward(read_record(tmp_path / "ckpt")) and lines[-1].startswith("reward = ")


def test_memory_mapped_features_train_exactly_like_in_memory_ones(setup, tmp_path):
    root, config, _ = setup
    from features.pairs import pair_vectors
    from features.views import View, piece_features

    pairs = load_pairs(root / "train.jsonl")
    namespace = EmbeddingCache(root / "cache").namespaces()[0]
    mapped = pair_vectors(namespace, pairs, memory_map=tmp_path / "features", chunk=10)
    assert namespace.reads == 1, "one read of the cache for all pairs, however small the chunk"
    in_memory = pair_vectors(namespace, pairs)
    assert isinstance(mapped.positive_context, np.memmap) and (tmp_path / "features" / "positive_context.npy").exists()
    np.testing.assert_array_equal(mapped.negative_module_text, in_memory.negative_module_text)
    pieces = piece_features(namespace, pairs, View(), memory_map=tmp_path / "pieces")
    assert isinstance(pieces.vectors, np.memmap) and namespace.reads == 3
    np.testing.assert_array_equal(pieces.pair_vectors().negative_module_text, in_memory.negative_module_text)
    # the distinct pieces decide, not a guess from the pair count: mapped only above the threshold
    size = pieces.vectors.nbytes
    assert size < 4 * pairs.height * namespace.dimension * 4, "texts are shared, so fewer vectors than references"
    assert not isinstance(piece_features(namespace, pairs, View(), tmp_path / "fits", memory_map_above=size).vectors, np.memmap)
    assert isinstance(piece_features(namespace, pairs, View(), tmp_path / "over", memory_map_above=size - 1).vectors, np.memmap)

    on_disk = config.override({"stage_0.memory_map_above_mb": 0})
    train_heads(files=[root / "train.jsonl"], cache_dir=root / "cache", out=tmp_path / "mapped", config=on_disk, val_file=root / "val.jsonl", progress=False)
    train_heads(files=[root / "train.jsonl"], cache_dir=root / "cache", out=tmp_path / "ram", config=config, val_file=root / "val.jsonl", progress=False)
    a, b = load_file(tmp_path / "mapped" / "heads.safetensors"), load_file(tmp_path / "ram" / "heads.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not list((root / "cache").glob(".pair-features-*")), "the scratch folder is removed after training"


def test_use_wandb_without_wandb_installed_says_how_to_get_it(setup, tmp_path, monkeypatch):
    root, config, _ = setup
    monkeypatch.setitem(__import__("sys").modules, "wandb", None)  # as if not installed
    with pytest.raises(UserError, match="pip install wandb"):
        train_heads(files=[root / "train.jsonl"], cache_dir=root / "cache", out=tmp_path / "ckpt", config=config, val_file=root / "val.jsonl", use_wandb=True, progress=False)


@pytest.mark.slow  # a subprocess or several trainings: the full suite runs it, the fast lane stays quick
def test_without_encoder_train_heads_reads_the_caches_only_encoder_and_lists_several(setup, tmp_path, tiny_qwen3_path):
    root, config, _ = setup
    shutil.copytree(root / "cache", tmp_path / "cache")
    (tmp_path / "config.yaml").write_text("stage_0: {epochs: 1, batch_size: 16}\ntraining: {device: cpu}\n")
    args = ["train-heads", str(root / "train.jsonl"), "--val", str(root / "val.jsonl"), "--cache", str(tmp_path / "cache"), "--config", str(tmp_path / "config.yaml")]
    one = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "one")])
    assert one.exit_code == 0, one.output
    assert f"training on the only vectors in {tmp_path / 'cache'}: encoder 'minilm', 384-d" in one.output
    assert json.loads((tmp_path / "one" / "config.json").read_text())["encoder_fingerprint"]["encoder"] == "minilm"

    embed_pairs([root / "train.jsonl", root / "val.jsonl"], tmp_path / "cache", config.override({"model.encoder": str(tiny_qwen3_path)}), progress=False)
    several = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "several")])
    assert several.exit_code == 1 and not (tmp_path / "several").exists()
    assert "holds vectors of several encoders" in several.output and "--encoder NAME" in several.output
    assert "encoder 'minilm', 384-d float32" in several.output and f"encoder {str(tiny_qwen3_path)!r}, 64-d float32" in several.output
    assert "Traceback" not in several.output

    named = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "named"), "--encoder", "minilm"])
    assert named.exit_code == 0 and "the only vectors" not in named.output, named.output


@pytest.mark.slow  # it runs the encoder or several trainings: the full suite runs it, the fast lane stays quick
def test_embed_missing_uses_the_namespaces_own_encoder_whatever_the_config_names(setup, tmp_path):
    root, _, _ = setup
    shutil.copytree(root / "cache", tmp_path / "cache")
    (namespace,) = EmbeddingCache(tmp_path / "cache").namespaces()
    before = len(namespace)
    config = load_config(overrides={"stage_0.epochs": 1, "training.device": "cpu"})  # names no encoder: Qwen3 by default, not loadable here
    write_pairs(pairs_from_records(generate_pairs(8, seed=79)), tmp_path / "unseen.jsonl")
    notes = []
    train_heads(files=[root / "train.jsonl", tmp_path / "unseen.jsonl"], cache_dir=tmp_path / "cache", out=tmp_path / "ckpt", config=config, val_file=root / "val.jsonl", embed_missing=True, progress=False, say=notes.append)
    (after,) = EmbeddingCache(tmp_path / "cache").namespaces()  # the missing texts went into the same namespace
    assert after.id == namespace.id and len(after) > before and notes and "the only vectors" in notes[0]


@pytest.mark.parametrize(
    "head, widths",
    [("2d,d", [(24, 16), (16, 8), (8, 1)]), ("32", [(24, 32), (32, 1)]), ("linear", [(24, 1)]), ("d, 4", [(24, 8), (8, 4), (4, 1)])],
)
def test_head_widths_follow_the_setting(head, widths):
    linears = [m for m in RewardHead(8, head=head).mlp if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == widths


def test_a_smaller_head_trains_saves_and_loads_with_its_shape(setup, tmp_path):
    root, config, _ = setup
    train_heads(files=[root / "train.jsonl"], cache_dir=root / "cache", out=tmp_path / "ckpt", config=config.override({"model.head": "linear", "stage_0.epochs": 1}), val_file=root / "val.jsonl", progress=False)
    model, saved = MultiModuleRewardModel.load(tmp_path / "ckpt")
    assert saved.head == "linear" and sum(p.numel() for p in model.heads["planner"].parameters()) == 3 * 384 + 1
    with pytest.raises(ConfigError, match="model.head 'wide'"):
        train_heads(files=[root / "train.jsonl"], cache_dir=root / "cache", out=tmp_path / "bad", config=config.override({"model.head": "wide"}), val_file=root / "val.jsonl", progress=False)
    assert not (tmp_path / "bad").exists()


def test_early_stopping_keeps_the_lowest_loss_and_stops_after_patience_epochs_without_one():
    stopping = EarlyStopping(patience=2)
    seen = [(stopping.update(epoch, loss), stopping.should_stop) for epoch, loss in enumerate([0.7, 0.6, 0.65, 0.6, 0.5, 0.55, 0.56], start=1)]
    assert seen == [(True, False), (True, False), (False, False), (False, True), (True, False), (False, False), (False, True)]  # a tie is no improvement
    assert (stopping.best_epoch, stopping.best_loss) == (5, 0.5)
    assert EarlyStopping(2, **stopping.state()) == stopping  # what stage 1's resume state restores


def test_a_run_that_fails_mid_training_leaves_no_scratch_folder(setup, tmp_path, monkeypatch):
    root, config, _ = setup
    seen = []

    def fails(*args, **kwargs):
        seen.extend(tmp_path.glob(".ckpt.pair-features-*/pieces/*"))  # the features are memory-mapped from there
        raise RuntimeError("out of memory, say")

    monkeypatch.setattr(pipeline.train_heads, "fit_heads", fails)
    with pytest.raises(RuntimeError, match="out of memory"):
        train_heads(files=[root / "train.jsonl"], cache_dir=root / "cache", out=tmp_path / "ckpt", config=config.override({"stage_0.memory_map_above_mb": 0}),
                    val_file=root / "val.jsonl", progress=False)  # fmt: skip
    assert seen, "the run failed after its scratch folder was filled"
    assert list(tmp_path.iterdir()) == [], "no scratch folder, lock or checkpoint left"
