#!/usr/bin/env bash
# Step 2a: train the IT2IT reranker (official flag names; paths from the config, overridable by flags):
#   bash scripts/step2a_IT2IT_reranker_training.sh --train_file train.csv --negative_db_file negatives.json
# Several GPUs: OMGM_LAUNCH="accelerate launch --num_processes 4" bash scripts/step2a_IT2IT_reranker_training.sh ...
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
export OMGM_CONFIG="${OMGM_CONFIG:-configs/paths.yaml:configs/evqa.yaml}"
if [ -n "${OMGM_LAUNCH:-}" ]; then
  exec $OMGM_LAUNCH -m omgm.step2 train --reranker-model-name blip2 --num-epochs 1 --learning-rate 1e-5 \
    --batch-size 8 --neg-num 15 --save_frequency 0.5 "$@"
fi
exec "$PY" -m omgm.step2 train --reranker-model-name blip2 --num-epochs 1 --learning-rate 1e-5 \
  --batch-size 8 --neg-num 15 --save_frequency 0.5 "$@"
