"""The YAML config: defaults, strictness, and flags over file."""

import os
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.config import Config, ConfigError, load_config

FIXTURE = Path(__file__).parent / "fixtures" / "pairs_original.json"


def test_defaults_are_the_documented_ones():
    config = load_config()
    assert config.model.encoder == "Qwen/Qwen3-Embedding-0.6B"
    assert (config.model.max_context_tokens, config.model.max_module_tokens) == (2048, 512)
    assert (config.stage_0.lr, config.stage_0.warmup_steps, config.stage_0.grad_accumulation, config.stage_0.epochs) == (3e-4, 100, 2, 5)
    assert (config.stage_1.encoder_lr, config.stage_1.heads_lr) == (1e-5, 1e-4)
    assert (config.loss.margin, config.loss.margin_weight) == (0.1, 0.1)
    assert config.data.modules == ["reflection", "planner", "executor", "memory"]


def test_file_values_are_read_and_the_rest_keep_defaults(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("stage_0:\n  epochs: 3\n  lr: 0.001\ndata:\n  modules: [planner, critic]\n")
    config = load_config(path)
    assert (config.stage_0.epochs, config.stage_0.lr, config.stage_0.batch_size) == (3, 0.001, 64)
    assert config.data.modules == ["planner", "critic"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("stage_0:\n  learning_rate: 0.1\n", "unknown key 'stage_0.learning_rate'"),
        ("stage_2:\n  lr: 0.1\n", "unknown section 'stage_2'"),
        ("stage_0:\n  epochs: three\n", "stage_0.epochs must be int"),
        ("model:\n  normalize: 1\n", "model.normalize must be bool"),
        ("stage_1:\n  precision: fp8\n", "stage_1.precision must be one of"),
        ("model:\n  blend: maybe\n", "model.blend must be one of auto, off"),
        ("model:\n  lexical: auto\n", "unknown key 'model.lexical' (known in model: "),
        ("data:\n  val_fraction: 0.6\n  test_fraction: 0.5\n", "must leave pairs for training"),
        ("- just\n- a list\n", "expected a mapping of sections"),
        ("model: [\n", "not valid YAML"),
        ("stage_0:\n  patience: 0\n", "stage_0.patience must be positive"),
        ("stage_0:\n  memory_map_above_mb: -1\n", "stage_0.memory_map_above_mb must be auto or 0 or more, got -1"),
        ("stage_0:\n  memory_map_above_mb: lots\n", "stage_0.memory_map_above_mb must be auto or 0 or more, got 'lots'"),
        ("stage_0:\n  memory_map_above_mb: 1.5\n", "stage_0.memory_map_above_mb must be int or str, got 1.5"),
    ],
)
def test_bad_config_is_refused_naming_file_and_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert message in str(caught.value) and str(path) in str(caught.value)


def test_resolved_config_round_trips_through_yaml(tmp_path):
    config = load_config(overrides={"stage_1.epochs": 2, "model.encoder": "minilm"})
    saved = config.save(tmp_path / "config.yaml")
    assert load_config(saved) == config
    assert yaml.safe_load(saved.read_text())["stage_1"]["epochs"] == 2
    assert load_config(overrides={"stage_1.epochs": None}) == Config()


def test_flags_override_the_config_file_and_resolved_config_is_written(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("data:\n  val_fraction: 0.25\n  test_fraction: 0.25\n  split_seed: 5\n")
    out = tmp_path / "splits"
    result = CliRunner().invoke(main, ["split", str(FIXTURE), "--out", str(out), "--config", str(config), "--test-fraction", "0.3"])
    assert result.exit_code == 0, result.output
    written = yaml.safe_load((out / "config.yaml").read_text())["data"]
    assert (written["val_fraction"], written["test_fraction"], written["split_seed"]) == (0.25, 0.3, 5)


def test_a_verb_given_a_bad_config_exits_1_with_the_message(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("loss:\n  alpha: 2\n")
    result = CliRunner().invoke(main, ["validate", str(FIXTURE), "--config", str(config)])
    assert result.exit_code == 1
    assert "unknown key 'loss.alpha'" in result.output


def test_memory_map_threshold_is_mib_or_half_the_available_memory(tmp_path):
    from cache import memory_map_above

    path = tmp_path / "config.yaml"
    path.write_text("stage_0:\n  memory_map_above_mb: 512\n")
    assert memory_map_above(load_config(path).stage_0.memory_map_above_mb) == 512 * 2**20
    assert load_config().stage_0.memory_map_above_mb == "auto"
    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert 0 < memory_map_above("auto") <= physical // 2
