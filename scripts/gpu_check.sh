#!/usr/bin/env bash
# The GPU proof run (docs/scale.md): every CUDA path with tiny models, then real-size throughput with random
# weights. No network and no downloaded weights; uses $OMGM_PYTHON, else ./.venv, else the machine's python3
# (torch, transformers, peft, timm, pillow), plus the wheels in .whl/ when present (scripts/gpu_wheels.sh fetches them beforehand).
# Prints one JSON document and writes it to ${OUT:-outputs/gpu_check}/gpu_suite.json. Extra arguments go to
# benchmarks/gpu_suite.py (e.g. --parts reranker,search).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# the interpreter: $OMGM_PYTHON, else this checkout's .venv (scripts/demo.sh makes it), else python3 when it has torch
if [ -n "${OMGM_PYTHON:-}" ]; then PY="$OMGM_PYTHON"
elif [ -x .venv/bin/python ]; then PY=".venv/bin/python"
else PY="python3"; fi
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "error: $PY has no torch: run bash scripts/demo.sh once (it makes .venv), or set OMGM_PYTHON to a python with torch" >&2
  exit 2
fi
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/omgm_site .whl/*.whl
  export PYTHONPATH="/tmp/omgm_site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" WANDB_MODE=disabled HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
out_dir="${OUT:-outputs/gpu_check}"
mkdir -p "$out_dir"
exec "$PY" benchmarks/gpu_suite.py --out "$out_dir/gpu_suite.json" --work "${OMGM_GPU_WORK:-/tmp/omgm_gpu_work}" "$@"
