#!/usr/bin/env bash
# The GPU proof run (docs/scale.md): every CUDA path with tiny models, then real-size throughput with random
# weights. No network and no downloaded weights; uses the python3 already on the machine (torch, transformers,
# peft, timm, pillow), plus the wheels in .whl/ when present (scripts/gpu_wheels.sh fetches them beforehand).
# Prints one JSON document and writes it to ${OUT:-outputs/gpu_check}/gpu_suite.json. Extra arguments go to
# benchmarks/gpu_suite.py (e.g. --parts reranker,search).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${OMGM_PYTHON:-python3}"
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/omgm_site .whl/*.whl
  export PYTHONPATH="/tmp/omgm_site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" WANDB_MODE=disabled HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
out_dir="${OUT:-outputs/gpu_check}"
mkdir -p "$out_dir"
exec "$PY" benchmarks/gpu_suite.py --out "$out_dir/gpu_suite.json" --work "${OMGM_GPU_WORK:-/tmp/omgm_gpu_work}" "$@"
