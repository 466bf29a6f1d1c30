#!/usr/bin/env bash
# The whole pipeline on the demo data with tiny RANDOM-weight models: no GPU, no downloads.
# Numbers it prints show that every stage runs; with random weights they are not meaningful.
# About 3 minutes on a 2-core machine once ./.venv exists (the first run installs it: a few minutes more).
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
export OMGM_CONFIG=configs/demo.yaml
W=.cache/demo
mkdir -p "$W" outputs/demo
echo "== tiny models: every model of this demo has RANDOM weights (its numbers only show that each stage runs)"
"$PY" -m utils.make_tiny_models --out "$W/models"
echo "== import the demo KB into SQLite"
"$PY" -m omgm.data.kb_import --out "$W/kb.sqlite" --overwrite --no_progress
echo "== build the summary index (lead-section summaries)"
"$PY" -m omgm index build --summarizer lead --summary_file "$W/summaries_lead.jsonl" --no_progress
echo "== step 1 on the E-VQA-format demo test split"
"$PY" -m omgm.step1 --sample_file assets/demo/test.csv --save_result_path outputs/demo/evqa_step1.json --no_progress
echo "== step 1 on the InfoSeek-format demo split"
"$PY" -m omgm.step1 --sample_file assets/demo/infoseek_test.csv --save_result_path outputs/demo/infoseek_step1.json --no_progress
echo "== step 1 on the demo train split, then mine hard negatives from it"
"$PY" -m omgm.step1 --sample_file assets/demo/train.csv --save_result_path "$W/train_step1.json" --no_progress
"$PY" -m omgm.prep.mine_negatives --train_file assets/demo/train.csv --step1_result "$W/train_step1.json" \
  --out "$W/negatives.json"
echo "== step 2a: train the tiny reranker (random init, 4 epochs on the demo train split, ~40 s)"
rm -rf "$W/reranker"
"$PY" -m omgm.step2 train --train_file assets/demo/train.csv --negative_db_file "$W/negatives.json" \
  --knowledge_base_file "$W/kb.sqlite" --save_dir "$W/reranker" --num-epochs 4 --learning-rate 1e-3 \
  --batch-size 8 --save_frequency 1 --no_progress
echo "== step 2b: rerank the test split's step-1 top 20 (alpha 1 = step 1 alone; 0 = reranker alone)"
"$PY" -m omgm.step2 rerank --sample_file assets/demo/test.csv --step1_result outputs/demo/evqa_step1.json \
  --reranker_ckpt_path "$W/reranker/model_80.pth" --step1_alpha 1,0.9,0.5,0 \
  --save_result_path outputs/demo/evqa_step2.json --no_progress
echo "== step 3: best section of the top entity -> tiny LLaVA (RANDOM weights: its answers are gibberish) -> E-VQA metric"
"$PY" -m omgm.step3 --test_file assets/demo/test.csv --retrieval_results_file outputs/demo/evqa_step2.alpha0.json \
  --output_file outputs/demo/evqa_answers.json --max_new_tokens 8 --no_progress > /dev/null
"$PY" -c 'import json; e = json.load(open("outputs/demo/evqa_answers.summary.json"))["evaluation"]; print("E-VQA accuracy {:.2f} over {} answers ({}); summary: outputs/demo/evqa_answers.summary.json".format(e["accuracy"], e["total"], e["metric"]))'
echo "== fine-tune the tiny LLaVA on the demo train split (step 3's own prompts; exact match before -> after)"
rm -rf "$W/llava_sft"
"$PY" -m omgm step3 train --train_file assets/demo/train.csv --output_dir "$W/llava_sft" --sft_file "$W/sft.jsonl" \
  --train_section evidence --num_epochs 20 --batch_size 4 --global_batch_size 8 --learning_rate 1e-2 \
  --max_length 1024 --eval_examples 24 --no_progress | grep -E "exact match|last_loss|first_loss"
echo "== retriever comparison: summaries (OMGM step 1) vs every KB image (EchoSight baseline) vs OMGM step 2"
"$PY" -m omgm index build --index_kind image --faiss_index "$W/image_tiny.index" --no_progress
OMGM_CONFIG= "$PY" -m omgm compare --config configs/demo.yaml --sample_file assets/demo/test.csv \
  --run summary=configs/retrievers/demo_summary.yaml --run echosight_images=configs/retrievers/demo_echosight_images.yaml \
  --result omgm_step2=outputs/demo/evqa_step2.alpha0.json --out_dir outputs/demo/compare
echo "== data check and HTML report"
"$PY" -m omgm.prep.check_data --splits assets/demo/train.csv assets/demo/test.csv --step1_result outputs/demo/evqa_step1.json \
  || echo "(the demo KB has one entity without images on purpose)"
"$PY" -m omgm report --sample_file assets/demo/test.csv --step1 outputs/demo/evqa_step1.json \
  --step2 outputs/demo/evqa_step2.alpha0.json --answers outputs/demo/evqa_answers.json --out outputs/demo/report.html
echo "== done: results under outputs/demo/ (open outputs/demo/report.html in a browser)"
