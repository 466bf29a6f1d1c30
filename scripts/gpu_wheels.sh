#!/usr/bin/env bash
# Download, where there is internet, the wheels scripts/gpu_check.sh needs on a GPU box that has torch and
# transformers but no network: faiss-cpu (step 1's index in the correctness runs), open_clip and its two small
# dependencies (the tiny step-1 retriever). About 21 MB, into .whl/ (git-ignored). PYVER: the GPU box's Python.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYVER="${PYVER:-3.12}"
python3 -m pip download --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl faiss-cpu open_clip_torch ftfy wcwidth
