"""bench/scale.py at a tiny size: its synthetic pairs share texts as it says, its namespace holds
exactly their vectors, and a run prints the table with every target."""

import re

import pytest

from bench_script import load_bench
from cache import EmbeddingCache
from data import load_pairs
from features.pairs import unique_texts


def test_synthetic_pairs_share_contexts_and_their_keys_are_the_namespace(tmp_path):
    scale = load_bench("scale")
    pairs = load_pairs(scale.write_jsonl(tmp_path / "pairs.jsonl", 40, 0))
    texts = unique_texts(pairs)
    assert texts.height == 100  # 2 contexts per task of 4 pairs, 2 module texts per pair: 2.5 per pair
    assert (texts["role"] == "context").sum() == 20
    keys = scale.distinct_keys(40)
    assert sorted(keys) == sorted(texts["key"].to_list())
    namespace = scale.write_namespace(tmp_path / "cache", keys, 8)
    assert EmbeddingCache(tmp_path / "cache").select("synthetic-8").id == namespace.id
    assert namespace.fetch(keys[:3]).shape == (3, 8)
    realistic = load_pairs(scale.write_jsonl(tmp_path / "long.jsonl", 4, 1000))
    assert realistic["positive_context"].str.len_chars().min() >= 1000


@pytest.mark.slow
def test_a_tiny_run_prints_every_target(tmp_path, capsys):
    scale = load_bench("scale")
    scale.print_table(scale.run(tmp_path, [200, 400], [16], 200))
    table = capsys.readouterr().out
    for measure in (
        "train-heads peak RSS", "cache -> matrix time vs pq.read_table", "cache reads per run",
        "epoch seconds per pair", "serve request from --cache", "load + validate + key vs pl.read_ndjson",
    ):  # fmt: skip
        assert measure in table
    rows = [line for line in table.splitlines() if re.search(r"\d\.\d\dx +<= |\d\.\d\dx +>= ", line)]
    assert len(rows) == 2 * 3 + 1 + 1 + 2  # per size: RSS, read, reads; then epoch, serve; load per size
    assert all(line.endswith(("met", "MISSED")) for line in rows)
    assert re.search(r"cache reads per run.* 1 +1 +1\.00x", table)  # train and validation in one read
