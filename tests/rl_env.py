"""The environment of the released RL clients (verl, OpenRLHF), made by tests/rl_clients/make_env.sh
(`bash install.sh --dev` runs it). Tests that drive a real client run its code with this
environment's python in a subprocess, with this checkout first on PYTHONPATH.

    from rl_env import rl_python, run_in_rl_env
    result = run_in_rl_env("tests/rl_clients/drive_verl.py", "--checkpoint", str(ckpt))   # CompletedProcess

Without the environment these tests are skipped, saying how to make it, unless
RL_CLIENTS_REQUIRED=1 (set by .ci/run), where its absence fails them.
"""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def rl_python() -> Path:
    """The RL environment's python; skips the test (fails it under RL_CLIENTS_REQUIRED=1) when absent."""
    python = Path(os.environ.get("RL_VENV", ROOT / ".venv-rl")) / "bin" / "python"
    if not python.exists():
        message = f"no RL client environment at {python.parent.parent}: make it with `bash tests/rl_clients/make_env.sh`"
        if os.environ.get("RL_CLIENTS_REQUIRED") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return python


def run_in_rl_env(script: str | Path, *args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """`script` (a path relative to the checkout, or absolute) run by the RL environment's python with
    this checkout first on PYTHONPATH; its output is captured as text."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE", **(env or {})}
    return subprocess.run(
        [str(rl_python()), str(ROOT / script), *args], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=timeout
    )


__all__ = ["ROOT", "rl_python", "run_in_rl_env"]
