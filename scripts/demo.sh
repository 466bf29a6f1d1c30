#!/usr/bin/env bash
# The whole pipeline on the demo data with tiny RANDOM-weight models: no GPU, no downloads.
# Numbers it prints show that every stage runs; with random weights they are not meaningful.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
export OMGM_CONFIG=configs/demo.yaml
W=.cache/demo
mkdir -p "$W" outputs/demo
echo "== tiny models (random weights)"
"$PY" -m utils.make_tiny_models --out "$W/models"
echo "== import the demo KB into SQLite"
"$PY" -m omgm.data.kb_import --out "$W/kb.sqlite" --overwrite
echo "== build the summary index (lead-section summaries)"
"$PY" -m omgm.build_index --summarizer lead --summary_file "$W/summaries_lead.jsonl" --no_progress
echo "== step 1 on the E-VQA-format demo test split"
"$PY" -m omgm.step1 --sample_file assets/demo/test.csv --save_result_path outputs/demo/evqa_step1.json --no_progress
echo "== step 1 on the InfoSeek-format demo split"
"$PY" -m omgm.step1 --sample_file assets/demo/infoseek_test.csv --save_result_path outputs/demo/infoseek_step1.json --no_progress
echo "== done: results under outputs/demo/"
