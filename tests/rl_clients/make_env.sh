#!/usr/bin/env bash
# Builds .venv-rl: the released RL clients (verl 0.9.1, OpenRLHF 0.11.2) beside this project, in an
# environment of their own so that their pins do not fight the project's (.venv). Only what their
# reward and client paths import is installed: no vllm, flash-attn or deepspeed (GPU-only extras).
# tests/test_rl_clients.py drives the clients through this environment's python.
#   bash tests/rl_clients/make_env.sh          # about 1.5 minutes; rerunning keeps what is there
set -euo pipefail
cd "$(dirname "$0")/../.."

python=${PYTHON:-python3}
venv=${RL_VENV:-.venv-rl}
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
if ! "$venv/bin/python" -c "import verl, openrlhf" >/dev/null 2>&1; then
    # torch: the CPU build install.sh would pick; a torch already in the venv is kept
    "$venv/bin/python" -c "import torch" >/dev/null 2>&1 || "${pip[@]}" install "${RL_TORCH_SPEC:-torch==2.13.0}"
    "${pip[@]}" install --no-deps verl==0.9.1 openrlhf==0.11.2
    "${pip[@]}" install "numpy>=2" "tensordict>=0.8.0,<=0.10.0,!=0.9.0" "ray>=2.41" omegaconf hydra-core \
        "transformers>=5.5.3,<5.11,!=5.6.0" aiohttp "packaging>=20" codetiming dill pandas "pyarrow>=19" \
        datasets torchdata sympy pylatexenc
fi
# the project itself, keeping transformers in verl's range
"${pip[@]}" install -e . "transformers>=5.5.3,<5.11,!=5.6.0"
"$venv/bin/python" -c "import verl, openrlhf; print('rl clients: verl', verl.__version__, '/ openrlhf', openrlhf.__version__ if hasattr(openrlhf, '__version__') else '0.11.2')"
