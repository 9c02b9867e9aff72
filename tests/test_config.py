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
        ("stage_0:\n  patience: 0\n", "stage_0.patience must be an integer from 1 to 2147483647, got 0"),
        ("stage_0:\n  memory_map_above_mb: -1\n", "stage_0.memory_map_above_mb must be an integer from 0 to 2147483647, got -1"),
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


@pytest.mark.parametrize(
    "text, message",
    [
        # issue 8: values that passed validation and then crashed in torch or numpy
        ("stage_0: {lr: .nan}\n", "stage_0.lr must be a finite number > 0, got nan"),
        ("stage_0: {lr: -1.0}\n", "stage_0.lr must be a finite number > 0, got -1.0"),
        ("stage_1: {encoder_lr: 0}\n", "stage_1.encoder_lr must be a finite number > 0, got 0.0"),
        ("stage_1: {heads_lr: .inf}\n", "stage_1.heads_lr must be a finite number > 0, got inf"),
        ("search: {lr: [0.001, -0.1]}\n", "search.lr[1] must be a finite number > 0, got -0.1"),
        ("training: {weight_decay: -5.0}\n", "training.weight_decay must be a finite number >= 0, got -5.0"),
        ("search: {weight_decay: [.nan]}\n", "search.weight_decay[0] must be a finite number >= 0, got nan"),
        ("training: {grad_clip: 0}\n", "training.grad_clip must be a finite number > 0, got 0.0"),
        ("training: {max_warmup_fraction: 1.0}\n", "training.max_warmup_fraction must be a number in [0, 1), got 1.0"),
        ("model: {dropout: -0.1}\n", "model.dropout must be a number in [0, 1), got -0.1"),
        ("search: {dropout: [0.1, 1]}\n", "search.dropout[1] must be a number in [0, 1), got 1.0"),
        ("loss: {margin: -1}\n", "loss.margin must be a finite number >= 0, got -1.0"),
        ("loss: {margin_weight: .nan}\n", "loss.margin_weight must be a finite number >= 0, got nan"),
        ("data: {val_fraction: .nan}\n", "data.val_fraction must be a number in [0, 1), got nan"),
        ("evaluation: {confidence: 1}\n", "evaluation.confidence must be a number in (0, 1), got 1.0"),
        ("stage_0: {batch_size: 100000000000000000000000}\n", "stage_0.batch_size must be an integer from 1 to 2147483647, got 100000000000000000000000"),
        ("stage_1: {warmup_steps: -1}\n", "stage_1.warmup_steps must be an integer from 0 to 2147483647, got -1"),
        ("cache: {shard_size: 4294967296}\n", "cache.shard_size must be an integer from 1 to 2147483647"),
        ("serve: {memory_size: -1}\n", "serve.memory_size must be an integer from 0 to 2147483647, got -1"),
        ("serve: {read_timeout_s: .inf}\n", "serve.read_timeout_s must be a number in (0, 86400], got inf"),
        ("stage_0: {ensemble: 100000}\n", "stage_0.ensemble must be an integer from 1 to 1000"),
        ("training: {seed: -1}\n", "training.seed must be an integer from 0 to 2147483647, got -1"),
        ("stage_0: {lr: " + "9" * 400 + "}\n", "stage_0.lr must be a finite number, got 999"),
    ],
)
def test_a_number_out_of_range_is_refused_at_load_naming_the_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert message in str(caught.value) and str(path) in str(caught.value)


def test_every_number_of_the_config_has_a_range():
    """Each int or float key declares where it lies (`Field(ge=...)` and the like): a lower bound,
    and for an int an upper one a C int holds; a new number key needs its bounds."""
    from pipeline.config import INT_MAX, SETTINGS

    numbers = {key: setting.bounds for key, setting in SETTINGS.items() if setting.number is not None}
    assert {"stage_0.lr", "search.lr", "stage_0.memory_map_above_mb", "serve.read_timeout_s"} <= set(numbers)
    assert [key for key, bounds in numbers.items() if not {"ge", "gt"} & set(bounds)] == []
    assert [key for key, bounds in numbers.items() if SETTINGS[key].number is int and not bounds.get("le", INT_MAX + 1) <= INT_MAX] == []


def test_a_flag_out_of_range_is_refused_like_the_file():
    with pytest.raises(ConfigError, match=r"command line: stage_0.batch_size must be an integer from 1 to 2147483647, got 10{23}"):
        load_config(overrides={"stage_0.batch_size": 10**23})


@pytest.mark.parametrize(
    "text, message",
    [
        ("stage_0:\n  lr: 0.1\ntraining: {seed: 1}\nstage_0:\n  epochs: 2\n", "line 4: 'stage_0' is written twice (first at line 1)"),
        ("stage_0:\n  lr: 0.1\n  epochs: 2\n  lr: 0.2\n", "line 4: 'stage_0.lr' is written twice (first at line 2)"),
        ("data:\n  module_fields: {planner: [plan], planner: [action]}\n", "line 2: 'data.module_fields.planner' is written twice"),
    ],
)
def test_a_section_or_key_written_twice_is_refused_naming_file_key_and_line(tmp_path, text, message):
    path = tmp_path / "twice.yaml"
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


def test_the_config_reference_is_the_one_the_declarations_make():
    from pipeline.cli import setting_flags
    from pipeline.config import config_reference

    committed = (Path(__file__).parent.parent / "docs" / "reference" / "config.md").read_text(encoding="utf-8")
    assert committed == config_reference(setting_flags()), (
        "docs/reference/config.md differs from the declarations in pipeline/config.py: "
        "regenerate it with `python -m pipeline.config --reference > docs/reference/config.md`"
    )


def test_a_flag_takes_its_choices_range_and_default_from_the_config():
    from features.views import VIEWS

    help_text = " ".join(CliRunner().invoke(main, ["train-heads", "--help"]).output.split())
    assert f"[{'|'.join(VIEWS)}]" in help_text and "[features.view: truncate]" in help_text
    assert "[stage_0.epochs: 5]" in help_text and "[stage_0.ensemble: 1] [1<=x<=1000]" in help_text
    result = CliRunner().invoke(main, ["train-heads", str(FIXTURE), "--cache", "c", "--out", "o", "--ensemble", "1001"])
    assert result.exit_code == 2 and "1<=x<=1000" in result.output


def test_explicit_keys_are_those_of_the_file_and_the_flags(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("stage_0:\n  epochs: 3\nmodel:\n")
    config = load_config(path, {"model.encoder": "minilm", "features.view": None})
    assert config.explicit == {"stage_0.epochs", "model.encoder"}
    assert config.override({"stage_0.lr": 0.01}).explicit == {"stage_0.epochs", "model.encoder", "stage_0.lr"}
    assert load_config().explicit == frozenset()


def test_the_choices_declared_beside_their_code_match_the_config():
    """The cache's dtypes, stage 1's precisions and the blend's rules are declared where torch, the cache and the blend use them,
    since the config (read by every verb, `--help` too) must not import torch; this keeps the two in step."""
    from typing import get_args

    from cache.store import DTYPES
    from heads.blend import RULES
    from heads.finetuning import PRECISIONS
    from pipeline.config import CacheConfig, ModelConfig, Stage1Config

    assert get_args(CacheConfig.model_fields["dtype"].annotation) == tuple(DTYPES)
    assert get_args(Stage1Config.model_fields["precision"].annotation) == PRECISIONS
    assert get_args(ModelConfig.model_fields["blend_rule"].annotation) == RULES


def test_a_learning_rate_in_exponent_notation_is_a_number(tmp_path):
    """YAML 1.1 (PyYAML) reads `lr: 1e-4` as the string '1e-4', which was refused as not a float."""
    import yaml

    path = tmp_path / "c.yaml"
    path.write_text("stage_0: {lr: 1e-4}\nstage_1: {encoder_lr: 2E-5, heads_lr: +1.5e-4}\n")
    config = load_config(path)
    assert (config.stage_0.lr, config.stage_1.encoder_lr, config.stage_1.heads_lr) == (1e-4, 2e-5, 1.5e-4)
    assert yaml.safe_load("lr: 1e-4") == {"lr": "1e-4"}  # PyYAML's own loader is left as it is
