"""`pipeline serve` over real HTTP on 127.0.0.1: /score, /get_reward, /health, refusals,
micro-batching, and verl through the server; on a small real checkpoint."""

import json
import os
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
import pytest
from click.testing import CliRunner
from reward_checkpoint import MODULES

from data import load_pairs
from data.synth import generate_pairs
from heads.blend import describe_reward
from heads.checkpoint import read_record
from pipeline.rewards import load, sigmoid
from pipeline import verl_reward
from pipeline.cli import main
from pipeline.config import ServeConfig
from pipeline.serve import BackgroundServer, create_app


@pytest.fixture(scope="module")
def trained(reward_checkpoint):
    return reward_checkpoint


@pytest.fixture(scope="module")
def scorer(trained):
    scorer = load(trained / "checkpoint", device="cpu")
    scorer.warm_up()
    return scorer


@pytest.fixture(scope="module")
def server(scorer):
    settings = ServeConfig(max_batch=64, max_wait_ms=5, max_request_rows=16, max_body_bytes=200_000, module="")
    with BackgroundServer(create_app(scorer, settings)) as running:
        yield running


def request(url: str, body: object = None, raw: bytes | None = None, method: str | None = None) -> tuple[int, dict]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    call = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(call, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def items_of(pairs, side: str = "positive") -> list[dict]:
    return [{"context": c, "module": m, "module_text": t} for c, m, t in zip(pairs[f"{side}_context"], pairs["target_module"], pairs[f"{side}_module_text"])]


def api_scores(scorer, items: list[dict]) -> np.ndarray:
    return scorer.score([i["context"] for i in items], [i["module_text"] for i in items], [i["module"] for i in items])


def test_health_names_the_checkpoint_modules_and_limits(server, trained):
    status, health = request(f"{server.url}/health")
    assert status == 200 and health["status"] == "ok"
    assert health["modules"] == MODULES and health["checkpoint"] == str(trained / "checkpoint")
    assert health["normalized"] is False and health["max_request_rows"] == 16 and health["max_body_bytes"] == 200_000
    # what the served rewards are made of: the blend's weights as config.json records them, and in words
    saved = json.loads((trained / "checkpoint" / "config.json").read_text())
    weights = {part: saved["blend"][part]["weight"] for part in ("heads", "linear", "tfidf")} if "blend" in saved else None
    assert health["blend"] == weights and health["reward"] == describe_reward(read_record(trained / "checkpoint")) and health["reward"].startswith("reward = ")


def test_served_scores_equal_the_python_api(server, scorer, trained):
    items = items_of(load_pairs(trained / "val.jsonl"))[:16]
    status, answer = request(f"{server.url}/score", {"items": items})
    assert status == 200 and answer["normalized"] is False
    np.testing.assert_allclose(answer["rewards"], api_scores(scorer, items), atol=1e-6)
    assert request(f"{server.url}/score", {"items": []}) == (200, {"rewards": [], "normalized": False})


def test_get_reward_speaks_openrlhf_and_follows_the_module_rule(server, scorer):
    prompts = ["Task: book a flight\n[Round 1]\n", "<module>executor</module>Task: refund order 7\n", "Task: clean logs\n", "Task: x\n"]
    responses = ["<plan>search, compare, book</plan>", "<action>refund(order=7)</action>", "<memory query>log rules</memory query>", "<plan>p</plan>"]
    queries = ["<pad><pad>" + p + r for p, r in zip(prompts, responses)]  # left padding before the prompt is skipped
    labels = ["planner", "the answer is 42", {"module": "memory", "answer": 1}, "reflection"]
    status, answer = request(f"{server.url}/get_reward", {"query": queries, "prompts": prompts, "labels": labels})
    assert status == 200, answer
    assert set(answer) == {"rewards", "scores", "extra_logs"} and set(answer["extra_logs"]) == {"raw_reward", "module_id", "prompt_truncated"}
    assert len(answer["rewards"]) == len(answer["scores"]) == 4
    assert all(0 < s < 1 for s in answer["scores"])
    np.testing.assert_allclose(answer["scores"], sigmoid(np.array(answer["rewards"])), atol=1e-6)
    # label names the module; else the <module> tag in the prompt (taken out of the context); a label that names no module is ignored
    contexts = [prompts[0], "Task: refund order 7\n", prompts[2], prompts[3]]
    modules = ["planner", "executor", "memory", "reflection"]
    np.testing.assert_allclose(answer["rewards"], scorer.score(contexts, responses, modules), atol=1e-6)
    assert answer["extra_logs"]["module_id"] == [MODULES.index(m) for m in modules]
    assert answer["extra_logs"]["raw_reward"] == pytest.approx(answer["rewards"])
    assert answer["extra_logs"]["prompt_truncated"] == [0, 0, 0, 0]


LONG_PROMPT = (
    "<module>planner</module>Task: move the nightly backup job from the old host to the new cluster, keep the retention "
    "rules, and make sure the monitoring alerts still fire when a backup fails.\n[Round 1]\nObservation: the job is a cron "
    "entry on host-a that runs backup.sh at 02:00 and mails on failure.\n[Round 2]\nObservation: the cluster runs jobs "
    "from a scheduler config; alerts go through the pager.\n"
)


def test_a_query_holding_only_the_tail_of_its_prompt_is_scored_with_the_whole_prompt_and_flagged(server, scorer, caplog):
    """OpenRLHF cuts a long prompt from the left in tokens and decodes the rest: the query starts
    inside the prompt (perhaps mid-word, after a replacement character for a cut multi-byte
    character), the <module> tag may be cut off, and the module text is still what follows."""
    context = LONG_PROMPT.replace("<module>planner</module>", "")
    responses = ["<plan>copy the cron entry into the scheduler, then test an alert</plan>", "<plan>ask for the retention rules</plan>", "<plan>p</plan>"]
    queries = [
        LONG_PROMPT[-60:] + responses[0],  # " jobs from a scheduler config; ..."
        "\ufffd" + LONG_PROMPT[-45:] + responses[1],  # "heduler config; ..." after a cut multi-byte character, decoded to U+FFFD
        LONG_PROMPT + responses[2],  # whole
    ]
    body = {"query": queries, "prompts": [LONG_PROMPT] * 3}
    with caplog.at_level("WARNING", "pipeline.serve"):
        status, answer = request(f"{server.url}/get_reward", body)
    assert status == 200, answer
    expected = scorer.score([context] * 3, responses, ["planner"] * 3)
    np.testing.assert_allclose(answer["rewards"], expected, atol=1e-6)
    assert answer["extra_logs"]["prompt_truncated"] == [1, 1, 0]
    # the whole prompt matters: the tail alone as context is another reward
    assert abs(scorer.score([LONG_PROMPT[-60:]], responses[:1], ["planner"])[0] - expected[0]) > 1e-4
    warnings = [r.getMessage() for r in caplog.records if "tail of their prompt" in r.getMessage()]
    assert len(warnings) == 1 and "2 of 3 queries" in warnings[0], warnings


def test_a_query_holding_no_tail_of_its_prompt_is_refused(server):
    body = {"query": [LONG_PROMPT[-10:] + "<plan>p</plan>"], "prompts": [LONG_PROMPT], "labels": ["planner"]}
    status, answer = request(f"{server.url}/get_reward", body)
    assert status == 422 and "query[0] does not contain prompts[0], nor a tail of it of at least 16 characters" in answer["error"], answer


def test_every_refusal_is_logged_with_its_reason_and_the_requests_size(server, caplog):
    unknown = json.dumps({"query": ["Task: a\n<plan>b</plan>"] * 3, "prompts": ["Task: a\n"] * 3, "labels": ["planner", "planner", "critic"]}).encode()
    refused = [
        ("/get_reward", unknown, "POST", 422, f"({len(unknown):,} bytes, 3 queries): labels[2]: unknown module 'critic'"),
        ("/score", b"{not json", "POST", 400, "(9 bytes): request body is not valid JSON"),
        ("/score", b" " * 300_000, "POST", 413, "(300,000 bytes): request body of 300000 bytes is over the limit"),
        ("/nowhere", None, "GET", 404, "GET /nowhere (0 bytes): Not Found"),
        ("/score", None, "GET", 405, "GET /score (0 bytes): Method Not Allowed"),
    ]
    for path, body, method, status, reason in refused:
        with caplog.at_level("WARNING", "pipeline.serve"):
            caplog.clear()
            assert request(f"{server.url}{path}", raw=body, method=method)[0] == status
        lines = [r.getMessage() for r in caplog.records if r.name == "pipeline.serve"]
        assert len(lines) == 1 and lines[0].startswith(f"{status} {method} {path} (") and reason in lines[0], lines


def test_extra_logs_can_be_left_out_for_openrlhf_0_8(scorer):
    body = {"query": ["Task: a\n<plan>b</plan>"], "prompts": ["Task: a\n"], "labels": ["planner"]}
    with BackgroundServer(create_app(scorer, ServeConfig(extra_logs=False))) as server:
        status, answer = request(f"{server.url}/get_reward", body)
        assert request(f"{server.url}/health")[1]["extra_logs"] is False
    assert status == 200 and set(answer) == {"rewards", "scores"}, answer
    assert answer["rewards"] == pytest.approx(scorer.score(["Task: a\n"], ["<plan>b</plan>"], ["planner"]).tolist(), abs=1e-6)


@pytest.mark.parametrize("how", ["flag", "config"])
def test_no_extra_logs_reaches_the_server_settings_from_the_flag_or_the_config(trained, tmp_path, monkeypatch, how):
    import pipeline.serve

    ran = []
    monkeypatch.setattr(pipeline.serve, "serve", lambda scorer, settings, host, port, sock: ran.append(settings) or sock.close())
    args = ["serve", str(trained / "checkpoint"), "--device", "cpu", "--port", "0"]
    if how == "flag":
        args.append("--no-extra-logs")
    else:
        (tmp_path / "serve.yaml").write_text("serve:\n  extra_logs: false\n")
        args += ["--config", str(tmp_path / "serve.yaml")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert [s.extra_logs for s in ran] == [False] and "without extra_logs" in result.output
    assert ServeConfig().extra_logs is True


BAD = [
    ("/score", b"{not json", 400, "not valid JSON"),
    ("/score", b"", 400, "empty request body"),
    ("/score", b"\xff\xfe\x00", 400, "request body is not"),
    ("/score", json.dumps([1, 2]).encode(), 422, 'expected {"items"'),
    ("/score", json.dumps({"rows": []}).encode(), 422, "missing field 'items'"),
    ("/score", json.dumps({"items": "x"}).encode(), 422, "'items' must be a list"),
    ("/score", json.dumps({"items": [7]}).encode(), 422, "items[0] must be an object"),
    ("/score", json.dumps({"items": [{"context": "c", "module": "planner"}]}).encode(), 422, "items[0]: missing field 'module_text'"),
    ("/score", json.dumps({"items": [{"context": 1, "module": "planner", "module_text": "t"}]}).encode(), 422, "items[0].context must be a string"),
    ("/score", json.dumps({"items": [{"context": "c", "module": "critic", "module_text": "t"}]}).encode(), 422, "unknown module 'critic'"),
    ("/score", json.dumps({"items": [{"context": "c", "module": "planner", "module_text": "t"}] * 17}).encode(), 413, "at most 16 per request"),
    ("/score", json.dumps({"items": [{"context": "c" * 250_000, "module": "planner", "module_text": "t"}]}).encode(), 413, "over the limit of 200000 bytes"),
    ("/get_reward", json.dumps({"query": ["q"]}).encode(), 422, "missing field 'prompts'"),
    ("/get_reward", json.dumps({"query": ["pq"], "prompts": ["p", "p"]}).encode(), 422, "equally long"),
    ("/get_reward", json.dumps({"query": ["pq"], "prompts": [None], "labels": ["planner"]}).encode(), 422, "prompts[0] must be a string"),
    ("/get_reward", json.dumps({"query": ["abc"], "prompts": ["x"], "labels": ["planner"]}).encode(), 422, "does not contain prompts[0]"),
    ("/get_reward", json.dumps({"query": ["pq"], "prompts": ["p"], "labels": ["not a module"]}).encode(), 422, "no module for query[0]"),
    ("/get_reward", json.dumps({"query": ["<module>critic</module>q"], "prompts": ["<module>critic</module>"]}).encode(), 422, "unknown module 'critic'"),
    ("/get_reward", json.dumps({"query": ["pq"], "prompts": ["p"], "labels": [{"module": ["planner"]}]}).encode(), 422, "labels[0].module: unknown module"),
    ("/get_reward", json.dumps({"query": ["pq"] * 17, "prompts": ["p"] * 17}).encode(), 413, "at most 16 per request"),
]


@pytest.mark.parametrize("path, body, status, message", BAD, ids=[f"{p} {m}" for p, _, _, m in BAD])
def test_malformed_requests_get_a_4xx_with_a_message(server, path, body, status, message):
    code, answer = request(f"{server.url}{path}", raw=body, method="POST")
    assert code == status and message in answer["error"], answer


def test_a_body_far_over_the_limit_still_gets_its_413_and_the_server_lives_on(server):
    code, answer = request(f"{server.url}/score", raw=b" " * 5_000_000)
    assert code == 413 and "5000000 bytes" in answer["error"]
    assert request(f"{server.url}/score", method="GET")[0] == 405
    assert request(f"{server.url}/nowhere")[0] == 404
    status, health = request(f"{server.url}/health")
    assert status == 200 and health["refused"] >= 2


def concurrent_scores(url: str, items: list[dict]) -> list[list[float]]:
    """One request per item, all sent at the same moment from their own threads."""
    start = threading.Barrier(len(items))

    def send(item: dict) -> list[float]:
        start.wait()
        status, answer = request(f"{url}/score", {"items": [item]})
        assert status == 200, answer
        return answer["rewards"]

    with ThreadPoolExecutor(len(items)) as pool:
        return list(pool.map(send, items))


@pytest.mark.parametrize("max_batch, fewest, most", [(64, 1, 4), (4, 4, 8), (1, 16, 16)])
def test_concurrent_requests_are_scored_in_micro_batches(scorer, trained, max_batch, fewest, most):
    items = items_of(load_pairs(trained / "unseen.jsonl"))[:16]
    settings = ServeConfig(max_batch=max_batch, max_wait_ms=300)
    with BackgroundServer(create_app(scorer, settings)) as server:
        answers = concurrent_scores(server.url, items)
        calls = request(f"{server.url}/health")[1]["scorer_calls"]
    assert fewest <= calls <= most, f"{len(items)} concurrent requests took {calls} scorer calls with max_batch {max_batch}"
    # each request got its own rows back
    np.testing.assert_allclose([a[0] for a in answers], api_scores(scorer, items), atol=1e-6)


def test_a_normalizing_server_serves_the_normalized_api_scores(trained):
    normalized = load(trained / "checkpoint", device="cpu", normalize=True)
    items = items_of(load_pairs(trained / "val.jsonl"))[:8]
    with BackgroundServer(create_app(normalized, ServeConfig())) as server:
        status, answer = request(f"{server.url}/score", {"items": items})
        assert status == 200 and answer["normalized"] is True
        np.testing.assert_allclose(answer["rewards"], api_scores(normalized, items), atol=1e-5)
        query = {"query": [i["context"] + i["module_text"] for i in items], "prompts": [i["context"] for i in items], "labels": [i["module"] for i in items]}
        status, reward = request(f"{server.url}/get_reward", query)
        raw = load(trained / "checkpoint", device="cpu").score(*zip(*[(i["context"], i["module_text"], i["module"]) for i in items]))
        np.testing.assert_allclose(reward["rewards"], answer["rewards"], atol=1e-5)
        np.testing.assert_allclose(reward["extra_logs"]["raw_reward"], raw, atol=1e-5)


def test_verl_through_the_server_equals_verl_in_process(scorer, trained, monkeypatch):
    record = generate_pairs(4, seed=11)[2]["negative"]
    trajectory = record["trajectory_full_context"]
    samples = [(trajectory, {"task": "Fix it."}), ("<plan>check logs</plan>", {"module": "planner", "context": "Task: y"})]
    monkeypatch.delenv("REWARD_MODULE", raising=False)

    monkeypatch.setenv("REWARD_CHECKPOINT", str(trained / "checkpoint"))
    monkeypatch.setenv("REWARD_DEVICE", "cpu")
    monkeypatch.delenv("REWARD_URL", raising=False)
    monkeypatch.setattr(verl_reward, "_scorer", None)
    local = [verl_reward.compute_score("agent", s, None, e) for s, e in samples]

    monkeypatch.delenv("REWARD_CHECKPOINT")
    monkeypatch.setattr(verl_reward, "_scorer", None)
    monkeypatch.setattr(verl_reward, "_server_info", None)
    with BackgroundServer(create_app(scorer, ServeConfig(max_request_rows=2))) as server:  # a trajectory's rows take two requests
        monkeypatch.setenv("REWARD_URL", server.url)
        remote = [verl_reward.compute_score("agent", s, None, e) for s, e in samples]
        assert request(f"{server.url}/health")[1]["requests"] >= 3
    assert verl_reward._scorer is None  # nothing was loaded in this process
    for a, b in zip(local, remote):
        assert set(a) == set(b) == {"score", *(f"{m}_score" for m in MODULES)}
        assert b == pytest.approx(a, abs=1e-5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # a subprocess or several trainings: the full suite runs it, the fast lane stays quick
def test_pipeline_serve_runs_until_terminated(trained):
    script = shutil.which("pipeline", path=str(Path(sys.executable).parent))
    port = free_port()
    process = subprocess.Popen(
        [script, "serve", str(trained / "checkpoint"), "--port", str(port), "--module", "planner", "--max-batch", "8", "--device", "cpu"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                status, health = request(f"http://127.0.0.1:{port}/health")
                break
            except urllib.error.URLError:
                assert process.poll() is None and time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.2)
        assert status == 200 and health["default_module"] == "planner" and health["max_batch"] == 8
        status, answer = request(f"http://127.0.0.1:{port}/get_reward", {"query": ["Task: a\n<plan>b</plan>"], "prompts": ["Task: a\n"]})
        assert status == 200 and answer["extra_logs"]["module_id"] == [MODULES.index("planner")]
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0]
    # uvicorn shuts down cleanly, then re-raises the signal it caught
    assert process.returncode in (0, -signal.SIGTERM) and "Application shutdown complete" in output, output
    assert f"on http://127.0.0.1:{port}" in output and "micro-batches of up to 8 rows" in output


def test_pipeline_serve_refuses_a_default_module_the_checkpoint_lacks(trained):
    result = CliRunner().invoke(main, ["serve", str(trained / "checkpoint"), "--module", "critic", "--device", "cpu", "--port", "0"])
    assert result.exit_code != 0 and "'critic' is not a module" in result.output


# --- a request's cost is bounded (issue: one request inside the limits stalled every client) ---


def long_texts(n_chars: int) -> list[str]:
    """Texts far over any token budget: words, digits, punctuation, runs of spaces, newlines, non-ASCII."""
    rng = np.random.default_rng(0)
    words = ["plan", "w17", "Ünïcode", "日本語", "x=1;", "  ", "\n", "(a,b)", "déjà-vu", "#!", "tokens", "0.25", "\t", "end."]
    texts = []
    for seed in range(3):
        picked = rng.choice(len(words), size=n_chars // 3)
        texts.append(" ".join(words[k] for k in picked)[:n_chars])
    texts.append(("w%d " % 5) * (n_chars // 4))
    texts.append("nospace" * (n_chars // 7))  # no place to cut a window: tokenized whole, as before
    return texts


@pytest.mark.parametrize("model", ["minilm", "qwen3"])
@pytest.mark.parametrize("side", ["left", "right", "head_tail"])
def test_long_texts_are_tokenized_only_where_truncation_keeps_them_with_the_same_vectors(model, side, minilm_path, tiny_qwen3_path, monkeypatch):
    import features.encoder
    from features.encoder import TextEncoder

    path = minilm_path if model == "minilm" else tiny_qwen3_path
    encoder = TextEncoder.load(str(path), device="cpu", max_context_tokens=96, max_module_tokens=48, truncation_side=side)
    texts = long_texts(60_000)
    tokenized: list[int] = []  # the length of every text the encoder's own tokenizer call gets

    class Spy:
        def __call__(self, batch, **kwargs):
            tokenized.extend(len(t) for t in batch)
            return tokenizer(batch, **kwargs)

        def __getattr__(self, name):
            return getattr(tokenizer, name)

    tokenizer, encoder.tokenizer = encoder.tokenizer, Spy()
    for role in ("context", "module"):
        tokenized.clear()
        prepared, cut = encoder.prepare(texts, role)
        read = list(tokenized)
        vectors, _ = encoder.encode(texts[:2] + texts[3:4], role)
        with monkeypatch.context() as m:
            m.setattr(features.encoder, "CHARS_PER_TOKEN", 10**9)  # the old path: every long text tokenized whole
            whole, whole_cut = encoder.prepare(texts, role)
            whole_vectors, _ = encoder.encode(texts[:2] + texts[3:4], role)
        assert prepared == whole and cut == whole_cut >= len(texts) - 1  # MiniLM reads the 60,000-character word as one [UNK]
        np.testing.assert_allclose(vectors, whole_vectors, atol=1e-6)
        # windows were taken: only the text without a space to cut at was tokenized whole
        assert sorted(read)[-2] < 25_000 and max(read) == len(texts[-1]), sorted(read)[-3:]



def fake_rows(calls: list, delay: float):
    """A `score` for MicroBatcher: each row's reward is its module text as a number; every call is
    recorded (its module texts) and takes `delay` seconds."""
    from pipeline.rewards import Rewards

    def score(contexts, module_texts, modules):
        calls.append(list(module_texts))
        time.sleep(delay)
        values = np.array([float(t) for t in module_texts])
        return Rewards(values, values, np.zeros_like(values), np.zeros_like(values), None)

    return score


def test_a_small_request_is_scored_between_the_batches_of_a_large_one_which_still_gets_all_its_rows():
    import asyncio

    from pipeline.serve import MicroBatcher

    calls: list[list[str]] = []

    async def run():
        batcher = MicroBatcher(fake_rows(calls, 0.05), max_batch=4, max_wait=0.0)
        batcher.start()
        large = asyncio.ensure_future(batcher.score(["c"] * 20, [str(i) for i in range(20)], ["m"] * 20))
        while not calls:  # the large request's first batch is being scored
            await asyncio.sleep(0.005)
        small = asyncio.ensure_future(batcher.score(["c"], ["100"], ["m"]))
        done, _ = await asyncio.wait({large, small}, return_when=asyncio.FIRST_COMPLETED)
        assert done == {small} and not large.done()
        result = await large
        await batcher.stop()
        return small.result(), result

    small, large = asyncio.run(run())
    assert small.rewards.tolist() == [100.0] and large.rewards.tolist() == [float(i) for i in range(20)]
    assert all(len(call) <= 4 for call in calls) and calls[1] == ["100"], calls  # right after the batch it waited for


def test_a_request_whose_waiter_is_cancelled_leaves_the_queue_and_the_rest_of_it_is_not_scored():
    import asyncio

    from pipeline.serve import MicroBatcher

    calls: list[list[str]] = []

    async def run():
        batcher = MicroBatcher(fake_rows(calls, 0.05), max_batch=4, max_wait=0.0)
        batcher.start()
        large = asyncio.ensure_future(batcher.score(["c"] * 40, [str(i) for i in range(40)], ["m"] * 40))
        queued = asyncio.ensure_future(batcher.score(["c"], ["7"], ["m"]))
        gone = asyncio.ensure_future(batcher.score(["c"], ["8"], ["m"]))  # queued, then its client leaves
        while not calls:
            await asyncio.sleep(0.005)
        large.cancel()
        gone.cancel()
        assert (await queued).rewards.tolist() == [7.0]
        await asyncio.sleep(0.2)
        await batcher.stop()
        return batcher.dropped

    dropped = asyncio.run(run())
    scored = [t for call in calls for t in call]
    assert dropped == 2 and "8" not in scored and len(scored) <= 2 * 4 + 1, calls


def test_a_client_that_hangs_up_has_its_request_dropped_unscored(scorer, trained):
    app = create_app(scorer, ServeConfig(max_batch=2, max_wait_ms=0, max_request_rows=64))
    calls: list[int] = []
    real_scorer = app.state.batcher.score_rows

    def slow(contexts, module_texts, modules):
        calls.append(len(modules))
        time.sleep(0.1)
        return real_scorer(contexts, module_texts, modules)

    app.state.batcher.score_rows = slow
    body = json.dumps({"items": items_of(load_pairs(trained / "val.jsonl"))[:1] * 40}).encode()
    with BackgroundServer(app) as server:
        with socket.create_connection((server.host, server.port), timeout=10) as client:
            client.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            deadline = time.monotonic() + 30
            while not calls and time.monotonic() < deadline:
                time.sleep(0.01)
        time.sleep(0.5)  # the rest of its 20 batches would take 2 s
        status, health = request(f"{server.url}/health")
        assert request(f"{server.url}/score", {"items": items_of(load_pairs(trained / "val.jsonl"))[:1]})[0] == 200
    assert health["abandoned"] == 1 and sum(calls) < 20, (health, calls)


@pytest.mark.parametrize("content_type, status", [("text/plain", 415), ("application/x-www-form-urlencoded", 415), (None, 415), ("application/json; charset=utf-8", 200), ("Application/JSON", 200)])
def test_a_post_that_is_not_declared_json_is_refused_with_415(server, trained, content_type, status):
    body = json.dumps({"items": items_of(load_pairs(trained / "val.jsonl"))[:1]}).encode()
    for path in ("/score", "/get_reward"):
        call = urllib.request.Request(f"{server.url}{path}", data=body, method="POST", headers={"Content-Type": content_type} if content_type else {})
        if content_type is None:
            call.remove_header("Content-type")  # urllib adds application/x-www-form-urlencoded otherwise
        try:
            with urllib.request.urlopen(call, timeout=60) as response:
                code, answer = response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            code, answer = e.code, json.loads(e.read())
        expected = status if status == 415 else (200 if path == "/score" else 422)  # /score's body is no /get_reward body
        assert code == expected, (path, answer)
        if status == 415:
            assert "application/json" in answer["error"], answer


def test_a_request_over_max_request_chars_is_refused_with_413(scorer, trained):
    item = items_of(load_pairs(trained / "val.jsonl"))[0]
    chars = len(item["context"]) + len(item["module_text"])
    with BackgroundServer(create_app(scorer, ServeConfig(max_request_chars=3 * chars))) as server:
        assert request(f"{server.url}/score", {"items": [item] * 3})[0] == 200
        status, answer = request(f"{server.url}/score", {"items": [item] * 4})
        assert status == 413 and f"{4 * chars:,} characters" in answer["error"] and "serve.max_request_chars" in answer["error"], answer
        status, answer = request(f"{server.url}/get_reward", {"query": [item["context"] + item["module_text"]] * 4, "prompts": [item["context"]] * 4, "labels": [item["module"]] * 4})
        assert status == 413 and "serve.max_request_chars" in answer["error"], answer
        assert request(f"{server.url}/health")[1]["max_request_chars"] == 3 * chars


def test_pipeline_serve_on_a_busy_port_fails_in_one_line_before_saying_it_serves(trained):
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        result = CliRunner().invoke(main, ["serve", str(trained / "checkpoint"), "--device", "cpu", "--port", str(port)])
    assert result.exit_code == 1 and "serving" not in result.output, result.output
    assert f"cannot listen on 127.0.0.1:{port}" in result.output and "in use" in result.output and len(result.output.strip().splitlines()) == 1, result.output


def test_a_large_request_is_cut_into_parts_by_characters_not_rows():
    """Long trajectories make parts of a row or two, short texts parts of up to max_batch rows."""
    from pipeline.serve import MicroBatcher, _Job

    batcher = MicroBatcher(lambda *rows: None, max_batch=64, max_wait=0.0, large_chars=32_000)
    long = _Job(["c" * 1000] * 100, ["m" * 14_000] * 100, ["planner"] * 100, future=None)
    assert batcher._part_rows(long) == 2
    short = _Job(["c" * 100] * 100, ["m" * 100] * 100, ["planner"] * 100, future=None)
    assert batcher._part_rows(short) == 64
    huge = _Job(["c"] * 3, ["m" * 100_000] * 3, ["planner"] * 3, future=None)
    huge.scored = 1
    assert batcher._part_rows(huge) == 1  # one row over the budget still makes progress
    assert MicroBatcher(lambda *rows: None, max_batch=4, max_wait=0.0)._part_rows(long) == 4  # no budget: a batch of rows
