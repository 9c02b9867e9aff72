#!/usr/bin/env bash
# Creates ./.venv and installs the project into it (editable), with the test tools when given --dev
# (which also makes .venv-rl, the released RL clients the integration tests drive: tests/rl_clients/).
#
# PyTorch: torch is not pinned. With an NVIDIA GPU (nvidia-smi lists one) pip installs the default
# CUDA build. Without one, this script installs the newest CPU-only build (+cpu) that the
# configured package indexes or PyTorch's CPU index (when reachable) offer, which is a fraction of
# the CUDA build's size. Set TORCH_SPEC (e.g. TORCH_SPEC="torch==2.5.1") to choose yourself. An
# already installed torch is kept.
set -euo pipefail
cd "$(dirname "$0")"

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check)

if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
    if [ -n "${TORCH_SPEC:-}" ]; then
        "${pip[@]}" install $TORCH_SPEC
    elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        "${pip[@]}" install torch
    else
        cpu_index=https://download.pytorch.org/whl/cpu
        # Probe PyTorch's CPU index once, with a short timeout: given to pip while unreachable, it
        # costs a retry and a warning for every dependency pip looks up.
        cpu_index_args=()
        if .venv/bin/python -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)" "$cpu_index/" >/dev/null 2>&1; then
            cpu_index_args=(--extra-index-url "$cpu_index")
        else
            echo "install.sh: $cpu_index is not reachable; looking for a CPU build of torch in your configured package indexes only"
        fi
        versions=$("${pip[@]}" index versions torch ${cpu_index_args[@]+"${cpu_index_args[@]}"} --retries 0 --timeout 15 2>/dev/null || true)
        cpu_version=$(grep -o '[0-9][0-9.]*+cpu' <<<"$versions" | head -n 1 || true)
        if [ -z "$cpu_version" ]; then
            echo "install.sh: no NVIDIA GPU found and no CPU build of torch (+cpu) offered by your package" >&2
            echo "indexes or $cpu_index. Install torch yourself, or set TORCH_SPEC, then rerun." >&2
            exit 1
        fi
        echo "install.sh: no NVIDIA GPU found; installing the CPU build torch==$cpu_version"
        "${pip[@]}" install "torch==$cpu_version" ${cpu_index_args[@]+"${cpu_index_args[@]}"}
    fi
fi

if [ "${1:-}" = "--dev" ]; then
    "${pip[@]}" install -e ".[dev]"
    # the released verl and OpenRLHF clients the integration tests drive, in .venv-rl (their own pins)
    bash tests/rl_clients/make_env.sh
else
    "${pip[@]}" install -e .
fi
