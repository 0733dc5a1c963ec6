#!/usr/bin/env bash
# The GPU check, ready to run on a machine with an NVIDIA GPU (pip install -e '.[gpu]' first); under 8 minutes.
#   bash bench/gpu_check.sh          # trains `paper` with mixed precision and cuDNN LSTMs, prints samples/s and the
#                                    # share of the GPU's peak, checks exact resume and a GPU checkpoint read on a CPU
#   bash bench/gpu_check.sh --cpu    # the same parts on the CPU at small sizes (what the tests run)
# One JSON line per part, then {"ok": ...}; the exit status is 0 when every part passed.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" != "--cpu" ]]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || {
        echo '{"ok": false, "error": "nvidia-smi found no NVIDIA GPU"}'; exit 1; }
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
if [[ "${1:-}" == "--cpu" ]]; then
    exec python3 bench/gpu_check.py "$@"  # a shared CPU may take longer than a GPU's 8 minutes
fi
exec timeout 480 python3 bench/gpu_check.py "$@"
