#!/usr/bin/env bash
# Benchmark on one NVIDIA GPU (issue 12): training tiles/s and segmentation km²/min.
#
#   bench/gpu.sh [WORK_DIR]     # WORK_DIR default: ${TMPDIR:-/tmp}/solarseg-gpu
#
# Uses this repository's .venv as it is (installs nothing; PY=... to use another
# interpreter) and ../shared/data. Trains configs/rgbn.yaml for 2 epochs on the GPU
# (fp16 autocast) and segments the benchmark raster of docs/benchmarks_segment.md with
# torch CUDA (fp32, fp16, bf16) and ONNX Runtime's CUDA execution provider when
# onnxruntime-gpu is installed; prints device, tiles/s and km²/min, and writes
# WORK_DIR/gpu.json (for bench/estimate_coverage.py --gpu). Meant to end within
# 5 minutes (a 270 s budget; a hard stop at 10). Details: bench/gpu_bench.py.
#
# Without a GPU it stops at once with one line on stderr and exit status 1, having
# written nothing.
set -euo pipefail

# Bash builtins only until a GPU is known to be there.
if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "bench/gpu.sh: no NVIDIA GPU (nvidia-smi not found)" >&2
    exit 1
fi
if ! gpus=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>&1) || [[ -z "$gpus" ]]; then
    echo "bench/gpu.sh: no NVIDIA GPU (nvidia-smi: ${gpus%%$'\n'*})" >&2
    exit 1
fi

here=${BASH_SOURCE[0]%/*}
[[ "$here" == "${BASH_SOURCE[0]}" ]] && here=.
repo=$(cd "$here/.." && pwd)
py=${PY:-$repo/.venv/bin/python}
if [[ ! -x "$py" ]]; then
    echo "bench/gpu.sh: $py not found (make setup creates the .venv)" >&2
    exit 1
fi
work=${1:-${TMPDIR:-/tmp}/solarseg-gpu}

echo "nvidia-smi: ${gpus//$'\n'/; }"
cd "$repo"
exec timeout -k 10 600 "$py" bench/gpu_bench.py --work "$work" --budget-s "${BUDGET_S:-270}"
