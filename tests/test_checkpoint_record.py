"""The checkpoint record (heads/checkpoint.py): checkpoints of every earlier format, kept as
fixtures (tests/fixtures/checkpoints/, made by make_fixtures.py there), load through the one
migration and score exactly as the code of their time scored them; the record round-trips; the
normalisation lives in normalization.json."""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from features.views import View
from heads.checkpoint import FORMAT_VERSION, NORMALIZATION, CheckpointRecord, migrate, read_record, save_checkpoint, write_normalization
from heads.ensemble import load_heads
from heads.model import CheckpointError
from pipeline.rewards import load

FIXTURES = Path(__file__).parent / "fixtures" / "checkpoints"
KINDS = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())


def test_there_is_a_fixture_of_every_checkpoint_kind():
    assert KINDS == ["blend", "ensemble", "lexical", "oldest", "rounds", "stage0", "stage1"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_checkpoint_of_an_earlier_format_scores_as_it_did(kind):
    expected = json.loads((FIXTURES / kind / "expected.json").read_text())
    rows = expected["contexts"], expected["module_texts"], expected["modules"]
    scored = load(FIXTURES / kind, device="cpu").rewards(*rows)
    close = dict(rtol=1e-5, atol=1e-6)  # the encoder's vectors may differ in the last bit with the thread count
    np.testing.assert_allclose(scored.raw, expected["raw"], **close)
    np.testing.assert_allclose(scored.raw_uncertainty, expected["uncertainty"], **close)
    if "round_rewards" in expected:
        for shares, wanted in zip(scored.round_rewards, expected["round_rewards"], strict=True):
            np.testing.assert_allclose(shares, wanted, **close)
    if "normalized" in expected:
        np.testing.assert_allclose(load(FIXTURES / kind, device="cpu", normalize=True).score(*rows), expected["normalized"], **close)


def test_the_migration_reads_each_older_shape_as_it_was_meant():
    oldest = read_record(FIXTURES / "oldest")  # no view, module_pairs, ensemble, dropout or pooling key
    assert oldest.format_version == FORMAT_VERSION and oldest.view == View() and oldest.module_pairs is None
    assert (oldest.ensemble, oldest.dropout, oldest.pooling, oldest.blend) == (1, 0.1, "mean", None)
    assert set(oldest.normalization) >= set(oldest.modules)  # evaluate stored it in config.json then
    lexical = read_record(FIXTURES / "lexical")  # the TF-IDF-only blend from before the linear part
    assert lexical.blend["linear"]["weight"] == 0 and lexical.blend["tfidf"]["weight"] == 0.4 and lexical.blend["before_linear_part"]
    assert read_record(FIXTURES / "ensemble").ensemble == 2 and read_record(FIXTURES / "rounds").view.name == "rounds"
    stage1 = read_record(FIXTURES / "stage1")
    assert stage1.stage == 1 and stage1.cache_namespace is None and stage1.provenance["init_checkpoint"] == "runs/stage0"
    # the design head, from before the head was a setting
    assert migrate({"dimension": 8, "modules": ["planner"], "encoder_fingerprint": {}})["head"] == "2d,d"


def test_migrate_leaves_its_input_alone_and_the_current_format_as_it_is():
    raw = json.loads((FIXTURES / "oldest" / "config.json").read_text())
    before = json.dumps(raw)
    migrated = migrate(raw)
    assert json.dumps(raw) == before and migrated["format_version"] == FORMAT_VERSION
    assert migrate(migrated) == migrated


@pytest.mark.parametrize("kind", KINDS)
def test_the_record_round_trips_through_its_folder(kind, tmp_path):
    record = read_record(FIXTURES / kind)
    heads, _ = load_heads(FIXTURES / kind)
    save_checkpoint(tmp_path, heads, record)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["format_version"] == FORMAT_VERSION and "normalization" not in saved and "lexical" not in saved
    assert read_record(tmp_path) == dataclasses.replace(record, normalization=None)  # the normalisation is evaluate's, not the record's


def test_the_normalisation_is_its_own_file_and_the_newer_one_wins(tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(FIXTURES / "oldest", folder)
    config = (folder / "config.json").read_bytes()
    write_normalization(folder, {"planner": {"mean": 1.0, "std": 2.0, "n_responses": 4}, "data_sha256": "x"})
    assert (folder / "config.json").read_bytes() == config  # the training artifact stays as it was
    assert read_record(folder).normalization["planner"] == {"mean": 1.0, "std": 2.0, "n_responses": 4}
    # new heads in the folder: a normalisation of the old ones is gone with them
    heads, record = load_heads(folder)
    save_checkpoint(folder, heads, record)
    assert not (folder / NORMALIZATION).exists() and read_record(folder).normalization is None


def test_a_damaged_normalisation_file_is_named(tmp_path):
    shutil.copytree(FIXTURES / "stage0", tmp_path / "ckpt")
    (tmp_path / "ckpt" / NORMALIZATION).write_text('{"planner": {"mean": "0"')
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'ckpt' / NORMALIZATION}: not readable JSON"):
        load(tmp_path / "ckpt", device="cpu")
    (tmp_path / "ckpt" / NORMALIZATION).write_text('{"planner": {"mean": "0", "std": 1}}')
    with pytest.raises(CheckpointError, match="should be an object of"):
        load(tmp_path / "ckpt", device="cpu")


def test_a_checkpoint_of_a_newer_format_says_to_upgrade(tmp_path):
    shutil.copytree(FIXTURES / "stage0", tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps({**config, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(CheckpointError, match=f"checkpoint format {FORMAT_VERSION + 1}, and this pipeline reads formats up to {FORMAT_VERSION}: upgrade"):
        load(tmp_path / "ckpt", device="cpu")


def test_a_record_takes_the_shape_of_its_heads():
    heads, _ = load_heads(FIXTURES / "ensemble")
    record = CheckpointRecord.of(heads, encoder_fingerprint={"dimension": 384})
    assert (record.dimension, record.ensemble, record.head, record.modules) == (384, 2, "linear", list(heads.modules_order))


def test_a_current_format_record_lacking_its_keys_or_holding_format_1_ones_is_damaged(tmp_path):
    heads, record = load_heads(FIXTURES / "stage0")
    save_checkpoint(tmp_path, heads, record)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k not in ("view", "window_words", "max_pieces")}))
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'config.json'}: 'view' is missing \\(checkpoint format 2 records it\\)"):
        read_record(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "normalization": {"planner": {"mean": 0.0, "std": 1.0}}}))
    with pytest.raises(CheckpointError, match="'normalization' is a key of checkpoint format 1, not of format 2 \\(the normalisation lives in normalization.json\\)"):
        read_record(tmp_path)
