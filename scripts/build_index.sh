#!/usr/bin/env bash
# Build the step-1 summary index (summaries -> text embeddings -> FAISS + manifest); resumable.
#   bash scripts/build_index.sh --summarizer llm --summary_model meta-llama/Meta-Llama-3-8B-Instruct
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
export OMGM_CONFIG="${OMGM_CONFIG:-configs/paths.yaml}"
exec "$PY" -m omgm index build "$@"
