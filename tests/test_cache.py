"""The Parquet/DuckDB embedding cache on its own: namespaces, atomic shards, reads, locks, maintenance."""

import json
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import pyarrow as pa
import pyarrow.parquet as pq

import cache.store
from cache import CacheError, DamagedCache, EmbeddingCache, MissingVectors, Namespace
from cache.store import UNLISTED_GRACE
from data.files import write_text_atomic
from features.pairs import text_key
from pipeline.cli import main

PAIRS = Path(__file__).parent / "fixtures" / "pairs_original.json"
FINGERPRINT = {"encoder": "test-encoder", "weights": "abc", "dimension": 8}


def keys_and_vectors(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [text_key("context", f"text {seed} {i}") for i in range(n)], rng.standard_normal((n, 8)).astype(np.float32)


@pytest.fixture
def namespace(tmp_path):
    return EmbeddingCache(tmp_path / "cache").namespace(FINGERPRINT, create=True)


def test_key_depends_on_role_and_text():
    assert text_key("context", "a") == text_key("context", "a")
    assert len({text_key("context", "a"), text_key("module", "a"), text_key("context", "b")}) == 3


def test_fetch_returns_vectors_in_the_order_asked(namespace):
    keys, vectors = keys_and_vectors(50)
    with namespace.writer():
        namespace.write_shard(keys[:20], vectors[:20])
        namespace.write_shard(keys[20:], vectors[20:])
    order = np.random.default_rng(1).permutation(50)
    fetched = namespace.fetch([keys[i] for i in order])
    assert fetched.dtype == np.float32 and fetched.shape == (50, 8)
    np.testing.assert_array_equal(fetched, vectors[order])
    assert namespace.missing(keys + ["unknown"]) == ["unknown"]


def test_a_read_is_one_query_streamed_by_batch_into_a_memory_map(namespace, tmp_path, monkeypatch):
    keys, vectors = keys_and_vectors(5000)
    with namespace.writer():
        for start in range(0, 5000, 1800):
            namespace.write_shard(keys[start : start + 1800], vectors[start : start + 1800])
    monkeypatch.setattr(cache.store, "READ_BATCH_BYTES", 1)  # DuckDB's smallest batch, 2048 rows: three batches
    order = np.random.default_rng(2).permutation(5000)
    wanted = [keys[i] for i in order]
    out = np.lib.format.open_memmap(tmp_path / "out.npy", mode="w+", dtype=np.float32, shape=(5000, 8))
    assert namespace.fetch(wanted, out=out) is out and namespace.reads == 1
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), vectors[order])
    np.testing.assert_array_equal(namespace.fetch(wanted), vectors[order])
    assert namespace.reads == 2


def test_index_reads_once_and_answers_from_memory(namespace, tmp_path):
    keys, vectors = keys_and_vectors(30)
    with namespace.writer():
        namespace.write_shard(keys[:10], vectors[:10])
        namespace.write_shard(keys[10:], vectors[10:])
    for memory_map in (None, tmp_path / "index.npy"):
        reads = namespace.reads
        index = namespace.index(memory_map)
        found, got = index.get([keys[29], "unknown", keys[3], keys[3]])
        assert found.tolist() == [True, False, True, True] and got.dtype == np.float32
        np.testing.assert_array_equal(got, namespace.fetch([keys[29], keys[3], keys[3]]))
        assert namespace.reads == reads + 2, "the index read once, the lookups none, the fetch once"
    assert isinstance(index.vectors, np.memmap) and len(index) == 30


def test_index_and_fetch_refuse_keys_stored_twice(namespace):
    keys, vectors = keys_and_vectors(4)
    with namespace.writer():
        namespace.write_shard(keys, vectors)
        namespace.write_shard(keys[:1], vectors[:1])
    for read in (namespace.index, lambda: namespace.fetch(keys)):
        with pytest.raises(CacheError, match="holds some keys more than once; run `pipeline cache repair"):
            read()


def test_shard_encoding_is_recorded_and_old_zstd_caches_stay_readable(namespace):
    keys, vectors = keys_and_vectors(6)
    manifest = json.loads((namespace.root / "manifest.json").read_text())
    assert manifest["shard_encoding"] == cache.store.SHARD_ENCODING
    with namespace.writer():
        namespace.write_shard(keys[:3], vectors[:3])
    codec = cache.store.SHARD_ENCODING["compression"].upper().replace("NONE", "UNCOMPRESSED")
    assert pq.ParquetFile(namespace.shard_paths()[0]).metadata.row_group(0).column(1).compression == codec

    # a namespace made before the field: its shards are written, and read, as zstd
    del manifest["shard_encoding"]
    (namespace.root / "manifest.json").write_text(json.dumps({**manifest, "shards": namespace.manifest["shards"]}))
    namespace.reload()
    assert namespace.shard_encoding == cache.store.OLD_SHARD_ENCODING
    with namespace.writer():
        namespace.write_shard(keys[3:], vectors[3:])
    old = pq.ParquetFile(namespace.shard_paths()[1]).metadata.row_group(0).column(1)
    assert old.compression == "ZSTD" and "RLE_DICTIONARY" in old.encodings
    np.testing.assert_array_equal(namespace.fetch(keys[::-1]), vectors[::-1])
    assert namespace.index().get(keys)[0].all() and namespace.verify() == []


@pytest.mark.parametrize("codec", ["lz4", "zstd", "none"])
def test_duckdb_reads_byte_stream_split_shards(namespace, codec):
    keys, vectors = keys_and_vectors(20)
    manifest = json.loads((namespace.root / "manifest.json").read_text())
    manifest["shard_encoding"] = {"compression": codec, "byte_stream_split": True, "dictionary": False}
    (namespace.root / "manifest.json").write_text(json.dumps(manifest))
    with namespace.reload().writer():
        namespace.write_shard(keys, vectors)
    assert "BYTE_STREAM_SPLIT" in pq.ParquetFile(namespace.shard_paths()[0]).metadata.row_group(0).column(1).encodings
    np.testing.assert_array_equal(namespace.fetch(keys[::-1]), vectors[::-1])


def test_fetch_names_missing_keys(namespace):
    keys, vectors = keys_and_vectors(10)
    with namespace.writer():
        namespace.write_shard(keys[:7], vectors[:7])
    for asked in (keys, pa.array(keys)):  # a list of str, or an Arrow array as train-heads passes them
        with pytest.raises(MissingVectors) as caught:
            namespace.fetch(asked)
        assert caught.value.missing == keys[7:] and "3 of 10 texts" in str(caught.value)
    np.testing.assert_array_equal(namespace.fetch(pa.array(keys[6::-1])), vectors[6::-1])


def test_a_shard_of_another_dimension_is_a_damaged_cache_however_duckdb_reports_it(namespace):
    """DuckDB's failed cast reaches the streamed reader as its own exception or, when a batch is
    already out, as a bare OSError from Arrow's stream: both must name the shard (once a flaky
    traceback in tests/test_faults.py)."""
    keys, vectors = keys_and_vectors(325)
    with namespace.writer():
        namespace.write_shard(keys[:125], vectors[:125])
        namespace.write_shard(keys[125:], vectors[125:])
    bad = namespace.shards[0]
    narrow = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(125 * 4, np.float32)), 4)
    pq.write_table(pa.table({"key": pa.array(keys[:125]), "vector": narrow}), namespace.root / bad.file)
    for wanted in [keys, keys[::-1]] * 25:  # the bare OSError comes about one read in seven
        with pytest.raises(DamagedCache, match=bad.file):
            namespace.fetch(wanted)


def test_float16_storage_reads_back_as_float32(tmp_path):
    namespace = EmbeddingCache(tmp_path).namespace(FINGERPRINT, dtype="float16", create=True)
    keys, vectors = keys_and_vectors(5)
    with namespace.writer():
        namespace.write_shard(keys, vectors)
    fetched = namespace.fetch(keys)
    assert fetched.dtype == np.float32
    np.testing.assert_allclose(fetched, vectors, rtol=1e-3, atol=1e-3)


def test_each_fingerprint_is_its_own_namespace(tmp_path):
    cache = EmbeddingCache(tmp_path)
    first = cache.namespace(FINGERPRINT, create=True)
    other = cache.namespace({**FINGERPRINT, "weights": "fine-tuned"}, create=True)
    half = cache.namespace(FINGERPRINT, dtype="float16", create=True)
    assert len({first.root, other.root, half.root}) == 3
    keys, vectors = keys_and_vectors(3)
    with first.writer():
        first.write_shard(keys, vectors)
    assert other.missing(keys) == keys
    assert cache.namespace(FINGERPRINT).fetch(keys).shape == (3, 8)
    with pytest.raises(CacheError, match="run `pipeline embed` first"):
        cache.namespace({**FINGERPRINT, "weights": "never embedded"})


def test_unlisted_shard_of_a_killed_run_is_ignored_and_cleaned_once_old_or_by_gc(namespace):
    keys, vectors = keys_and_vectors(9)
    with namespace.writer():
        namespace.write_shard(keys[:3], vectors[:3])
        old = namespace._write_shard_file(keys[3:6], vectors[3:6])  # killed between shard rename and listing
        young = namespace._write_shard_file(keys[6:], vectors[6:])  # or another machine's, about to be listed
    an_hour_ago = time.time() - UNLISTED_GRACE - 1
    os.utime(namespace.root / old.file, (an_hour_ago, an_hour_ago))
    assert namespace.missing(keys) == keys[3:]
    with namespace.writer(shard=(1, 2)):  # embed runs remove only unlisted shards older than the grace period
        pass
    assert shard_files(namespace) == sorted([*(s.file for s in namespace.shards), young.file])
    namespace.gc(keys)  # maintenance runs alone: it removes them all
    assert shard_files(namespace) == sorted(s.file for s in namespace.shards) and len(namespace) == 3


def shard_files(namespace) -> list[str]:
    return sorted(f"shards/{p.name}" for p in (namespace.root / "shards").glob("*.parquet"))


def test_each_writer_lists_its_shards_in_its_own_fragment_and_readers_merge_them(namespace):
    keys, vectors = keys_and_vectors(30)
    first, second = namespace, Namespace(namespace.root)  # two processes of one sharded run
    with first.writer(shard=(0, 2)), second.writer(shard=(1, 2)):
        first.write_shard(keys[:10], vectors[:10])
        second.write_shard(keys[10:20], vectors[10:20])
        first.write_shard(keys[20:], vectors[20:])
    fragments = sorted((namespace.root / "manifests").glob("*.json"))
    assert [len(json.loads(f.read_text())["shards"]) for f in fragments] in ([2, 1], [1, 2])
    assert {f.name.split("-")[0] for f in fragments} == {"rank0of2", "rank1of2"}
    assert json.loads((namespace.root / "manifest.json").read_text())["shards"] == []  # no writer touched it
    reader = Namespace(namespace.root)
    assert len(reader) == 30 and reader.missing(keys) == []
    np.testing.assert_array_equal(reader.fetch(keys), vectors)


def test_a_shard_listed_in_the_manifest_and_a_fragment_is_read_once(namespace):
    keys, vectors = keys_and_vectors(10)
    with namespace.writer():
        namespace.write_shard(keys, vectors)
    (fragment,) = (namespace.root / "manifests").glob("*.json")
    manifest = json.loads((namespace.root / "manifest.json").read_text())
    manifest["shards"] = json.loads(fragment.read_text())["shards"]  # maintenance killed between manifest rewrite and fragment removal
    (namespace.root / "manifest.json").write_text(json.dumps(manifest))
    reader = Namespace(namespace.root)
    assert len(reader.shards) == 1 and len(reader) == 10 and reader.verify() == []
    np.testing.assert_array_equal(reader.fetch(keys), vectors)


def test_a_fragment_removed_while_it_is_read_is_skipped(namespace):
    keys, vectors = keys_and_vectors(4)
    with namespace.writer():
        namespace.write_shard(keys, vectors)
    (namespace.root / "manifests" / "rank0of1-gone.json").symlink_to(namespace.root / "manifests" / "folded-meanwhile.json")  # listed, then not there
    reader = Namespace(namespace.root)
    assert len(reader) == 4 and reader.missing(keys) == []


def test_gc_and_repair_fold_the_fragments_into_one_manifest(namespace):
    keys, vectors = keys_and_vectors(20)
    for i in range(2):
        with namespace.writer(shard=(i, 2)):
            namespace.write_shard(keys[10 * i : 10 * i + 10], vectors[10 * i : 10 * i + 10])
    assert len(list((namespace.root / "manifests").glob("*.json"))) == 2
    assert namespace.repair(say=lambda line: None) == (0, 0)
    assert list((namespace.root / "manifests").glob("*.json")) == []
    assert len(json.loads((namespace.root / "manifest.json").read_text())["shards"]) == 2
    with namespace.writer():  # and the next run writes a fragment again, beside the folded manifest
        namespace.write_shard(keys[:1], vectors[:1] + 1)
    assert namespace.gc(keys[1:]) == 2  # the key 0 of both shards
    assert list((namespace.root / "manifests").glob("*.json")) == [] and shard_files(namespace) == sorted(s.file for s in namespace.shards)
    np.testing.assert_array_equal(Namespace(namespace.root).fetch(keys[1:]), vectors[1:])


def test_durable_writes_fsync_the_file_and_its_folder(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or real_fsync(fd))
    write_text_atomic(tmp_path / "plain.json", "{}")
    assert synced == []
    write_text_atomic(tmp_path / "sub" / "durable.json", "{}", durable=True)
    assert synced[0].startswith(str(tmp_path / "sub" / ".durable.json.")) and synced[1:] == [str(tmp_path / "sub"), str(tmp_path)]  # sub/ is new
    synced.clear()
    namespace = EmbeddingCache(tmp_path / "cache").namespace(FINGERPRINT, create=True)
    keys, vectors = keys_and_vectors(3)
    root = namespace.root
    assert [Path(path) for path in synced if Path(path).is_dir()] == [root, root.parent]  # manifest.json, the namespace folder
    synced.clear()
    with namespace.writer():
        namespace.write_shard(keys, vectors)  # the shard, then the fragment, each in a folder of its own it creates
        assert [Path(path) for path in synced if Path(path).is_dir()] == [root / "shards", root, root / "manifests", root]
        synced.clear()
        namespace.write_shard(keys, vectors)
    assert [Path(path).parent.name if Path(path).name.startswith(".") else Path(path).name for path in synced] == ["shards", "shards", "manifests", "manifests"]  # each temp file, then its folder


def _hold_writer_lock(root, ready, release):
    from cache.store import Namespace

    with Namespace(root).writer():
        ready.set()
        release.wait(10)


def test_a_second_writer_gets_a_clear_error_not_a_corrupt_cache(namespace):
    context = multiprocessing.get_context("spawn")
    ready, release = context.Event(), context.Event()
    holder = context.Process(target=_hold_writer_lock, args=(namespace.root, ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        with pytest.raises(CacheError, match="another `pipeline embed` is writing"):
            with namespace.writer():
                pass
        with pytest.raises(CacheError, match="another `pipeline embed`"):
            with namespace.writer(shard=(0, 2)):
                pass
    finally:
        release.set()
        holder.join(30)
    with namespace.writer():
        pass


def test_verify_names_a_corrupt_shard(namespace, tmp_path):
    keys, vectors = keys_and_vectors(20)
    with namespace.writer():
        namespace.write_shard(keys[:10], vectors[:10])
        bad = namespace.write_shard(keys[10:], vectors[10:])
    assert namespace.verify() == []
    path = namespace.root / bad.file
    path.write_bytes(path.read_bytes()[:200])
    problems = namespace.verify()
    assert len(problems) == 1 and str(path) in problems[0] and "unreadable" in problems[0]
    result = CliRunner().invoke(main, ["cache", "verify", str(namespace.root.parent)])
    assert result.exit_code == 1 and bad.file.split("/")[1] in result.output


def test_verify_finds_nan_and_duplicate_keys(namespace):
    keys, vectors = keys_and_vectors(4)
    vectors[2, 3] = np.nan
    with namespace.writer():
        namespace.write_shard(keys, vectors)
        namespace.write_shard(keys[:1], vectors[:1])
    problems = namespace.verify()
    assert any("NaN" in p for p in problems) and any("1 keys stored more than once" in p for p in problems)


def test_gc_drops_only_unreferenced_vectors(namespace):
    keys, vectors = keys_and_vectors(30)
    with namespace.writer():
        namespace.write_shard(keys[:15], vectors[:15])
        namespace.write_shard(keys[15:], vectors[15:])
    keep = keys[5:20]
    assert namespace.gc(keep) == 15
    assert len(namespace) == 15 and namespace.missing(keys) == keys[:5] + keys[20:]
    np.testing.assert_array_equal(namespace.fetch(keep), vectors[5:20])
    manifest = json.loads((namespace.root / "manifest.json").read_text())
    assert sorted(p.name for p in (namespace.root / "shards").glob("*.parquet")) == sorted(s["file"].split("/")[1] for s in manifest["shards"])
    assert namespace.verify() == []


def test_cache_info_lists_namespaces(namespace):
    keys, vectors = keys_and_vectors(12)
    with namespace.writer():
        namespace.write_shard(keys, vectors)
    result = CliRunner().invoke(main, ["cache", "info", str(namespace.root.parent)])
    assert result.exit_code == 0
    assert namespace.id in result.output and "test-encoder" in result.output and "12 vectors in 1 shards" in result.output
