#!/usr/bin/env bash
# Proves the GPU path in one command (at most 8 minutes on one GPU): DCS-FB ResNet-50 training with AMP
# (bf16, fp16) and channels-last, a hard-mode DCS-DNAS search on mbv2_reid.yaml against its derived child,
# the attention benchmark, seed 001 Table 5 (PCB + SA / CSALR) and Market-scale evaluation, all on
# synthetic data it generates itself. Writes OUT_DIR/check.json (after every section) and OUT_DIR/check.log.
#
#   bash experiments/gpu/check.sh OUT_DIR [--device cuda|cpu] [--tiny] [--sections a,b] [--keep-work]
#
# --device cpu --tiny is the CPU smoke test (tests/test_gpu_check.py). Uses the python3 on PATH (or
# $PYTHON) with its own PyTorch; dcsnas comes from this checkout: an installed copy when it is this one
# (pip install --no-deps --no-build-isolation -e .), else through PYTHONPATH. No network is needed.
# Exit status: 0 all sections passed, 1 a section failed (see check.json / check.log), 2 bad usage.
# See docs/gpu.md.
set -euo pipefail

if [[ $# -lt 1 || $1 == -* ]]; then
  echo "usage: bash experiments/gpu/check.sh OUT_DIR [--device cuda|cpu] [--tiny] [--sections a,b]" >&2
  exit 2
fi
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PY=${PYTHON:-python3}
if ! command -v "$PY" >/dev/null 2>&1; then
  echo "check.sh: no '$PY' on PATH; set PYTHON to the Python that has PyTorch" >&2
  exit 2
fi
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "check.sh: '$PY' cannot import torch; set PYTHON to the Python that has PyTorch" >&2
  exit 2
fi
# dcsnas: the installed package if it is this checkout, otherwise this checkout through PYTHONPATH
found=$(cd / && "$PY" -c 'import os, dcsnas; print(os.path.dirname(os.path.dirname(os.path.realpath(dcsnas.__file__))))' 2>/dev/null || true)
if [[ "$found" != "$(cd "$ROOT" && pwd -P)" ]]; then
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
cd "$ROOT"
exec "$PY" experiments/gpu/check.py "$@"
