#!/usr/bin/env bash
# Step 1: query image -> entity summaries (coarse cross-modal search). Paths come from the config
# (default configs/paths.yaml + configs/evqa.yaml; set OMGM_CONFIG to change) and can be overridden by flags:
#   bash scripts/step1_img2sum.sh --sample_file test.csv --save_result_path out/step1.json
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
export OMGM_CONFIG="${OMGM_CONFIG:-configs/paths.yaml:configs/evqa.yaml}"
exec "$PY" -m omgm.step1 --top_ks 1,5,10,20 --retrieval_top_k 20 "$@"
