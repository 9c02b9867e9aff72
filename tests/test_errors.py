"""One error type for the user's mistakes: every such error is a `data.UserError`, which the CLI
turns into its message and exit code 1; anything else is a bug and keeps its traceback."""

import pytest
from click.testing import CliRunner

from cache import CacheError, MissingVectors
from data import ConfigError, DataError, UserError
from features.encoder import EncoderLoadError, EncoderMismatch
from features.views import ViewMismatch
from heads import CheckpointError
from pipeline.cli import main
from pipeline.rewards import ScoringError
from pipeline.serve import RequestError


@pytest.mark.parametrize("error", [DataError, ConfigError, CacheError, MissingVectors, EncoderLoadError, EncoderMismatch, CheckpointError, ScoringError, RequestError, ViewMismatch])
def test_every_error_of_the_users_is_a_user_error(error):
    assert issubclass(error, UserError)
    assert not issubclass(error, ValueError)  # so that `except ValueError` never swallows one, nor one of them a bug


def test_a_user_error_is_one_line_and_exit_1(tmp_path):
    (tmp_path / "config.yaml").write_text("[]")  # a ConfigError
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "config.yaml"), "--config", str(tmp_path / "config.yaml")])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert result.output == f"Error: {tmp_path / 'config.yaml'}: expected a mapping of sections (model, features, data, cache, stage_0, stage_1, loss, training, evaluation, serve, search), got list\n"


def test_a_bug_keeps_its_traceback(tmp_path, monkeypatch):
    (tmp_path / "pairs.json").write_text(
        '[{"pair_id": "p", "target_module": "planner", "task": "t",'
        ' "positive": {"trajectory_full_context": "a", "module_k_all_rounds": "b", "outcome": 1},'
        ' "negative": {"trajectory_full_context": "a", "module_k_all_rounds": "c", "outcome": 0}}]'
    )

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug in the summary")

    monkeypatch.setattr("pipeline.cli.summarize_pairs", broken)
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "pairs.json")])
    assert isinstance(result.exception, ZeroDivisionError)  # not turned into "Error: a bug in the summary"
