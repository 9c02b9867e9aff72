"""`pipeline embed` end to end with real encoders: dedup, reuse, resume after a kill, sharded runs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from cache import EmbeddingCache, MissingVectors
from data import ConfigError, load_pairs, pairs_from_records, write_pairs
from data.synth import generate_pairs
from data.schema import TEXT_COLUMNS
from features.pairs import pair_text_keys, pair_vectors, text_key, text_keys, unique_texts, with_text_keys
from features.views import View, pair_pieces
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.embed import embed_pairs, load_encoder, shard_from_environment
from pipeline.train_heads import read_features

PIPELINE = [sys.executable, "-m", "pipeline.cli"]


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    write_pairs(pairs_from_records(generate_pairs(40, seed=5)), path)
    return path


@pytest.fixture(scope="module")
def minilm_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "config.yaml"
    path.write_text("model:\n  encoder: minilm\n  max_context_tokens: 32\n  max_module_tokens: 32\n  batch_size: 16\ncache:\n  shard_size: 8\n")
    return path


@pytest.fixture(scope="module")
def minilm(minilm_config):
    return load_encoder(load_config(minilm_config))


def cache_contents(cache_dir: Path) -> dict[str, tuple[list[str], np.ndarray]]:
    """namespace -> (sorted keys, their vectors), read back through DuckDB."""
    contents = {}
    for namespace in EmbeddingCache(cache_dir).namespaces():
        keys = sorted(
            key for shard in namespace.shard_paths() for key in pl.read_parquet(shard)["key"].to_list()
        )
        contents[namespace.id] = (keys, namespace.fetch(keys))
    return contents


def assert_same_cache(first: Path, second: Path) -> None:
    a, b = cache_contents(first), cache_contents(second)
    assert a.keys() == b.keys()
    for namespace in a:
        assert a[namespace][0] == b[namespace][0]  # same keys, each once
        np.testing.assert_allclose(a[namespace][1], b[namespace][1], atol=2e-5)
    for namespace in EmbeddingCache(second).namespaces():
        assert namespace.verify() == []


def test_each_unique_text_is_encoded_once_and_a_rerun_reuses_all(tmp_path, pairs_file, minilm_config, minilm):
    config = load_config(minilm_config)
    pairs = load_pairs(pairs_file)
    texts = unique_texts(pairs)
    assert texts.height < 4 * pairs.height  # contexts repeat across modules

    report = embed_pairs([pairs_file], tmp_path, config, encoder=minilm, progress=False)
    assert (report.new, report.reused, report.unique, report.referenced) == (texts.height, 0, texts.height, 4 * pairs.height)
    assert report.truncated["context"] > 0  # 32 tokens cut every synthetic trajectory

    again = embed_pairs([pairs_file], tmp_path, config, encoder=minilm, progress=False)
    assert (again.new, again.reused) == (0, texts.height)

    namespace = EmbeddingCache(tmp_path).namespaces()[0]
    vectors = pair_vectors(namespace, pairs)
    expected, _ = minilm.encode(pairs["positive_module_text"].to_list()[:5], "module")
    np.testing.assert_allclose(vectors.positive_module_text[:5], expected, atol=1e-5)
    assert vectors.positive_context.shape == (pairs.height, 384)


def test_adding_pairs_encodes_only_their_new_texts(tmp_path, minilm_config, minilm):
    config = load_config(minilm_config)
    records = generate_pairs(48, seed=9)
    first, more = tmp_path / "first.json", tmp_path / "more.json"
    write_pairs(pairs_from_records(records[:40]), first)
    write_pairs(pairs_from_records(records[40:]), more)
    embed_pairs([first], tmp_path / "cache", config, encoder=minilm, progress=False)
    report = embed_pairs([first, more], tmp_path / "cache", config, encoder=minilm, progress=False)
    all_texts = unique_texts(load_pairs([first, more]))
    old_texts = unique_texts(load_pairs([first]))
    assert report.new == all_texts.height - old_texts.height > 0
    assert report.reused == old_texts.height


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_cache_as_a_clean_run(tmp_path, pairs_file, minilm_config):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    clean = tmp_path / "clean"
    subprocess.run(PIPELINE + ["embed", str(pairs_file), "--cache", str(clean), "--config", str(minilm_config)], check=True, env=env, capture_output=True)

    killed = tmp_path / "killed"
    process = subprocess.Popen(PIPELINE + ["embed", str(pairs_file), "--cache", str(killed), "--config", str(minilm_config)], env=env, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        fragments = list(killed.glob("*/manifests/*.json"))  # the run's own list of its shards
        if fragments and len(json.loads(fragments[0].read_text())["shards"]) >= 3:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    namespace = EmbeddingCache(killed).namespaces()[0]
    assert namespace.verify() == [] and 0 < len(namespace) < len(unique_texts(load_pairs(pairs_file)))

    result = subprocess.run(PIPELINE + ["embed", str(pairs_file), "--cache", str(killed), "--config", str(minilm_config)], check=True, env=env, capture_output=True, text=True)
    assert f"{len(namespace)} reused" in result.stdout
    assert_same_cache(clean, killed)


@pytest.mark.slow
def test_two_sharded_processes_fill_the_cache_like_one_run(tmp_path, pairs_file, minilm_config):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    single = tmp_path / "single"
    subprocess.run(PIPELINE + ["embed", str(pairs_file), "--cache", str(single), "--config", str(minilm_config)], check=True, env=env, capture_output=True)
    sharded = tmp_path / "sharded"
    ranks = [
        subprocess.Popen(PIPELINE + ["embed", str(pairs_file), "--cache", str(sharded), "--config", str(minilm_config), "--shard", f"{i}/2"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    outputs = [rank.communicate(timeout=300) for rank in ranks]
    assert [rank.returncode for rank in ranks] == [0, 0], outputs
    assert all("left to other ranks" in out for out, _ in outputs)
    (namespace,) = EmbeddingCache(sharded).namespaces()
    fragments = sorted((namespace.root / "manifests").glob("*.json"))  # each rank listed its shards in its own file
    assert [f.name.split("-")[0] for f in fragments] == ["rank0of2", "rank1of2"]
    assert all(json.loads(f.read_text())["shards"] for f in fragments) and json.loads((namespace.root / "manifest.json").read_text())["shards"] == []
    assert_same_cache(single, sharded)
    assert CliRunner().invoke(main, ["cache", "verify", str(sharded)]).exit_code == 0


def test_shard_comes_from_flag_or_torchrun_environment(monkeypatch):
    assert shard_from_environment("1/4") == (1, 4)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert shard_from_environment(None) == (1, 2)
    with pytest.raises(ConfigError, match="i/n"):
        shard_from_environment("two")
    with pytest.raises(ConfigError, match="in \\[0, 2\\)"):
        shard_from_environment("2/2")


def test_another_encoder_writes_its_own_namespace(tmp_path, pairs_file, minilm_config, minilm, tiny_qwen3_path):
    embed_pairs([pairs_file], tmp_path, load_config(minilm_config), encoder=minilm, progress=False)
    qwen = load_config(minilm_config, {"model.encoder": str(tiny_qwen3_path)})
    report = embed_pairs([pairs_file], tmp_path, qwen, progress=False)
    assert report.reused == 0 and report.new == report.unique
    namespaces = {ns.id: ns for ns in EmbeddingCache(tmp_path).namespaces()}
    assert len(namespaces) == 2
    assert {ns.dimension for ns in namespaces.values()} == {384, 64}
    assert namespaces[report.namespace].fingerprint["pooling"] == "lasttoken"


def test_cli_embed_reports_new_reused_truncated(tmp_path, pairs_file, minilm_config):
    result = CliRunner().invoke(main, ["embed", str(pairs_file), "--cache", str(tmp_path), "--config", str(minilm_config)])
    assert result.exit_code == 0, result.output
    line = result.output.strip().splitlines()[-1]
    assert "texts new, 0 reused" in line and "truncated (context" in line
    (namespace,) = EmbeddingCache(tmp_path).namespaces()
    assert (namespace.root / "config.yaml").exists()
    gc = CliRunner().invoke(main, ["cache", "gc", str(tmp_path), str(pairs_file), "--config", str(minilm_config)])
    assert gc.exit_code == 0 and "dropped 0 vectors" in gc.output


def test_unloadable_encoder_fails_clearly_and_writes_nothing(tmp_path, pairs_file):
    result = CliRunner().invoke(main, ["embed", str(pairs_file), "--cache", str(tmp_path / "cache"), "--encoder", str(tmp_path / "no-such-model")])
    assert result.exit_code == 1
    assert "no-such-model" in result.output and "--encoder" in result.output
    assert not (tmp_path / "cache").exists()


def test_bad_pairs_never_reach_the_encoder(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[{\"pair_id\": 1}]")
    result = CliRunner().invoke(main, ["embed", str(bad), "--cache", str(tmp_path / "cache"), "--encoder", "minilm"])
    assert result.exit_code == 1 and "record 0" in result.output
    assert not (tmp_path / "cache").exists()


# --- text keys, hashed once per run --------------------------------------------------------------


def test_text_keys_are_each_texts_key_and_ride_on_the_table(pairs_file):
    pairs = load_pairs(pairs_file)
    keyed = with_text_keys(pairs)
    for column, role in [("positive_context", "context"), ("negative_context", "context"), ("positive_module_text", "module"), ("negative_module_text", "module")]:
        assert keyed[f"{column}_key"].to_list() == [text_key(role, text) for text in pairs[column]]
    assert keyed.drop(pair_text_keys(keyed).columns).equals(pairs)
    assert pair_text_keys(keyed).equals(pair_text_keys(pairs))
    assert unique_texts(keyed).equals(unique_texts(pairs))
    texts = unique_texts(pairs)
    assert texts.height == texts["key"].n_unique() == pairs["positive_context"].n_unique() + pairs["negative_context"].n_unique() + 2 * pairs.height


def test_keys_hashed_from_arrow_bytes_equal_text_key_on_any_text():
    """The columnar hashing must never change a key: caches hold vectors under the old ones."""
    texts = ["", "plain", "café über naïve", "中文 テキスト 한국어", "emoji 🙂🚀 and a combining é", "nul \0 inside\nand newline",
             "x" * 2047, "y" * 2048, "long " * 40_000, "\u2028 line separator", "🙂" * 1000]  # fmt: skip
    for role in ("context", "module"):
        expected = [text_key(role, text) for text in texts]
        assert text_keys(role, pl.Series(texts)) == expected
        assert text_keys(role, pl.Series(texts), chunk=3) == expected  # chunk edges
        assert text_keys(role, pl.Series(["skip", *texts]).slice(1)) == expected  # a slice: Arrow offsets not at 0
    repeated = pl.DataFrame({column: [texts[(i + j) % 5] for i in range(12)] for j, column in enumerate(TEXT_COLUMNS)})
    keyed = with_text_keys(repeated)
    for column in TEXT_COLUMNS:
        role = "context" if column.endswith("context") else "module"
        assert keyed[f"{column}_key"].to_list() == [text_key(role, text) for text in repeated[column]]


def test_keys_carried_on_the_table_are_used_not_hashed_again(pairs_file, tmp_path):
    """A key column altered on purpose comes out of every reader of keys: proof they reuse it."""
    keyed = with_text_keys(load_pairs(pairs_file))
    altered = keyed.with_columns(positive_module_text_key=pl.when(pl.int_range(pl.len()) == 0).then(pl.lit("altered")).otherwise("positive_module_text_key"))
    assert with_text_keys(altered)["positive_module_text_key"][0] == "altered"
    assert pair_text_keys(altered)["positive_module_text_key"][0] == "altered"
    assert "altered" in unique_texts(altered)["key"].to_list()
    cut, _, keys = pair_pieces(altered, View())
    assert keys["positive_module_text_key"][0] == "altered" and "altered" in cut.table["key"].to_list()
    # train-heads' read of train and val together asks the cache for the carried key
    empty = EmbeddingCache(tmp_path / "cache").namespace({"encoder": "none", "dimension": 4}, create=True)
    with pytest.raises(MissingVectors) as caught:
        read_features(empty, altered[:3], altered[3:], View(), 4096, tmp_path)
    assert "altered" in caught.value.missing
    # the keys are ours, not the user's: pairs are written without them
    written = write_pairs(keyed, tmp_path / "keyed.jsonl")
    assert load_pairs(written).equals(load_pairs(pairs_file))
