#!/usr/bin/env bash
# Step 3: section-augmented answer generation + the dataset's metric (official flag names):
#   bash scripts/step3_secaugmented_gen.sh --retrieval_results_file out/step2.json --answer_generator llava1_5 \
#       --output_file out/answers.json [--llm_checkpoint finetuned_llava/] [--bem_model bem/]
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
export OMGM_CONFIG="${OMGM_CONFIG:-configs/paths.yaml:configs/evqa.yaml}"
exec "$PY" -m omgm.step3 --step2_beta 0.2 "$@"
