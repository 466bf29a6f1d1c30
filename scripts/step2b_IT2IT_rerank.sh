#!/usr/bin/env bash
# Step 2b: hybrid-grained reranking of the step-1 top 20, fused with step 1 (alpha 0.9):
#   bash scripts/step2b_IT2IT_rerank.sh --step1_result out/step1.json --reranker_ckpt_path model_X.pth \
#       --save_result_path out/step2.json
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
export OMGM_CONFIG="${OMGM_CONFIG:-configs/paths.yaml:configs/evqa.yaml}"
exec "$PY" -m omgm.step2 rerank --top_ks 1,5,10,20 --step1_alpha 0.9 "$@"
