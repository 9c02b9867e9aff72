"""The fault suite (issue 14): every way a file, a crash or a client can break a verb, one test per
class, so that a later change cannot quietly reopen any of them. What each must give (docs/troubleshooting.md,
one section per fault): exit 1 and one line saying what and where and the way out,
never a traceback; nothing half-written; the server answers the request at fault alone.

The kill -9 tests (every verb that writes, killed at a random moment, then rerun) are slow."""

import copy
import dataclasses
import errno
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from reward_checkpoint import checkpoint_config

from cache import CacheError, EmbeddingCache
from data import load_pairs
from data.errors import UserError
from data.files import check_output_folder, is_leftover, json_text
from features.pairs import unique_texts
from heads.model import CheckpointError
from pipeline.cli import main
from pipeline.config import ServeConfig
from pipeline.embed import embed_pairs, load_encoder
from pipeline.rewards import UntrainedModule, load
from pipeline.serve import BackgroundServer, create_app

PAIRS = Path(__file__).parent / "fixtures" / "pairs_original.json"


@pytest.fixture(scope="module")
def trained(reward_checkpoint):
    """root/checkpoint (evaluated), root/plain, root/cache, root/{train,val,unseen}.jsonl: read only."""
    return reward_checkpoint


@pytest.fixture
def work(trained, tmp_path):
    """A copy of the checkpoint, its cache and its data that a test may damage."""
    for name in ("plain", "cache"):
        shutil.copytree(trained / name, tmp_path / name)
    for name in ("train.jsonl", "val.jsonl", "unseen.jsonl"):
        shutil.copy(trained / name, tmp_path / name)
    return tmp_path


def run(*args) -> "CliRunner.Result":
    return CliRunner().invoke(main, [str(a) for a in args])


def refused(result, *fragments: str) -> str:
    """The result of a verb that must stop on a user's mistake: exit 1, no traceback, every
    fragment in its output. Returns the output."""
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), (result.output, result.exception)
    assert "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in result.output, result.output
    return result.output


def listing(folder: Path) -> dict[str, int]:
    """Every file under `folder` with its size: what 'nothing was written' compares."""
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.endswith(".lock")}


# --- input files -------------------------------------------------------------------------------

DEEP = "[" * 100_000 + "]" * 100_000


def pair_record(i: int = 0) -> dict:
    side = {"trajectory_full_context": f"Task: t{i}\n[Round 1]\n<plan>p</plan>", "outcome": 1}
    return {
        "pair_id": f"p{i}", "target_module": "planner", "task": f"t{i}",
        "positive": {**side, "module_k_all_rounds": f"[Round 1]\n<plan>good {i}</plan>"},
        "negative": {**side, "module_k_all_rounds": f"[Round 1]\n<plan>bad {i}</plan>", "outcome": 0},
    }  # fmt: skip


def score_record(i: int = 0) -> dict:
    return {"context": f"Task: t{i}", "modules": {"planner": f"[Round 1]\n<plan>p{i}</plan>"}}


def run_record(i: int = 0) -> dict:
    return {"run_id": f"r{i}", "task": "t", "source": f"t{i}", "outcome": i % 2, "rounds": [{"plan": f"p{i}", "action": f"a{i}"}]}


def bad_file(kind: str, record) -> bytes:
    """A JSON Lines file of `record`s with one fault of `kind` (the record at fault is on line 2)."""
    good = json.dumps(record(0))
    at_fault = {
        "empty": None,
        "binary": None,
        "non-UTF-8": json.dumps(record(1)).replace("t1", "t\udce9").encode("utf-8", "surrogateescape").decode("latin-1"),
        "half-valid": json.dumps(record(1))[:40],
        "deep nesting": json.dumps({**record(1), "extra": "@"}).replace('"@"', DEEP),
        "NaN": json.dumps({**record(1), "reward": "@"}).replace('"@"', "NaN"),
        "Infinity": json.dumps({**record(1), "reward": "@"}).replace('"@"', "-Infinity"),
        "lone surrogate": json.dumps(record(1)).replace("t1", "t\\ud800"),
    }[kind]
    if kind == "empty":
        return b""
    if kind == "binary":
        return bytes(range(256)) * 8
    if kind == "non-UTF-8":
        return (good + "\n").encode() + at_fault.encode("latin-1") + b"\n"
    return f"{good}\n{at_fault}\n".encode()


BAD_INPUT = {
    "empty": "empty",
    "binary": "not valid UTF-8",
    "non-UTF-8": "not valid UTF-8",
    "half-valid": "line 2",
    "deep nesting": "line 2, field 'extra': nested more than 100 levels deep",
    "NaN": "line 2, field 'reward': NaN is not a JSON number",
    "Infinity": "line 2, field 'reward': -Infinity is not a JSON number",
    "lone surrogate": "line 2, field 'task': a lone surrogate",
}
READERS = ["validate", "split", "embed", "train-heads", "evaluate", "cache gc", "score", "pairs"]


def reader_args(verb: str, root: Path, bad: Path, out: Path) -> list:
    return {
        "validate": ["validate", bad],
        "split": ["split", bad, "--out", out],
        "embed": ["embed", bad, "--cache", root / "cache", "--encoder", "minilm"],
        "train-heads": ["train-heads", bad, "--cache", root / "cache", "--out", out],
        "evaluate": ["evaluate", root / "plain", bad, "--cache", root / "cache", "--out", out],
        "cache gc": ["cache", "gc", root / "cache", bad],
        "score": ["score", root / "plain", bad, "--out", out],
        "pairs": ["pairs", bad, "--out", out],
    }[verb]


@pytest.mark.parametrize("verb", READERS)
@pytest.mark.parametrize("kind", list(BAD_INPUT))
def test_a_bad_input_file_is_named_with_its_line_and_field_and_nothing_is_written(work, kind, verb):
    record = {"score": score_record, "pairs": run_record}.get(verb, pair_record)
    field = {"score": "context", "pairs": "source"}.get(verb, "task")
    bad = work / "bad.jsonl"
    bad.write_bytes(bad_file(kind, record))
    before = listing(work)
    output = refused(run(*reader_args(verb, work, bad, work / "out")), str(bad), BAD_INPUT[kind].replace("'task'", repr(field)))
    assert len(output.strip().splitlines()) == 1, output
    assert listing(work) == before, output  # no output, no cache file, no temporary left behind


def test_a_deep_or_non_finite_json_array_names_its_record_and_field(tmp_path):
    records = [pair_record(0), {**pair_record(1), "positive": {**pair_record(1)["positive"], "outcome": "@"}}]
    (tmp_path / "nan.json").write_text(json.dumps(records, indent=1).replace('"@"', "NaN"))
    refused(run("validate", tmp_path / "nan.json"), "record 1, field 'positive.outcome': NaN is not a JSON number")
    text = json.dumps([pair_record(0), {**pair_record(1), "task": "@"}], indent=1).replace('"@"', DEEP)
    (tmp_path / "deep.json").write_text(text)
    line = text[: text.index('"task": [')].count("\n") + 1
    refused(run("validate", tmp_path / "deep.json"), f"record 1, line {line}, field 'task': nested more than 100 levels deep")


def test_a_non_finite_outcome_in_parquet_is_a_validation_problem(tmp_path):
    from data import pairs_from_records, write_pairs

    pairs = pairs_from_records([pair_record(0), pair_record(1)])
    write_pairs(pairs.with_columns(pl.Series("positive_outcome", [float("inf"), float("nan")])), tmp_path / "pairs.parquet")
    output = refused(run("validate", tmp_path / "pairs.parquet"), "record 0, pair_id 'p0', field 'positive.outcome': outcome inf is not a number")
    assert "record 1, pair_id 'p1', field 'positive.outcome': outcome NaN is not a number" in output


# --- outputs -----------------------------------------------------------------------------------


def out_args(verb: str, trained: Path) -> list:
    return {
        "split": ["split", PAIRS],
        "demo": ["demo"],
        "train-heads": ["train-heads", trained / "train.jsonl", "--cache", trained / "cache", "--encoder", "minilm", "--epochs", "1", "--device", "cpu"],
        "evaluate": ["evaluate", trained / "plain", trained / "val.jsonl", "--cache", trained / "cache", "--bootstrap", "0", "--no-store-normalization", "--device", "cpu"],
    }[verb]


@pytest.mark.slow  # a subprocess or several trainings: the full suite runs it, the fast lane stays quick
@pytest.mark.parametrize("verb", ["split", "demo", "train-heads", "evaluate"])
def test_out_over_a_folder_not_of_ours_is_refused_untouched_and_replaced_only_with_overwrite(trained, tmp_path, verb):
    out = tmp_path / "keep"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "config.yaml").write_text("mine too")  # a name of ours, beside one that is not
    output = refused(run(*out_args(verb, trained), "--out", out), str(out), "notes.txt", "--overwrite")
    assert len(output.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep"]  # no half-written folder beside it
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "notes.txt"] and (out / "notes.txt").read_text() == "mine"
    if verb == "demo":
        return  # minutes; the demo test runs it
    assert run(*out_args(verb, trained), "--out", out, "--overwrite").exit_code == 0
    assert run(*out_args(verb, trained), "--out", out).exit_code == 0  # our own output is written over


def test_every_json_we_write_is_strict_json():
    assert json_text({"loss": float("nan"), "curve": [1.0, float("inf")], "n": 3}) == '{"loss": null, "curve": [1.0, null], "n": 3}'


def test_score_refuses_a_non_finite_reward_and_writes_nothing(trained, tmp_path):
    """NaN vectors in a cache make NaN rewards: refused with the way out, never written as NaN."""
    records = [score_record(0), score_record(1)]
    (tmp_path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    scorer = load(trained / "plain", device="cpu")
    namespace = EmbeddingCache(tmp_path / "cache").namespace(scorer.fingerprint, create=True)
    texts = unique_texts(load_pairs(trained / "val.jsonl"))  # any keys, and the records' own
    from features.pairs import text_key

    keys = [text_key("context", r["context"]) for r in records] + [text_key("module", r["modules"]["planner"]) for r in records]
    with namespace.writer():
        namespace.write_shard(keys + texts["key"].to_list()[:2], np.full((len(keys) + 2, namespace.dimension), np.nan, np.float32))
    output = refused(run("score", trained / "plain", tmp_path / "records.jsonl", "--cache", tmp_path / "cache", "--out", tmp_path / "scored.jsonl"))
    assert "not finite" in output and "pipeline cache repair" in output and not (tmp_path / "scored.jsonl").exists()


# --- the cache ---------------------------------------------------------------------------------


def damage(cache: Path, how: str) -> tuple[str, str, list[str]]:
    """Damage the first shard of the cache's only namespace: (namespace id, shard file, its keys)."""
    (namespace,) = EmbeddingCache(cache).namespaces()
    shard = namespace.shards[0]
    path = namespace.root / shard.file
    keys = pq.read_table(path).column("key").to_pylist()
    if how == "truncated":
        path.write_bytes(path.read_bytes()[:300])
    elif how == "deleted":
        path.unlink()
    else:  # vectors of another dimension, under the same keys
        vectors = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(len(keys) * 4, np.float32)), 4)
        pq.write_table(pa.table({"key": pa.array(keys), "vector": vectors}), path)
    return namespace.id, shard.file, keys


def cache_reader_args(verb: str, root: Path) -> list:
    records = root / "records.jsonl"
    records.write_text("".join(json.dumps({"context": c, "modules": {m: t}}) + "\n" for c, m, t in load_pairs(root / "val.jsonl").select("positive_context", "target_module", "positive_module_text").rows()))
    return {
        "train-heads": ["train-heads", root / "train.jsonl", "--val", root / "val.jsonl", "--cache", root / "cache", "--out", root / "out"],
        "evaluate": ["evaluate", root / "plain", root / "val.jsonl", "--cache", root / "cache", "--out", root / "out", "--device", "cpu"],
        "cache verify": ["cache", "verify", root / "cache"],
        "cache gc": ["cache", "gc", root / "cache", root / "val.jsonl"],
        "serve": ["serve", root / "plain", "--cache", root / "cache", "--device", "cpu"],
        "score": ["score", root / "plain", records, "--cache", root / "cache", "--out", root / "out.jsonl", "--device", "cpu"],
    }[verb]


@pytest.mark.parametrize("verb", ["train-heads", "evaluate", "cache verify", "cache gc", "serve", "score"])
@pytest.mark.parametrize("how", ["truncated", "deleted", "wrong dimension"])
def test_a_damaged_shard_is_one_line_naming_namespace_shard_and_cache_repair(work, how, verb):
    namespace, shard, _ = damage(work / "cache", how)
    args = cache_reader_args(verb, work)
    before = listing(work / "cache")
    output = refused(run(*args), namespace if verb != "cache verify" else "", shard, f"pipeline cache repair {work / 'cache'}")
    last = output.strip().splitlines()[-1]
    assert last.startswith("Error: ") and "repair" in last and not (work / "out").exists() and not (work / "out.jsonl").exists()
    if verb != "cache verify":
        assert shard in last and namespace in last
    assert listing(work / "cache") == before  # nothing read was removed or rewritten


def test_cache_repair_unlists_a_lost_shard_and_embed_then_encodes_exactly_its_texts(work):
    config = checkpoint_config()
    namespace_id, shard, lost = damage(work / "cache", "truncated")
    result = run("cache", "repair", work / "cache")
    assert result.exit_code == 0 and f"unlisting shard {shard}, which is unreadable" in result.output, result.output
    assert run("cache", "verify", work / "cache").exit_code == 0
    namespace = EmbeddingCache(work / "cache").select()
    assert namespace.missing(lost) == lost and len(namespace) > 0

    kept = set(namespace.shards)
    report = embed_pairs([work / "train.jsonl", work / "val.jsonl"], work / "cache", config, encoder=load_encoder(config), progress=False)
    assert report.new == len(lost) and report.namespace == namespace_id
    (new,) = set(namespace.reload().shards) - kept
    assert sorted(pq.read_table(namespace.root / new.file).column("key").to_pylist()) == sorted(lost)
    assert namespace.missing(lost) == [] and namespace.verify() == []


def test_cache_repair_keeps_one_vector_of_a_key_stored_twice(work):
    namespace = EmbeddingCache(work / "cache").select()
    keys = pq.read_table(namespace.root / namespace.shards[0].file).column("key").to_pylist()[:3]
    with namespace.writer():
        namespace.write_shard(keys, np.ones((3, namespace.dimension), np.float32))
    with pytest.raises(CacheError, match="cache repair"):
        namespace.fetch(keys)
    assert run("cache", "repair", work / "cache").exit_code == 0
    assert namespace.reload().verify() == [] and namespace.fetch(keys).shape == (3, namespace.dimension)


@pytest.mark.parametrize("where", ["parent folders", "absolute path", "symlink"])
def test_a_manifest_listing_a_file_outside_the_shards_folder_is_refused_and_the_file_never_touched(work, tmp_path, where):
    namespace = EmbeddingCache(work / "cache").select()
    shard = namespace.shards[0]
    outside = tmp_path / "outside.parquet"  # a readable shard, so only the path check keeps readers and gc away
    shutil.copy(namespace.root / shard.file, outside)
    if where == "symlink":
        (namespace.root / "shards" / "link.parquet").symlink_to(outside)
    entry = {"parent folders": "../../outside.parquet", "absolute path": str(outside), "symlink": "shards/link.parquet"}[where]
    manifest = json.loads((namespace.root / "manifest.json").read_text())
    manifest["shards"] = [{"file": entry, "rows": shard.rows}]
    (namespace.root / "manifest.json").write_text(json.dumps(manifest))
    before = outside.read_bytes()
    cache = work / "cache"
    for args in (["cache", "gc", cache, PAIRS], ["cache", "verify", cache], ["cache", "info", cache], ["cache", "repair", cache]):
        output = refused(run(*args), namespace.id, entry, "damaged")
        assert len(output.strip().splitlines()) == 1, output
    assert outside.read_bytes() == before


@pytest.mark.parametrize(
    "manifest, problem",
    [
        ("{not json", "not valid JSON"),
        ("[]", "holds a JSON list"),
        ('{"fingerprint": {}, "dimension": 8, "dtype": "float32"}', "has no 'shards'"),
        ('{"fingerprint": {}, "dimension": 8, "dtype": "float32", "shards": [{"file": 3}]}', "lists shard 0"),
    ],
)
def test_an_invalid_manifest_is_one_line_naming_the_namespace_and_the_way_out(work, manifest, problem):
    (namespace,) = EmbeddingCache(work / "cache").namespaces()
    (namespace.root / "manifest.json").write_text(manifest)
    cache = work / "cache"
    for args in (["cache", "verify", cache], ["cache", "info", cache], ["cache", "gc", cache, PAIRS], ["cache", "repair", cache], cache_reader_args("score", work)):
        output = refused(run(*args), namespace.id, problem, "embed again")
        assert len(output.strip().splitlines()) == 1, output


@pytest.mark.parametrize(
    "content, problem",
    [("{half", "not valid JSON"), ('{"shards": [{"file": "shards/x.parquet"}]}', "lists shard 0"), ('{"shards": [{"file": "../x.parquet", "rows": 1}]}', "not inside")],
)
def test_a_damaged_manifest_fragment_is_one_line_naming_the_fragment_and_nothing_is_touched(work, content, problem):
    (namespace,) = EmbeddingCache(work / "cache").namespaces()
    (fragment,) = (namespace.root / "manifests").glob("*.json")  # the embed run's list of its shards
    fragment.write_text(content)
    before, cache = listing(work / "cache"), work / "cache"
    for args in (["cache", "verify", cache], ["cache", "info", cache], ["cache", "gc", cache, PAIRS], ["cache", "repair", cache], cache_reader_args("score", work)):
        output = refused(run(*args), namespace.id, f"manifests/{fragment.name}", problem, "Delete that file")
        assert len(output.strip().splitlines()) == 1, output
    assert listing(work / "cache") == before


# --- the server --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scorer(trained):
    scorer = load(trained / "checkpoint", device="cpu")
    scorer.warm_up()
    return scorer


def request(url: str, body: object = None, raw: bytes | None = None) -> tuple[int, dict, object]:
    """(status, JSON answer, headers) of a POST of `body` (or `raw` bytes), or of a GET."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    call = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(call, timeout=60) as response:
            return response.status, json.loads(response.read()), response.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}"), e.headers


def items_of(trained: Path, n: int) -> list[dict]:
    pairs = load_pairs(trained / "unseen.jsonl").head(n)
    return [{"context": c, "module": m, "module_text": t} for c, m, t in pairs.select("positive_context", "target_module", "positive_module_text").rows()]


def send_together(url: str, bodies: list[dict]) -> list[tuple[int, dict, object]]:
    start = threading.Barrier(len(bodies))

    def send(body: dict):
        start.wait()
        return request(url, body)

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(send, bodies))


SURROGATES = [
    ("/score", b'{"items": [{"context": "c", "module": "planner", "module_text": "t"}, {"context": "c", "module": "planner", "module_text": "t\\ud800"}]}', "items[1].module_text"),
    ("/score", b'{"items": [{"context": "\\udfff", "module": "planner", "module_text": "t"}]}', "items[0].context"),
    ("/get_reward", b'{"query": ["p\\ud800"], "prompts": ["p"], "labels": ["planner"]}', "query[0]"),
    ("/get_reward", b'{"query": ["pq"], "prompts": ["\\ud800"], "labels": ["planner"]}', "prompts[0]: a lone surrogate"),
]


def test_a_lone_surrogate_or_deep_json_is_refused_and_its_batch_neighbours_are_answered(scorer, trained):
    """A lone surrogate is valid JSON but no text: it cannot be hashed or encoded, so it is refused
    before it can reach (and break) the micro-batch it would share with others."""
    items = items_of(trained, 12)
    with BackgroundServer(create_app(scorer, ServeConfig(max_wait_ms=300))) as server:
        for path, body, where in SURROGATES:
            status, answer, _ = request(f"{server.url}{path}", raw=body)
            assert status == 422 and where in answer["error"] and "lone surrogate" in answer["error"], answer
        status, answer, _ = request(f"{server.url}/score", raw=b'{"items": ' + DEEP.encode() + b"}")
        assert status == 400 and "nested too deeply" in answer["error"]
        bad = {"items": [{**items[0], "module_text": "t\ud800"}]}
        answers = send_together(f"{server.url}/score", [bad] + [{"items": [item]} for item in items[1:]])
    assert answers[0][0] == 422 and [status for status, _, _ in answers[1:]] == [200] * 11
    expected = scorer.score(*zip(*[(i["context"], i["module_text"], i["module"]) for i in items[1:]]))
    np.testing.assert_allclose([answer["rewards"][0] for _, answer, _ in answers[1:]], expected, atol=1e-6)


def test_a_request_whose_scoring_fails_fails_alone_and_its_batch_neighbours_get_their_rewards(scorer, trained):
    items = items_of(trained, 16)
    items[5] = {**items[5], "module_text": "the text this scorer breaks on"}
    app = create_app(scorer, ServeConfig(max_batch=64, max_wait_ms=300))
    real_scorer = app.state.batcher.score_rows

    def breaks_on_one_text(contexts, module_texts, modules):
        if items[5]["module_text"] in module_texts:
            raise RuntimeError("the scorer broke")
        return real_scorer(contexts, module_texts, modules)

    app.state.batcher.score_rows = breaks_on_one_text
    with BackgroundServer(app) as server:
        answers = send_together(f"{server.url}/score", [{"items": [item]} for item in items])
    assert answers[5][0] == 500 and "the scorer broke" in answers[5][1]["error"]
    others = [answer for i, answer in enumerate(answers) if i != 5]
    assert [status for status, _, _ in others] == [200] * 15, others
    expected = scorer.score(*zip(*[(i["context"], i["module_text"], i["module"]) for j, i in enumerate(items) if j != 5]))
    np.testing.assert_allclose([answer["rewards"][0] for _, answer, _ in others], expected, atol=1e-6)


def test_requests_past_max_pending_get_503_with_retry_after_and_the_rest_are_scored(scorer, trained):
    items = items_of(trained, 12)
    app = create_app(scorer, ServeConfig(max_batch=1, max_wait_ms=0, max_pending=3))
    real_scorer = app.state.batcher.score_rows

    def slow(contexts, module_texts, modules):  # the real scorer, slowed so that a queue forms
        time.sleep(0.3)
        return real_scorer(contexts, module_texts, modules)

    app.state.batcher.score_rows = slow
    with BackgroundServer(app) as server:
        answers = send_together(f"{server.url}/score", [{"items": [item]} for item in items])
        assert request(f"{server.url}/score", {"items": items[:1]})[0] == 200  # and the server goes on
    busy = [(answer, headers) for status, answer, headers in answers if status == 503]
    scored = [i for i, (status, _, _) in enumerate(answers) if status == 200]
    assert busy and len(busy) + len(scored) == len(items), [a[0] for a in answers]
    assert all(headers.get("Retry-After") == "1" and "serve.max_pending" in answer["error"] for answer, headers in busy)
    np.testing.assert_allclose([answers[i][1]["rewards"][0] for i in scored], scorer.score(*zip(*[(items[i]["context"], items[i]["module_text"], items[i]["module"]) for i in scored])), atol=1e-6)


@pytest.mark.parametrize(
    "sent",
    [b"", b"POST /score HTTP/1.1\r\nHost: x\r\nContent-", b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"items\": ["],
    ids=["nothing", "half the headers", "half the body"],
)
def test_a_half_sent_request_is_dropped_after_the_read_timeout_and_others_are_served(scorer, trained, sent):
    with BackgroundServer(create_app(scorer, ServeConfig(read_timeout_s=0.5))) as server:
        started = time.monotonic()
        with socket.create_connection((server.host, server.port), timeout=10) as idle:
            idle.sendall(sent)
            assert request(f"{server.url}/health")[0] == 200  # served meanwhile
            answer = idle.recv(1024)  # b"" once the server closes the connection
        assert answer == b"" and 0.4 < time.monotonic() - started < 5, answer
        assert request(f"{server.url}/score", {"items": items_of(trained, 1)})[0] == 200


def test_docs_and_openapi_are_served_only_when_asked_for(scorer):
    for docs, status in ((False, 404), (True, 200)):
        with BackgroundServer(create_app(scorer, ServeConfig(docs=docs))) as server:
            for path in ("/docs", "/openapi.json", "/redoc"):
                try:
                    with urllib.request.urlopen(f"{server.url}{path}", timeout=30) as response:
                        code = response.status
                except urllib.error.HTTPError as e:
                    code = e.code
                assert code == status, (path, docs, code)


def test_a_label_that_looks_like_a_mistyped_module_is_refused_without_module_and_logged_with_it(scorer, caplog):
    query = {"query": ["Task: a\n<plan>b</plan>"], "prompts": ["Task: a\n"], "labels": ["critic"]}
    with BackgroundServer(create_app(scorer, ServeConfig())) as server:
        status, answer, _ = request(f"{server.url}/get_reward", query)
        assert status == 422 and "labels[0]: unknown module 'critic'" in answer["error"], answer
        # a reference answer is no module name: with no other module source it is the usual refusal
        status, answer, _ = request(f"{server.url}/get_reward", {**query, "labels": ["The answer is 42."]})
        assert status == 422 and "no module for query[0]" in answer["error"]
    with BackgroundServer(create_app(scorer, ServeConfig(module="planner"))) as server, caplog.at_level("WARNING", "pipeline.serve"):
        status, answer, _ = request(f"{server.url}/get_reward", {**query, "query": query["query"] * 2, "prompts": query["prompts"] * 2, "labels": ["critic"] * 2})
        assert status == 200 and answer["extra_logs"]["module_id"] == [scorer.modules.index("planner")] * 2
    # (the refusals above are logged too, each as "422 POST /get_reward (...): labels[0]: ...")
    warnings = [r.getMessage() for r in caplog.records if "critic" in r.getMessage() and not r.getMessage().startswith("422 ")]
    assert len(warnings) == 1 and "looks like a module name" in warnings[0] and "--module" in warnings[0], warnings


@pytest.mark.slow  # a subprocess or several trainings: the full suite runs it, the fast lane stays quick
def test_verl_through_a_full_server_waits_as_retry_after_says_and_gets_every_reward(scorer, trained, monkeypatch):
    from pipeline import verl_reward

    items = items_of(trained, 6)
    app = create_app(scorer, ServeConfig(max_batch=1, max_wait_ms=0, max_pending=1))
    real_scorer = app.state.batcher.score_rows

    def slow(contexts, module_texts, modules):
        time.sleep(0.2)
        return real_scorer(contexts, module_texts, modules)

    app.state.batcher.score_rows = slow
    with BackgroundServer(app) as server, ThreadPoolExecutor(len(items)) as pool:
        answers = list(pool.map(lambda item: verl_reward._request(f"{server.url}/score", {"items": [item]}), items))
        refused_some = request(f"{server.url}/health")[1]["refused"] > 0
    assert refused_some  # the queue did fill, and every client still got its reward
    expected = scorer.score(*zip(*[(i["context"], i["module_text"], i["module"]) for i in items]))
    np.testing.assert_allclose([answer["rewards"][0] for answer in answers], expected, atol=1e-6)


# --- checkpoints -------------------------------------------------------------------------------


def checkpoint_naming_encoder(trained: Path, folder: Path, recorded: str) -> Path:
    """A copy of the stage 0 checkpoint whose config.json names the encoder `recorded`."""
    shutil.copytree(trained / "plain", folder)
    config = json.loads((folder / "config.json").read_text())
    config["encoder_fingerprint"]["encoder"] = recorded
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_a_relative_encoder_folder_is_read_from_the_checkpoint_not_the_current_directory_and_reported(trained, minilm_path, tmp_path, monkeypatch):
    checkpoint = checkpoint_naming_encoder(trained, tmp_path / "ckpt", "models/encoder")
    shutil.copytree(minilm_path, checkpoint / "models" / "encoder")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "models" / "encoder").mkdir(parents=True)  # a folder of the same name here is not a model
    (elsewhere / "records.jsonl").write_text(json.dumps(score_record(0)) + "\n")
    monkeypatch.chdir(elsewhere)
    result = run("score", checkpoint, "records.jsonl", "--out", "scored.jsonl", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert f"encoder of {checkpoint}: {(checkpoint / 'models' / 'encoder').resolve()}" in result.output
    assert json.loads((elsewhere / "scored.jsonl").read_text())["scores"]["planner"] == pytest.approx(
        load(trained / "plain", device="cpu").score_trajectory(score_record(0)["context"], score_record(0)["modules"])["planner"], abs=1e-5
    )


def test_a_relative_encoder_folder_the_checkpoint_lacks_is_refused_even_when_the_current_directory_has_it(trained, minilm_path, tmp_path, monkeypatch):
    checkpoint = checkpoint_naming_encoder(trained, tmp_path / "ckpt", "models/encoder")
    shutil.copytree(minilm_path, tmp_path / "models" / "encoder")
    (tmp_path / "records.jsonl").write_text(json.dumps(score_record(0)) + "\n")
    monkeypatch.chdir(tmp_path)
    output = refused(run("score", checkpoint, "records.jsonl", "--out", "scored.jsonl", "--device", "cpu"), "'models/encoder'", "not inside", "--encoder")
    assert output.strip().splitlines()[-1].startswith("Error: ") and not (tmp_path / "scored.jsonl").exists()


def replaced(path: Path, content: bytes) -> None:
    """`path` written anew (unlinked first: the damaged copies share their other files by hard links)."""
    path.unlink()
    path.write_bytes(content)


def written(name: str, content: bytes):
    return lambda folder: replaced(folder / name, content)


def edited_config(edit):
    """A damage of config.json: `edit` changes the parsed config in place."""

    def write(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        edit(config)
        replaced(folder / "config.json", json.dumps(config).encode())

    return write


def edited_weights(edit):
    """A damage of heads.safetensors: `edit` changes the dict of tensors in place."""
    from safetensors.torch import load_file, save

    def write(folder: Path) -> None:
        tensors = load_file(folder / "heads.safetensors")
        edit(tensors)
        replaced(folder / "heads.safetensors", save(tensors))

    return write


def cut_in_half(name: str):
    return lambda folder: replaced(folder / name, (folder / name).read_bytes()[: (folder / name).stat().st_size // 2])


def without_module(module: str, prefix: str = ""):
    return edited_weights(lambda t: [t.pop(k) for k in list(t) if k.startswith(f"{prefix}heads.{module}.")])


def as_ensemble(folder: Path) -> None:
    """The stage 0 checkpoint in `folder` made a two-member ensemble (its heads twice), saved as
    `pipeline train-heads --ensemble 2` saves one."""
    from heads.checkpoint import save_checkpoint
    from heads.ensemble import RewardEnsemble
    from heads.model import MultiModuleRewardModel

    model, record = MultiModuleRewardModel.load(folder)
    save_checkpoint(folder, RewardEnsemble([model, copy.deepcopy(model)]), dataclasses.replace(record, ensemble=2))


# case -> (ensemble?, damage, the file named ("": the folder), the problem named)
CHECKPOINT_DAMAGE = {
    "config not JSON": (False, written("config.json", b'{"dimension": 384, "modules'), "config.json", "not valid JSON"),
    "config empty": (False, written("config.json", b""), "config.json", "not valid JSON"),
    "config binary": (False, written("config.json", bytes(range(256))), "config.json", "not valid JSON"),
    "config a list": (False, written("config.json", b"[384]"), "config.json", "holds a JSON list, not an object"),
    "no modules": (False, edited_config(lambda c: c.pop("modules")), "config.json", "'modules' is missing"),
    "no dimension": (False, edited_config(lambda c: c.pop("dimension")), "config.json", "'dimension' is missing"),
    "no encoder fingerprint": (False, edited_config(lambda c: c.pop("encoder_fingerprint")), "config.json", "'encoder_fingerprint' is missing"),
    "no view windows": (False, edited_config(lambda c: c.pop("window_words")), "config.json", "without 'window_words'"),
    "dimension a string": (False, edited_config(lambda c: c.update(dimension="384")), "config.json", "'dimension' should be a positive integer, not \"384\""),
    "modules a string": (False, edited_config(lambda c: c.update(modules="planner")), "config.json", "'modules' should be a non-empty list"),
    "unknown head": (False, edited_config(lambda c: c.update(head="wide")), "config.json", "'head' should be"),
    "unknown view": (False, edited_config(lambda c: c.update(view="sideways")), "config.json", "'view' should be one of"),
    "fingerprint lacks a key": (False, edited_config(lambda c: c["encoder_fingerprint"].pop("max_context_tokens")), "config.json", "'encoder_fingerprint.max_context_tokens' is missing"),
    "normalization not numbers": (False, edited_config(lambda c: c.update(normalization={"planner": {"mean": "0", "std": 1}})), "config.json", "'normalization' should be"),
    "dimension unlike the weights": (False, edited_config(lambda c: c.update(dimension=128) or c["encoder_fingerprint"].update(dimension=128)), "heads.safetensors", "heads.reflection.mlp.0.weight is [768, 1152], but config.json's heads (dimension 128, head '2d,d') need [256, 384]"),
    "a module the weights lack": (False, edited_config(lambda c: c["modules"].append("critic")), "heads.safetensors", "no weights for module critic"),
    "weights truncated": (False, cut_in_half("heads.safetensors"), "heads.safetensors", "not a readable safetensors file"),
    "weights not safetensors": (False, written("heads.safetensors", b"just some text"), "heads.safetensors", "not a readable safetensors file"),
    "weights of a module missing": (False, without_module("planner"), "heads.safetensors", "no weights for module planner"),
    "weights renamed": (False, edited_weights(lambda t: t.update({k.replace("mlp", "layers"): t.pop(k) for k in list(t)})), "heads.safetensors", "no weights for module reflection"),
    "weights of another shape": (False, edited_weights(lambda t: t.update({"heads.memory.mlp.0.bias": torch.zeros(3)})), "heads.safetensors", "heads.memory.mlp.0.bias is [3]"),
    "weights of a module not in the config": (False, edited_config(lambda c: c["modules"].remove("memory")), "heads.safetensors", "holds weights for module memory, which config.json has no head for"),
    "ensemble of more members than saved": (True, edited_config(lambda c: c.update(ensemble=3)), "heads.safetensors", "no weights for member 2's module reflection"),
    "ensemble member lacks a module": (True, without_module("executor", "members.1."), "heads.safetensors", "no weights for member 1's module executor"),
    "ensemble size not a number": (True, edited_config(lambda c: c.update(ensemble="2")), "config.json", "'ensemble' should be a positive integer"),
    # the blend's parts (heads/blend.py Blended.load), read by the verbs that score; "" names the folder
    "blend vocabulary not JSON": (False, written("lexical.json", b'{"vectorizer": '), "", "TF-IDF part, but its lexical.json and lexical.safetensors could not be read"),
    "blend TF-IDF weights truncated": (False, cut_in_half("lexical.safetensors"), "", "TF-IDF part, but its lexical.json and lexical.safetensors could not be read"),
    "blend linear weights truncated": (False, cut_in_half("linear.safetensors"), "", "linear part, but its linear.safetensors could not be read"),
    "blend record damaged": (False, edited_config(lambda c: c["blend"].pop("heads")), "config.json", "its blend is not what train-heads writes"),
}
STARTS_FROM_ONE_MODEL = ("train-heads --resume", "finetune --init")  # they read neither an ensemble nor the blend's parts


@pytest.fixture(scope="module")
def damaged_checkpoints(trained, tmp_path_factory) -> Path:
    """One folder per CHECKPOINT_DAMAGE case: a copy of the stage 0 checkpoint (as an ensemble of
    two, for the ensemble cases) with that damage. Files a case leaves alone are hard links."""
    root = tmp_path_factory.mktemp("damaged-checkpoints")
    (root / "records.jsonl").write_text(json.dumps(score_record(0)) + "\n")
    ensemble = root / "ensemble"
    shutil.copytree(trained / "plain", ensemble)
    as_ensemble(ensemble)
    for case, (of_ensemble, damage, _, _) in CHECKPOINT_DAMAGE.items():
        source, folder = ensemble if of_ensemble else trained / "plain", root / case
        folder.mkdir()
        for file in source.iterdir():
            os.link(file, folder / file.name)
        damage(folder)
    return root


def checkpoint_reader_args(verb: str, checkpoint: Path, trained: Path, out: Path) -> list:
    records = checkpoint.parent / "records.jsonl"
    data = [trained / "train.jsonl", "--val", trained / "val.jsonl"]
    return {
        "evaluate": ["evaluate", checkpoint, trained / "val.jsonl", "--cache", trained / "cache", "--out", out, "--device", "cpu"],
        "score": ["score", checkpoint, records, "--out", out, "--device", "cpu"],
        # --module of no checkpoint: a server that did start would stop at once, not serve forever
        "serve": ["serve", checkpoint, "--device", "cpu", "--module", "no-such-module"],
        "train-heads --resume": ["train-heads", *data, "--cache", trained / "cache", "--resume", checkpoint, "--out", out, "--device", "cpu"],
        "finetune --init": ["finetune", *data, "--init", checkpoint, "--out", out, "--max-steps", "1", "--device", "cpu"],
    }[verb]


CHECKPOINT_READERS = ["evaluate", "score", "serve", "train-heads --resume", "finetune --init", "rewards.load"]


@pytest.mark.parametrize(
    "case, verb", [(case, verb) for case in CHECKPOINT_DAMAGE for verb in CHECKPOINT_READERS if not (case.startswith("blend") and verb in STARTS_FROM_ONE_MODEL)]
)
def test_a_damaged_checkpoint_is_one_line_naming_the_file_and_what_is_wrong(damaged_checkpoints, trained, tmp_path, case, verb):
    of_ensemble, _, file, problem = CHECKPOINT_DAMAGE[case]
    checkpoint = damaged_checkpoints / case
    if of_ensemble and verb in STARTS_FROM_ONE_MODEL and file == "heads.safetensors":
        file, problem = "", "holds an ensemble of"  # the folder is refused before its weights are read
    if verb == "rewards.load":
        with pytest.raises(CheckpointError) as error:
            load(checkpoint, device="cpu")
        message = str(error.value)
    else:
        result = run(*checkpoint_reader_args(verb, checkpoint, trained, tmp_path / "out"))
        refused(result)
        assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == "", result.output
        message = result.stderr
    assert "\n" not in message.strip() and problem in message, message
    assert str(checkpoint / file) in message, message
    assert not (tmp_path / "out").exists()


def test_a_normalisation_of_non_finite_rewards_is_unusable_not_damage(trained, tmp_path):
    """`pipeline evaluate` writes a NaN mean or std as null: such a checkpoint scores raw rewards,
    normalises the other modules, and refuses to normalise that module's rows, naming it."""
    shutil.copytree(trained / "checkpoint", tmp_path / "ckpt")
    stored = json.loads((tmp_path / "ckpt" / "normalization.json").read_text())
    stored["planner"] = {"mean": None, "std": None, "n_responses": 10}
    (tmp_path / "ckpt" / "normalization.json").write_text(json.dumps(stored))
    vectors = np.random.default_rng(0).standard_normal((2, 3, 384)).astype(np.float32)
    texts = ["ctx"] * 3, ["[Round 1]\n<plan>go</plan>"] * 3  # a blend's TF-IDF part reads them
    raw = [load(folder, device="cpu").score_vectors(*vectors, ["planner"] * 3, *texts).raw for folder in (tmp_path / "ckpt", trained / "checkpoint")]
    np.testing.assert_array_equal(*raw)
    scorer = load(tmp_path / "ckpt", device="cpu", normalize=True)
    assert "planner" not in scorer.scorable_modules and "executor" in scorer.scorable_modules
    assert np.isfinite(scorer.score(["ctx"], ["[Round 1]\n<action>ls</action>"], ["executor"])).all()
    with pytest.raises(UntrainedModule, match="module 'planner' has no normalisation"):
        scorer.score(["ctx"], ["[Round 1]\n<plan>go</plan>"], ["planner"])

# --- kill -9 of every verb that writes ---------------------------------------------------------

FIXTURES = Path(__file__).parent / "fixtures"
SMALL = """\
model: {encoder: minilm, max_context_tokens: 32, max_module_tokens: 32, batch_size: 8}
cache: {shard_size: 16}
training: {device: cpu}
stage_0: {epochs: 3, batch_size: 16}
stage_1: {epochs: 1, batch_size: 4, save_every_steps: 1}
evaluation: {bootstrap_samples: 50, logistic_baseline: false}
"""


def prepare(work: Path, trained: Path, verb: str) -> Path:
    """Tiny inputs for `verb`: the checkpoint's pairs, cache and stage 0 heads, runs and records."""
    for name in ("plain", "cache"):
        shutil.copytree(trained / name, work / name)
    for name in ("train.jsonl", "val.jsonl"):
        shutil.copy(trained / name, work / name)
    (work / "small.yaml").write_text(SMALL)
    (work / "runs.jsonl").write_text("".join(json.dumps({**run_record(i), "task": f"t{i // 4}"}) + "\n" for i in range(40)))
    rows = load_pairs(work / "val.jsonl").select("positive_context", "target_module", "positive_module_text").rows()
    (work / "records.jsonl").write_text("".join(json.dumps({"context": c, "modules": {m: t}}) + "\n" for c, m, t in rows))
    if verb == "cache repair":  # a lost shard and a key stored twice: something to repair
        namespace = EmbeddingCache(work / "cache").select()
        keys = pq.read_table(namespace.root / namespace.shards[1].file).column("key").to_pylist()[:5]
        with namespace.writer():
            namespace.write_shard(keys, namespace.fetch(keys))
        (namespace.root / namespace.shards[0].file).write_bytes(b"PAR1 and then nothing")
    return work


def writer_args(verb: str, work: Path) -> list:
    small = ["--config", work / "small.yaml"]
    return {
        "synth": ["synth", "--pairs", "400", "--out", work / "out.json"],
        "split": ["split", work / "train.jsonl", "--out", work / "splits"],
        "pairs": ["pairs", work / "runs.jsonl", "--out", work / "mined.json"],
        "import autogpt": ["import", "autogpt", *sorted((FIXTURES / "autogpt").glob("*.report.md")), "--out", work / "imported.jsonl"],
        "import intercode": ["import", "intercode", *sorted((FIXTURES / "intercode").glob("*.json")), "--out", work / "imported.jsonl"],
        "import chat": ["import", "chat", *sorted((FIXTURES / "chat").glob("openai_runs*")), "--out", work / "imported.jsonl"],
        "embed": ["embed", work / "val.jsonl", "--cache", work / "new-cache", *small],
        "train-heads": ["train-heads", work / "train.jsonl", "--val", work / "val.jsonl", "--cache", work / "cache", "--out", work / "ckpt", *small],
        "finetune": ["finetune", work / "train.jsonl", "--val", work / "val.jsonl", "--init", work / "plain", "--out", work / "ft", "--max-steps", "2", *small],
        "evaluate": ["evaluate", work / "plain", work / "val.jsonl", "--cache", work / "cache", "--out", work / "report", *small],
        "score": ["score", work / "plain", work / "records.jsonl", "--cache", work / "cache", "--out", work / "scored.jsonl", "--device", "cpu"],
        "cache gc": ["cache", "gc", work / "cache", work / "val.jsonl"],
        "cache repair": ["cache", "repair", work / "cache"],
    }[verb]


def check_outputs(verb: str, work: Path, finished: bool) -> None:
    """Every output of `verb` in `work` is complete, or (unless `finished`) absent; caches verify."""
    from data.runs import load_runs
    from heads.model import MultiModuleRewardModel

    def present(path: Path) -> bool:
        assert finished is False or path.exists(), f"{path} missing after a finished run"
        return path.exists()

    if verb == "synth" and present(work / "out.json"):
        assert load_pairs(work / "out.json").height == 400
    elif verb == "split":
        for name in ("train.jsonl", "val.jsonl", "test.jsonl"):
            if present(work / "splits" / name):
                load_pairs(work / "splits" / name)
    elif verb == "pairs" and present(work / "mined.json"):
        assert load_pairs(work / "mined.json").height > 0
    elif verb.startswith("import") and present(work / "imported.jsonl"):
        assert load_runs([work / "imported.jsonl"])
    elif verb in ("train-heads", "finetune"):
        out = work / ("ckpt" if verb == "train-heads" else "ft")
        unfinished = verb == "finetune" and (out / "resume").exists()
        if unfinished:  # a stage 1 run saves as it goes: what it left must be resumable
            assert not finished and json.loads((out / "resume" / "progress.json").read_text())
        elif present(out) and (finished or any(not is_leftover(p.name) for p in out.iterdir())):  # killed in its first save: hidden leftovers only
            MultiModuleRewardModel.load(out)
            [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    elif verb == "evaluate":
        MultiModuleRewardModel.load(work / "plain")  # evaluate writes normalization.json beside it, never its config.json
        if present(work / "report"):
            assert json.loads((work / "report" / "report.json").read_text())["n_pairs"] > 0 and (work / "report" / "report.md").is_file()
    elif verb == "score" and present(work / "scored.jsonl"):
        lines = (work / "scored.jsonl").read_text().splitlines()
        assert len(lines) == len((work / "records.jsonl").read_text().splitlines()) and all(json.loads(line)["scores"] for line in lines)
    elif verb in ("embed", "cache gc", "cache repair"):
        cache = work / ("new-cache" if verb == "embed" else "cache")
        for namespace in EmbeddingCache(cache).namespaces():  # every manifest reads back
            if finished or verb != "cache repair":  # before repair finishes, its shard is still lost
                assert namespace.verify() == [], namespace.verify()


def pipeline_command(args: list) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", *(str(a) for a in args)]


PIPELINE_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
WRITERS = ["synth", "split", "pairs", "import autogpt", "import intercode", "import chat", "embed", "train-heads", "finetune", "evaluate", "score", "cache gc", "cache repair"]


@pytest.mark.slow
@pytest.mark.parametrize("verb", WRITERS)
def test_kill_9_at_a_random_moment_leaves_outputs_absent_or_complete_and_a_rerun_finishes(trained, tmp_path, verb):
    """`pipeline demo` is these verbs in a row, each writing as it does alone."""
    seed = int(os.environ.get("FAULT_SEED", time.time_ns() % 2**32))
    reference = prepare(tmp_path / "reference", trained, verb)
    started = time.monotonic()
    clean = subprocess.run(pipeline_command(writer_args(verb, reference)), env=PIPELINE_ENV, capture_output=True, text=True, timeout=300)
    took = time.monotonic() - started
    assert clean.returncode == 0, clean.stderr[-2000:]
    check_outputs(verb, reference, finished=True)

    work = prepare(tmp_path / "killed", trained, verb)
    before = {p.name for p in work.iterdir()}
    moment = random.Random(seed).uniform(0.1, 0.95) * took
    process = subprocess.Popen(pipeline_command(writer_args(verb, work)), env=PIPELINE_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        process.wait(timeout=moment)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
    where = f"killed at {moment:.2f} s of {took:.2f} s (FAULT_SEED={seed})"
    left = {p.name for p in work.iterdir() if not p.name.startswith(".")} - before
    outputs = {Path(str(a)).relative_to(work).parts[0] for a in writer_args(verb, work) if str(a).startswith(str(work))}
    assert left <= outputs | {f"{Path(name).stem}.config.yaml" for name in outputs}, (where, left)  # files get their config beside them
    check_outputs(verb, work, finished=process.returncode == 0)

    again = writer_args(verb, work) + (["--resume"] if verb == "finetune" and (work / "ft" / "resume").exists() else [])
    rerun = subprocess.run(pipeline_command(again), env=PIPELINE_ENV, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, (where, rerun.stderr[-2000:])
    check_outputs(verb, work, finished=True)



def test_a_folder_holding_only_a_killed_writers_leftovers_is_written_over(tmp_path):
    """A run killed in its first save leaves its --out folder with a hidden `.NAME.*.tmp` only: the
    rerun writes there instead of refusing the folder as someone else's."""
    (tmp_path / "ft" / ".resume.x1y2.tmp").mkdir(parents=True)
    check_output_folder(tmp_path / "ft", ("heads.safetensors", "config.json"), "checkpoint", overwrite=False)
    (tmp_path / "ft" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="notes.txt"):
        check_output_folder(tmp_path / "ft", ("heads.safetensors", "config.json"), "checkpoint", overwrite=False)


# --- a full, read-only, forbidden or busy disk (issue 6) ----------------------------------------

KEPT = "nothing half-written is left: outputs are written to a temporary file and renamed; the cache stays valid (what was embedded before is kept) and a rerun continues"


def fail_writes(monkeypatch, verb: str, work: Path, code: int = errno.ENOSPC) -> None:
    """Make the lowest write `verb` reaches fail as a disk would, after it has half-written its
    file: pyarrow's OSError with the OS's words and no errno (embed, cache gc), safetensors'
    SafetensorError wrapping the OS error (train-heads), or os.replace's OSError with errno and
    filename (evaluate, score)."""
    import pyarrow.parquet
    import safetensors

    import heads.checkpoint

    words = os.strerror(code)
    if verb in ("embed", "cache gc"):
        def write_table(table, where, **kwargs):
            Path(where).write_bytes(b"PAR1 half")
            raise OSError(f"Error writing bytes to file. Detail: [errno {code}] {words}")

        monkeypatch.setattr(pyarrow.parquet, "write_table", write_table)
    elif verb == "train-heads":
        def save_file(tensors, filename, metadata=None):
            Path(filename).write_bytes(b"half")
            raise safetensors.SafetensorError(f'Error while serializing: IoError(Os {{ code: {code}, kind: StorageFull, message: "{words}" }})')

        monkeypatch.setattr(heads.checkpoint, "save_file", save_file)
    else:
        replace = os.replace

        def failing_replace(src, dst, **kwargs):
            if str(dst).startswith(str(work)):
                raise OSError(code, words, str(src))
            return replace(src, dst, **kwargs)

        monkeypatch.setattr(os, "replace", failing_replace)


def assert_nothing_half_written(verb: str, work: Path) -> None:
    leftovers = [p for p in work.rglob("*") if is_leftover(p.name)]
    assert leftovers == [], leftovers
    outputs = {"train-heads": work / "ckpt", "evaluate": work / "report", "score": work / "scored.jsonl"}
    if verb in outputs:
        assert not outputs[verb].exists()
    else:
        for namespace in EmbeddingCache(work / ("new-cache" if verb == "embed" else "cache")).namespaces():
            assert namespace.verify() == [], namespace.verify()


@pytest.mark.parametrize("verb", [*(pytest.param(v, marks=pytest.mark.slow) for v in ("embed", "train-heads", "evaluate")), "score", "cache gc"])  # encoding, training: the slow lane
def test_a_full_disk_is_one_line_saying_what_failed_what_was_kept_and_what_to_do(trained, tmp_path, monkeypatch, verb):
    work = prepare(tmp_path, trained, verb)
    fail_writes(monkeypatch, verb, work)
    output = refused(run(*writer_args(verb, work)), "No space left on device", KEPT, "free space on that disk")
    errors = [line for line in output.splitlines() if "Error" in line]  # progress bars aside: one line
    assert len(errors) == 1 and "Error: No space left on device" in errors[0], output
    if verb in ("evaluate", "score"):  # an OSError with a filename: the output it was for is named
        assert f"(writing {work}" in output, output
    assert_nothing_half_written(verb, work)
    monkeypatch.undo()
    assert run(*writer_args(verb, work)).exit_code == 0  # and a rerun on a disk with room finishes


@pytest.mark.parametrize(
    "code, words, remedy",
    [
        (errno.EACCES, "Permission denied", "fix the permissions of that path"),
        (errno.EROFS, "Read-only file system", "choose another --out or --cache on a writable file system"),
        (errno.EBUSY, "Device or resource busy", "wait until no other program holds that path"),
        (errno.EDQUOT, "Disk quota exceeded", "free space within your quota"),
    ],
)
@pytest.mark.parametrize("verb", ["score", pytest.param("train-heads", marks=pytest.mark.slow)])
def test_a_read_only_forbidden_or_busy_disk_is_one_line_with_its_remedy(trained, tmp_path, monkeypatch, verb, code, words, remedy):
    work = prepare(tmp_path, trained, verb)
    fail_writes(monkeypatch, verb, work, code)
    refused(run(*writer_args(verb, work)), f"Error: {words}", KEPT, remedy)
    assert_nothing_half_written(verb, work)


def test_a_disk_error_raised_while_handling_another_is_still_found():
    """evaluate's full disk came as three chained tracebacks: the OSError may be any link."""
    from pipeline.cli import disk_error

    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/data/out/.report.json.a1b2c3d4.tmp")
        except OSError:
            raise RuntimeError("while cleaning up")
    except RuntimeError as e:
        message = disk_error(e)
    assert message.startswith("No space left on device (writing /data/out/report.json): " + KEPT)
    assert disk_error(ValueError("a bug")) is None and disk_error(OSError(errno.ENOENT, "No such file or directory")) is None


# --- one writer per output, no scratch in an input, refusals before the work (issue defects 4, 5, 7) ---


def train_heads_args(trained: Path, out: Path, *extra) -> list:
    return ["train-heads", trained / "train.jsonl", "--cache", trained / "cache", "--encoder", "minilm", "--epochs", "1", "--device", "cpu", "--out", out, *extra]


def test_a_second_writer_of_a_checkpoint_is_refused_at_once_naming_the_folder_and_the_other_run(trained, tmp_path):
    """Two train-heads into one --out both succeeded and one checkpoint vanished: now the second
    (here: any run while this process holds the folder's lock, as a running train-heads does) is
    refused in one line naming the folder and the pid holding it, and writes nothing."""
    from data.guards import output_lock

    out = tmp_path / "ckpt"
    with output_lock(out, "train-heads"):
        started = time.monotonic()
        output = refused(run(*train_heads_args(trained, out)), str(out), "another run", f"pid {os.getpid()}")
        assert len(output.strip().splitlines()) == 1 and time.monotonic() - started < 10
        refused(run("finetune", trained / "train.jsonl", "--init", trained / "plain", "--out", out, "--max-steps", "1", "--device", "cpu"), str(out), "another run")
        copy_ = tmp_path / "plain"
        shutil.copytree(trained / "plain", copy_)
        with output_lock(copy_, "train-heads"):  # evaluate stores the normalisation into the checkpoint it reads
            refused(run("evaluate", copy_, trained / "val.jsonl", "--cache", trained / "cache", "--out", tmp_path / "report", "--device", "cpu"), str(copy_), "another run")
        assert not out.exists() and not (tmp_path / "report").exists()
    assert run(*train_heads_args(trained, out)).exit_code == 0  # the lock goes with its holder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "plain"]  # no lock file, no scratch left beside it


@pytest.mark.slow  # two training subprocesses
def test_two_train_heads_processes_into_one_out_one_is_refused(trained, tmp_path):
    out = tmp_path / "ckpt"
    first = subprocess.Popen(pipeline_command(train_heads_args(trained, out, "--epochs", "30")), env=PIPELINE_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lock = tmp_path / ".ckpt.lock"
        deadline = time.monotonic() + 120
        while not (lock.exists() and lock.read_text()) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        second = subprocess.run(pipeline_command(train_heads_args(trained, out)), env=PIPELINE_ENV, capture_output=True, text=True, timeout=300)
    finally:
        stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr[-2000:]
    assert second.returncode == 1 and f"pid {first.pid}" in second.stderr + second.stdout and "Traceback" not in second.stderr, second.stderr
    assert "checkpoint in" not in second.stdout


@pytest.mark.slow  # trains twice
def test_train_heads_writes_nothing_into_the_cache_it_reads_and_sweeps_a_killed_runs_scratch(trained, tmp_path, monkeypatch):
    """Its memory-mapped piece features went to CACHE/.pair-features-*, failing on a read-only or
    shared cache and staying there after a kill -9. (Root passes any permission check, so the cache
    is compared entry by entry instead.) Now they go beside --out, named with host and pid, and a
    dead run's are removed by the next run."""
    from data.guards import _host

    cache = tmp_path / "cache"
    shutil.copytree(trained / "cache", cache)
    before = sorted(str(p.relative_to(cache)) for p in cache.rglob("*"))
    (tmp_path / "mmap.yaml").write_text("stage_0: {memory_map_above_mb: 0}\n")  # every feature matrix on disk
    killed = tmp_path / "out" / f".ckpt.pair-features-{_host()}-999999999-abc.tmp"  # a pid above any pid_max: dead
    (killed / "pieces").mkdir(parents=True)
    import pipeline.train_heads

    scratches, read_features = [], pipeline.train_heads.read_features
    monkeypatch.setattr(pipeline.train_heads, "read_features", lambda *a: (scratches.append(a[-1]), read_features(*a))[1])
    args = ["train-heads", trained / "train.jsonl", "--cache", cache, "--encoder", "minilm", "--epochs", "1", "--device", "cpu", "--config", tmp_path / "mmap.yaml"]
    assert run(*args, "--out", tmp_path / "out" / "ckpt").exit_code == 0
    assert scratches and not any(cache.resolve() in Path(p).resolve().parents for p in scratches), scratches  # a kill -9 would leave them there
    assert sorted(str(p.relative_to(cache)) for p in cache.rglob("*")) == before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ckpt"]


def test_sigterm_inside_terminate_as_exit_raises_system_exit_so_clean_up_runs(tmp_path):
    from data.guards import scratch_folder, terminate_as_exit

    with pytest.raises(SystemExit) as stopped:
        with terminate_as_exit(), scratch_folder(tmp_path / "ckpt", "pair-features"):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises before this ends
    assert stopped.value.code == 128 + signal.SIGTERM and list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the process's own handling is back


@pytest.mark.slow  # a training subprocess
def test_train_heads_terminated_mid_training_leaves_no_scratch_or_lock(trained, tmp_path):
    (tmp_path / "mmap.yaml").write_text("stage_0: {memory_map_above_mb: 0, patience: 1000}\n")  # features on disk; no early stop
    out = tmp_path / "out" / "ckpt"
    args = train_heads_args(trained, out, "--epochs", "100000", "--config", tmp_path / "mmap.yaml")
    process = subprocess.Popen(pipeline_command(args), env=PIPELINE_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list((tmp_path / "out").glob(".ckpt.pair-features-*/pieces/*")) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process.poll() is None and list((tmp_path / "out").glob(".ckpt.pair-features-*")), "the run ended before it could be terminated"
        time.sleep(1)  # into training
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []  # no scratch, lock or checkpoint


def test_cache_info_lists_and_cache_gc_removes_pair_features_an_earlier_version_left_in_a_cache(work):
    old = work / "cache" / ".pair-features-x1y2"
    (old / "pieces").mkdir(parents=True)
    (old / "pieces" / "matrix.npy").write_bytes(b"\0" * 64)
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert str(old) in run("cache", "info", work / "cache").output
    result = run("cache", "gc", work / "cache", work / "train.jsonl", work / "val.jsonl", work / "unseen.jsonl")
    assert result.exit_code == 0 and f"removed {old}" in result.output, result.output
    assert not old.exists()


def no_work(monkeypatch) -> None:
    """Fail the test if a verb gets as far as reading its pairs or loading an encoder."""
    def started(*args, **kwargs):
        raise AssertionError("the work started before the output was checked")

    import pipeline.embed, pipeline.evaluate, pipeline.finetune, pipeline.train_heads

    for module, name in ((pipeline.train_heads, "load_training_and_validation"), (pipeline.finetune, "load_training_and_validation"),
                         (pipeline.evaluate, "load"), (pipeline.embed, "load_pairs")):  # fmt: skip
        monkeypatch.setattr(module, name, started)


OUT_FAULTS = ["parent is a file", "current directory", "ancestor of the current directory", "holds an input"]


def faulty_out(fault: str, tmp_path: Path, monkeypatch) -> Path:
    (tmp_path / "afile").write_text("not a folder")
    here = tmp_path / "here" / "deeper"
    here.mkdir(parents=True)
    monkeypatch.chdir(here)
    return {
        "parent is a file": tmp_path / "afile" / "ck",
        "current directory": Path("."), "ancestor of the current directory": tmp_path / "here", "holds an input": tmp_path,
    }[fault]  # fmt: skip


def verb_args(verb: str, trained: Path, inputs: Path, out: Path) -> list:
    return {
        "train-heads": ["train-heads", inputs / "train.jsonl", "--cache", trained / "cache", "--encoder", "minilm", "--device", "cpu", "--out", out],
        "finetune": ["finetune", inputs / "train.jsonl", "--init", trained / "plain", "--out", out, "--max-steps", "1", "--device", "cpu"],
        "evaluate": ["evaluate", trained / "plain", inputs / "val.jsonl", "--cache", trained / "cache", "--no-store-normalization", "--device", "cpu", "--out", out],
        "embed": ["embed", inputs / "val.jsonl", "--cache", out, "--encoder", "minilm"],
        "demo": ["demo", "--out", out],
        "fit": ["fit", inputs / "train.jsonl", "--out", out],
    }[verb]


@pytest.mark.parametrize("verb", ["train-heads", "finetune", "evaluate", "embed", "demo", "fit"])
@pytest.mark.parametrize("fault", OUT_FAULTS)
def test_an_output_that_cannot_be_written_is_refused_before_the_work_in_one_line_leaving_nothing(trained, tmp_path, monkeypatch, verb, fault):
    """--out afile/ck (FileExistsError after 16 s of training), --out . --overwrite (EBUSY and an
    empty ..XXXX.old/ left behind): now one line before anything is read or trained, nothing made."""
    if verb in ("embed", "demo", "fit") and fault == "holds an input":
        pytest.skip("these write into their folder, never replace it: an input inside it is theirs to read")
    if verb == "embed" and fault in ("current directory", "ancestor of the current directory"):
        pytest.skip("embed adds to its cache, never replaces it: a cache in the current directory is fine")
    inputs = tmp_path / "here" / "deeper"
    out = faulty_out(fault, tmp_path, monkeypatch)
    for name in ("train.jsonl", "val.jsonl"):
        shutil.copy(trained / name, inputs / name)
    no_work(monkeypatch)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    flag = "--cache" if verb == "embed" else "--out"
    output = refused(run(*verb_args(verb, trained, inputs, out), *(["--overwrite"] if verb != "embed" else [])), flag)
    assert len(output.strip().splitlines()) == 1, output
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before  # no lock, scratch, probe or ..XXXX.old left


def test_an_embed_that_would_fill_the_disk_is_refused_before_encoding(trained, tmp_path, monkeypatch):
    """ENOSPC mid-run is simulated: the free space reported is 1 kB."""
    import data.guards

    monkeypatch.setattr(data.guards.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    output = refused(run("embed", trained / "val.jsonl", "--cache", tmp_path / "cache", "--encoder", "minilm", "--device", "cpu"), "--cache", "MB free", "nothing was written")
    assert len([line for line in output.strip().splitlines() if "Loading weights" not in line]) == 1  # the encoder loads first: its dimension sizes the estimate
    assert not any(p.suffix == ".parquet" for p in tmp_path.rglob("*"))


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into a mode 555 folder: the file-in-the-way cases above test the same check")
def test_an_unwritable_out_parent_is_refused_before_training(trained, tmp_path, monkeypatch):
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        no_work(monkeypatch)
        output = refused(run(*train_heads_args(trained, locked / "ck")), str(locked), "no permission")
        assert len(output.strip().splitlines()) == 1
    finally:
        locked.chmod(0o755)
# --- output files, inputs given twice, modes (issue: files overwritten, read twice, umask) ---------


def records_file(trained: Path, folder: Path) -> Path:
    """Score records of the checkpoint's validation texts (all in its cache)."""
    rows = load_pairs(trained / "val.jsonl").select("positive_context", "target_module", "positive_module_text").rows()[:4]
    (folder / "records.jsonl").write_text("".join(json.dumps({"context": c, "modules": {m: t}}) + "\n" for c, m, t in rows))
    return folder / "records.jsonl"


def file_writer_args(verb: str, trained: Path, folder: Path) -> list:
    (folder / "runs.jsonl").write_text("".join(json.dumps({**run_record(i), "task": f"t{i // 4}"}) + "\n" for i in range(16)))
    return {
        "synth": ["synth", "--pairs", "8"],
        "pairs": ["pairs", folder / "runs.jsonl"],
        "import autogpt": ["import", "autogpt", *sorted((FIXTURES / "autogpt").glob("*.report.md"))],
        "score": ["score", trained / "plain", records_file(trained, folder), "--cache", trained / "cache", "--device", "cpu"],
    }[verb]


@pytest.mark.parametrize("verb", ["synth", "pairs", "import autogpt", "score"])
def test_an_output_file_not_of_ours_is_refused_untouched_and_replaced_only_with_overwrite(trained, tmp_path, verb):
    args = file_writer_args(verb, trained, tmp_path)
    out = tmp_path / "notes.txt"
    out.write_text("mine")
    output = refused(run(*args, "--out", out), str(out), "--overwrite")
    assert len(output.strip().splitlines()) == 1 and out.read_text() == "mine"
    assert not (tmp_path / "notes.config.yaml").exists()
    if verb != "import autogpt":  # a side config of the user's, beside an output of ours
        fresh = tmp_path / "fresh.jsonl"
        (tmp_path / "fresh.config.yaml").write_text("my: notes\n")
        refused(run(*args, "--out", fresh), "fresh.config.yaml", "--overwrite")
        assert not fresh.exists() and (tmp_path / "fresh.config.yaml").read_text() == "my: notes\n"
    result = run(*args, "--out", out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert out.read_text() != "mine"
    again = run(*args, "--out", out)  # our own output is replaced without --overwrite
    assert again.exit_code == 0, again.output


def test_synth_does_not_replace_pairs_it_did_not_make(tmp_path):
    mine = tmp_path / "mine.jsonl"
    mine.write_text("".join(json.dumps(pair_record(i)) + "\n" for i in range(3)))
    before = mine.read_bytes()
    refused(run("synth", "--pairs", "2", "--out", mine), str(mine), "--overwrite")
    assert mine.read_bytes() == before


@pytest.mark.parametrize("how", ["same path", "symlink"])
@pytest.mark.parametrize("verb", ["pairs", "import autogpt", "score"])
def test_an_output_that_is_one_of_the_inputs_is_refused_even_with_overwrite(trained, tmp_path, verb, how):
    args = file_writer_args(verb, trained, tmp_path)
    source = Path(str(args[-1] if verb != "score" else args[2]))
    out = source
    if how == "symlink":
        out = tmp_path / "link.out"
        out.symlink_to(source)
    before = source.read_bytes()
    output = refused(run(*args, "--out", out, "--overwrite"), str(out), "is the input")
    assert len(output.strip().splitlines()) == 1 and source.read_bytes() == before


def test_a_side_config_that_is_the_config_given_is_refused(tmp_path):
    (tmp_path / "out.config.yaml").write_text("data: {split_seed: 3}\n")
    refused(run("synth", "--pairs", "2", "--out", tmp_path / "out.json", "--config", tmp_path / "out.config.yaml", "--overwrite"), "is the input")


def test_a_file_given_twice_is_read_once_and_said_once(tmp_path):
    shutil.copy(PAIRS, tmp_path / "pairs.json")
    (tmp_path / "link.json").symlink_to(tmp_path / "pairs.json")
    n = load_pairs(tmp_path / "pairs.json").height
    for args in ([tmp_path / "pairs.json", tmp_path / "pairs.json"], [tmp_path / "pairs.json", tmp_path / "link.json"]):
        result = run("validate", *args)
        assert result.exit_code == 0, result.output
        assert "given twice: read once" in result.output and f"{n} pairs over" in result.output and "1 file(s) OK" in result.output
    runs = tmp_path / "runs.jsonl"
    runs.write_text("".join(json.dumps({**run_record(i), "task": f"t{i // 4}"}) + "\n" for i in range(8)))
    result = run("pairs", runs, runs, "--out", tmp_path / "mined.jsonl")
    assert result.exit_code == 0 and "runs.jsonl given twice: read once" in result.output, result.output


@pytest.mark.parametrize("how", ["same path", "symlink"])
def test_train_heads_refuses_validation_pairs_that_are_its_training_pairs(trained, tmp_path, how):
    val = trained / "train.jsonl"
    if how == "symlink":
        val = tmp_path / "val.jsonl"
        val.symlink_to(trained / "train.jsonl")
    output = refused(run("train-heads", trained / "train.jsonl", "--val", val, "--cache", trained / "cache", "--out", tmp_path / "ckpt"), "--val", "training")
    assert len(output.strip().splitlines()) == 1 and not (tmp_path / "ckpt").exists()


@pytest.mark.parametrize("invisible", ["\u200b", "\ufeff", "\u2060", " \u200b\u200d "])
def test_a_text_of_only_zero_width_characters_is_refused_naming_file_record_and_field(tmp_path, invisible):
    record = pair_record(1)
    record["negative"]["module_k_all_rounds"] = invisible
    (tmp_path / "pairs.jsonl").write_text(json.dumps(pair_record(0)) + "\n" + json.dumps(record) + "\n")
    refused(run("validate", tmp_path / "pairs.jsonl"), "pairs.jsonl, record 1", "field 'negative.module_k_all_rounds': empty or whitespace-only")
    record = pair_record(1)
    record["positive"]["trajectory_full_context"] = invisible
    (tmp_path / "pairs.jsonl").write_text(json.dumps(record) + "\n")
    refused(run("validate", tmp_path / "pairs.jsonl"), "pairs.jsonl, record 0", "field 'positive.trajectory_full_context': empty or whitespace-only")


def test_score_records_the_checkpoints_encoder_beside_its_output(trained, tmp_path):
    import yaml

    out = tmp_path / "scored.jsonl"
    result = run("score", trained / "plain", records_file(trained, tmp_path), "--cache", trained / "cache", "--device", "cpu", "--out", out)
    assert result.exit_code == 0, result.output
    recorded = yaml.safe_load((tmp_path / "scored.config.yaml").read_text())["model"]["encoder"]
    assert recorded == load(trained / "plain", device="cpu").fingerprint["encoder"]


def modes(*roots: Path) -> dict[str, str]:
    """The permission bits of every file and folder under `roots` (hidden lock files aside)."""
    found = {}
    for root in roots:
        for path in [root, *root.rglob("*")] if root.is_dir() else [root]:
            if not path.name.endswith(".lock"):
                found[str(path)] = oct(path.stat().st_mode & 0o777)
    return found


@pytest.mark.slow  # a checkpoint, a report, a cache and scores under each umask
@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_outputs_follow_the_umask(work, trained, umask):
    previous = os.umask(umask)
    try:
        assert run("synth", "--pairs", "8", "--out", work / "synth.json").exit_code == 0
        result = run("train-heads", work / "train.jsonl", "--val", work / "val.jsonl", "--cache", work / "cache", "--out", work / "ckpt", "--epochs", "1", "--device", "cpu")
        assert result.exit_code == 0, result.output
        result = run("evaluate", work / "ckpt", work / "val.jsonl", "--cache", work / "cache", "--out", work / "report", "--bootstrap", "0", "--device", "cpu")
        assert result.exit_code == 0, result.output
        result = run("score", work / "plain", records_file(trained, work), "--cache", work / "cache", "--device", "cpu", "--out", work / "scored.jsonl")
        assert result.exit_code == 0, result.output
        result = run("embed", work / "unseen.jsonl", "--cache", work / "new-cache", "--encoder", "minilm", "--device", "cpu")
        assert result.exit_code == 0, result.output
    finally:
        os.umask(previous)
    outputs = [work / name for name in ("synth.json", "synth.config.yaml", "ckpt", "report", "scored.jsonl", "scored.config.yaml", "new-cache")]
    found = modes(*outputs)
    expected = {path: oct((0o777 if Path(path).is_dir() else 0o666) & ~umask) for path in found}
    assert found == expected
    assert any(p.endswith(".parquet") for p in found) and any(p.endswith("manifest.json") for p in found)
