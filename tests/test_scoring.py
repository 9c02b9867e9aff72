"""The reward API (pipeline.rewards), `pipeline score` and the verl adapter, on a small real checkpoint."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from reward_checkpoint import MODULES

from cache import CacheError, EmbeddingCache
from data import load_pairs
from data.synth import generate_pairs
from data.trajectory import DEFAULT_MODULE_FIELDS, module_texts_from_trajectory, render_context, render_module
from features.pairs import text_key
from heads import CheckpointError
from pipeline.evaluate_scoring import cached_pair_vectors, pair_scores
from pipeline.rewards import ScoringError, VectorMemory, load
from pipeline import verl_reward
from pipeline.cli import main


@pytest.fixture(scope="module")
def trained(reward_checkpoint):
    return reward_checkpoint


@pytest.fixture(scope="module")
def scorer(trained):
    return load(trained / "checkpoint", device="cpu")


def rows(pairs, side: str = "positive") -> tuple[list[str], list[str], list[str]]:
    return pairs[f"{side}_context"].to_list(), pairs[f"{side}_module_text"].to_list(), pairs["target_module"].to_list()


def test_scores_equal_the_heads_on_cached_vectors_with_and_without_the_cache(trained, scorer):
    pairs = load_pairs(trained / "val.jsonl")
    reference = load(trained / "checkpoint", trained / "cache", device="cpu")
    positive, negative = (side.reward for side in pair_scores(reference, cached_pair_vectors(reference, pairs, embed_missing=False)[0], pairs))

    in_memory = load(trained / "checkpoint", device="cpu", memory_size=0)
    np.testing.assert_allclose(in_memory.score(*rows(pairs)), positive, atol=1e-5)
    np.testing.assert_allclose(in_memory.score(*rows(pairs, "negative")), negative, atol=1e-5)
    assert in_memory.encoded > 0 and in_memory.from_cache == 0

    cached = load(trained / "checkpoint", trained / "cache", device="cpu", memory_size=0)
    np.testing.assert_allclose(cached.score(*rows(pairs)), positive, atol=1e-6)
    assert cached.encoded == 0 and cached.from_cache > 0
    assert cached.score(*rows(pairs)).dtype == np.float32


@pytest.mark.parametrize("memory_map_above_mb", [4096, 0])
def test_a_cached_scorer_reads_the_cache_once_into_an_index(trained, memory_map_above_mb):
    pairs = load_pairs(trained / "val.jsonl")
    cached = load(trained / "checkpoint", trained / "cache", device="cpu", memory_size=0, index_memory_map_above_mb=memory_map_above_mb)
    first = cached.score(*rows(pairs))
    np.testing.assert_array_equal(cached.score(*rows(pairs)), first)
    cached.score(*rows(pairs, "negative"))
    assert cached.namespace.reads == 1 and cached.encoded == 0, "one read at the first call; every later call from the index"
    assert isinstance(cached.index().vectors, np.memmap) == (memory_map_above_mb == 0)
    contexts = pairs["positive_context"].to_list()
    np.testing.assert_array_equal(cached.vectors(contexts, ["context"] * len(contexts)), cached.namespace.fetch([text_key("context", c) for c in contexts]))

    evaluating = load(trained / "checkpoint", trained / "cache", device="cpu")
    cached_pair_vectors(evaluating, pairs, embed_missing=False)
    assert evaluating.namespace.reads == 1, "a pair table's pieces in one read"


def test_each_distinct_text_is_encoded_once_per_call_and_remembered(trained):
    scorer = load(trained / "checkpoint", device="cpu", memory_size=100)
    contexts = ["ctx A", "ctx A", "ctx B", "ctx A", "ctx B", "ctx B"]
    texts = ["plan 1", "plan 2", "plan 1", "plan 3", "plan 2", "plan 1"]
    modules = ["planner", "planner", "planner", "executor", "memory", "reflection"]
    first = scorer.score(contexts, texts, modules)
    assert scorer.encoded == 2 + 3  # two contexts, three module texts
    np.testing.assert_array_equal(scorer.score(contexts, texts, modules), first)
    assert scorer.encoded == 5  # all from memory the second time

    forgetful = load(trained / "checkpoint", device="cpu", memory_size=0)
    forgetful.score(contexts, texts, modules)
    forgetful.score(contexts, texts, modules)
    assert forgetful.encoded == 10 and len(forgetful.memory) == 0


def test_vector_memory_forgets_the_least_recently_used():
    memory = VectorMemory(2)
    memory.put("a", np.zeros(1))
    memory.put("b", np.ones(1))
    assert memory.get("a") is not None  # a is now the most recent
    memory.put("c", np.ones(1))
    assert memory.get("b") is None and memory.get("a") is not None and len(memory) == 2


def test_the_cache_is_read_never_written(trained):
    namespace = EmbeddingCache(trained / "cache").namespaces()[0]
    before = (namespace.root / "manifest.json").read_text(), sorted(p.name for p in (namespace.root / "shards").iterdir())
    scorer = load(trained / "checkpoint", trained / "cache", device="cpu")
    unseen = load_pairs(trained / "unseen.jsonl")
    scorer.score(*rows(unseen))
    assert scorer.encoded > 0
    after = (namespace.root / "manifest.json").read_text(), sorted(p.name for p in (namespace.root / "shards").iterdir())
    assert after == before


def test_a_cache_without_the_checkpoints_encoder_is_refused(trained, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CacheError, match="holds no vectors of"):
        load(trained / "checkpoint", tmp_path / "empty", device="cpu")
    with pytest.raises(CheckpointError, match="not a reward-head checkpoint"):
        load(tmp_path / "empty", device="cpu")


def test_normalized_scores_use_the_stored_mean_and_std(trained, scorer):
    pairs = load_pairs(trained / "val.jsonl")
    stored = json.loads((trained / "checkpoint" / "normalization.json").read_text())
    raw = scorer.score(*rows(pairs))
    normalized = load(trained / "checkpoint", device="cpu", normalize=True).score(*rows(pairs))
    mean = np.array([stored[m]["mean"] for m in pairs["target_module"]])
    std = np.array([stored[m]["std"] for m in pairs["target_module"]])
    np.testing.assert_allclose(normalized, (raw - mean) / std, rtol=1e-5, atol=1e-6)
    # on the very responses the statistics came from, each module's rewards have mean 0 and std 1
    both = np.concatenate([normalized, load(trained / "checkpoint", device="cpu", normalize=True).score(*rows(pairs, "negative"))])
    modules = np.concatenate([pairs["target_module"].to_numpy()] * 2)
    for m in MODULES:
        assert both[modules == m].mean() == pytest.approx(0, abs=1e-4) and both[modules == m].std(ddof=1) == pytest.approx(1, abs=1e-4)


def test_normalization_asked_of_a_checkpoint_without_it_says_how_to_get_it(trained):
    with pytest.raises(CheckpointError, match=r"no reward normalisation.*pipeline evaluate .*validation data"):
        load(trained / "plain", device="cpu", normalize=True)


def test_score_trajectory_gives_every_module_its_score(scorer):
    texts = {
        "planner": "[Round 1]\n<plan>search, then book</plan>",
        "executor": "[Round 1]\n<action>search()</action>",
        "memory": "[Round 1]\n<memory store>x</memory store>",
    }
    result = scorer.score_trajectory("Task: book a flight", texts)
    assert list(result) == list(texts)
    expected = scorer.score(["Task: book a flight"] * 3, list(texts.values()), list(texts))
    assert list(result.values()) == pytest.approx(expected.tolist())


@pytest.mark.parametrize(
    "contexts, texts, modules, message",
    [
        (["c"], ["t"], ["critic"], "no head for module"),
        (["c", "d"], ["t"], ["planner"], "equally long"),
        (["c"], [None], ["planner"], r"module_texts\[0\] must be a string"),
    ],
)
def test_bad_rows_are_refused_with_the_reason(scorer, contexts, texts, modules, message):
    with pytest.raises(ScoringError, match=message):
        scorer.score(contexts, texts, modules)


def test_module_texts_are_cut_from_a_trajectory_as_the_pairs_hold_them():
    for record in generate_pairs(40, seed=2):
        for side in ("positive", "negative"):
            texts = module_texts_from_trajectory(record[side]["trajectory_full_context"])
            assert texts[record["target_module"]] == record[side]["module_k_all_rounds"]
    rounds = [{"plan": "list flights", "action": "search()", "observation": "3 flights"}, {"reflection": "cheapest is DY", "memory_store": "DY 142"}]
    texts = module_texts_from_trajectory(render_context("Book a flight", rounds))
    assert texts == {m: render_module(rounds, DEFAULT_MODULE_FIELDS[m]) for m in MODULES}
    assert set(module_texts_from_trajectory("[Round 1]\n<plan>only a plan</plan>")) == {"planner"}
    assert module_texts_from_trajectory("no tags at all") == {}


# --- pipeline score -----------------------------------------------------------------------------


def write_records(path, records) -> None:
    path.write_text("".join(json.dumps(r) + "\n" if r is not None else "\n" for r in records))


def test_score_cli_round_trip_passes_fields_through_and_equals_the_api(trained, scorer, tmp_path):
    pairs = load_pairs(trained / "unseen.jsonl")
    records = [
        {"run_id": f"r{i}", "context": c, "modules": {m: t, "planner": "[Round 1]\n<plan>x</plan>"}, "meta": {"k": i}}
        for i, (c, t, m) in enumerate(zip(*rows(pairs)))
    ]
    write_records(tmp_path / "in.jsonl", records[:3] + [None] + records[3:])  # a blank line is skipped
    result = CliRunner().invoke(
        main, ["score", str(trained / "checkpoint"), str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "out.jsonl"), "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    assert f"of {len(records)} records" in result.output
    scored = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [{k: v for k, v in r.items() if k != "scores"} for r in scored] == records
    for record in scored:
        assert list(record["scores"]) == list(record["modules"])
        modules = list(record["modules"])
        expected = scorer.score([record["context"]] * len(modules), [record["modules"][m] for m in modules], modules)
        assert list(record["scores"].values()) == pytest.approx(expected.tolist(), abs=1e-5)
    assert (tmp_path / "out.config.yaml").is_file()

    normalized = CliRunner().invoke(
        main,
        [
            "score",
            str(trained / "checkpoint"),
            str(tmp_path / "in.jsonl"),
            "--out",
            str(tmp_path / "norm.jsonl"),
            "--normalize",
            "--cache",
            str(trained / "cache"),
        ],
    )
    assert normalized.exit_code == 0, normalized.output
    assert "normalised rewards" in normalized.output
    first = json.loads((tmp_path / "norm.jsonl").read_text().splitlines()[0])
    module = next(iter(first["modules"]))
    stats = json.loads((trained / "checkpoint" / "normalization.json").read_text())[module]
    assert first["scores"][module] == pytest.approx((scored[0]["scores"][module] - stats["mean"]) / stats["std"], abs=1e-4)

    refused = CliRunner().invoke(main, ["score", str(trained / "plain"), str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "x.jsonl"), "--normalize"])
    assert refused.exit_code == 1 and "pipeline evaluate" in refused.output and not (tmp_path / "x.jsonl").exists()


def test_score_cli_names_file_line_and_field_of_every_bad_record_and_writes_nothing(trained, tmp_path):
    good = {"context": "c", "modules": {"planner": "p"}}
    lines = [
        json.dumps(good),
        "{not json",
        json.dumps({"modules": {"planner": "p"}}),
        json.dumps({"context": 3, "modules": {"planner": "p"}}),
        json.dumps({"context": "c", "modules": {"critic": "p", "executor": 7}}),
        json.dumps({"context": "c", "modules": {}}),
        json.dumps(["a list"]),
    ]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(main, ["score", str(trained / "checkpoint"), str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "out.jsonl")])
    assert result.exit_code == 1
    file = str(tmp_path / "in.jsonl")
    for expected in [
        f"{file}, line 2: not valid JSON",
        f"{file}, line 3, field 'context': missing",
        f"{file}, line 4, field 'context': must be a string",
        f"{file}, line 5, field 'modules.critic': unknown module 'critic'",
        f"{file}, line 5, field 'modules.executor': must be a string",
        f"{file}, line 6, field 'modules': must be a non-empty object",
        f"{file}, line 7: expected a JSON object",
    ]:
        assert expected in result.output, expected
    assert "7 problem(s)" in result.output
    assert not (tmp_path / "out.jsonl").exists() and not list(tmp_path.glob(".out.jsonl*"))


def test_score_cli_names_the_line_of_a_byte_that_is_not_utf8(trained, tmp_path):
    good = json.dumps({"context": "c", "modules": {"planner": "p"}}).encode()
    (tmp_path / "in.jsonl").write_bytes(good + b"\n" + good.replace(b'"c"', b'"caf\xe9"') + b"\n")
    result = CliRunner().invoke(main, ["score", str(trained / "checkpoint"), str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "out.jsonl")])
    assert result.exit_code == 1 and f"{tmp_path / 'in.jsonl'}, line 2: not valid UTF-8" in result.output
    assert not (tmp_path / "out.jsonl").exists()


# --- verl ---------------------------------------------------------------------------------------


@pytest.fixture
def verl_in_process(trained, monkeypatch):
    monkeypatch.setenv("REWARD_CHECKPOINT", str(trained / "checkpoint"))
    monkeypatch.setenv("REWARD_DEVICE", "cpu")
    monkeypatch.delenv("REWARD_URL", raising=False)
    monkeypatch.delenv("REWARD_MODULE", raising=False)
    monkeypatch.setattr(verl_reward, "_scorer", None)
    return verl_reward


def test_verl_compute_score_in_process_equals_the_api(trained, scorer, verl_in_process):
    record = generate_pairs(4, seed=9)[0]["positive"]
    trajectory = record["trajectory_full_context"].split("\n", 1)[1].lstrip()  # the rounds, without the task line
    result = verl_in_process.compute_score("agent", trajectory, None, {"task": "Book it."})
    assert set(result) == {"score", *(f"{m}_score" for m in MODULES)}
    texts = module_texts_from_trajectory(trajectory)
    expected = scorer.score_trajectory(f"Task: Book it.\n{trajectory}", texts)
    for m in MODULES:
        assert result[f"{m}_score"] == pytest.approx(expected.get(m, 0.0), abs=1e-5)
    assert result["score"] == pytest.approx(np.mean(list(expected.values())), abs=1e-5)

    one = verl_in_process.compute_score("agent", "<plan>search first</plan>", None, {"module": "planner", "context": "Task: x"})
    assert one["score"] == pytest.approx(one["planner_score"]) and one["executor_score"] == 0.0
    assert one["score"] == pytest.approx(float(scorer.score(["Task: x"], ["<plan>search first</plan>"], ["planner"])[0]), abs=1e-5)
    assert verl_in_process.compute_score("agent", "no tags", None, None) == {"score": 0.0, **{f"{m}_score": 0.0 for m in MODULES}}

    batch = verl_in_process.compute_score_batch(
        ["agent"] * 2, [trajectory, "<plan>search first</plan>"], [None] * 2, [{"task": "Book it."}, {"module": "planner", "context": "Task: x"}]
    )
    assert batch[0] == pytest.approx(result) and batch[1] == pytest.approx(one)
    with pytest.raises(ValueError, match="extra_info\\['context'\\]"):
        verl_in_process.compute_score("agent", "text", None, {"module": "planner"})


def test_verl_requests_to_the_server_stay_within_its_row_and_body_limits():
    contexts, texts, modules = ["c" * 1000] * 10, ["t"] * 10, ["planner"] * 10
    assert [len(r) for r in verl_reward._requests_within(4, 50_000, contexts, texts, modules)] == [4, 4, 2]
    by_size = verl_reward._requests_within(100, 2500, contexts, texts, modules)
    assert sum(len(r) for r in by_size) == 10 and all(len(json.dumps({"items": r})) <= 2500 for r in by_size)
    assert verl_reward._requests_within(4, 50_000, [], [], []) == []
