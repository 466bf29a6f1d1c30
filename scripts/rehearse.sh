#!/usr/bin/env bash
# The dress rehearsal of the first real run: `omgm fetch` + `omgm reproduce` for E-VQA and InfoSeek against every
# registry entry served on 127.0.0.1 in its real layout (Drive pages, Dropbox redirects, zips, the iNat tarball,
# GLD's per-image URLs, hub snapshots), with tiny RANDOM-weight models: the figures only show that each row is
# computed. Writes OUT/evqa/tables.json|md, OUT/infoseek/tables.json|md and OUT/rehearsal.json (wall times, the
# source that served each file, the rows of each table group). No network needed; a few minutes on 2 cores.
#   bash scripts/rehearse.sh OUT [--datasets evqa,infoseek] [--questions N]
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: bash scripts/rehearse.sh OUT [--datasets evqa,infoseek] [--questions N]" >&2; exit 2; }
OUT="$(realpath -m "$1")"; shift                 # before _venv.sh moves to the repository root
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
"$PY" -m utils.rehearsal "$OUT" "$@"
