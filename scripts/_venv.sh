# Sourced by the other scripts: make sure ./.venv exists and holds requirements.txt + omgm (editable).
# Re-installs only when requirements.txt or pyproject.toml changed. Set OMGM_PYTHON to choose the interpreter,
# or OMGM_NO_VENV=1 to use the current environment as it is.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [ "${OMGM_NO_VENV:-0}" = "1" ]; then
  PY="${OMGM_PYTHON:-python3}"
else
  VENV="$ROOT/.venv"
  if [ ! -x "$VENV/bin/python" ]; then
    echo "[omgm] creating $VENV"
    "${OMGM_PYTHON:-python3}" -m venv "$VENV"
  fi
  PY="$VENV/bin/python"
  want="$(cat requirements.txt pyproject.toml scripts/_venv.sh | sha256sum | cut -d' ' -f1)"
  have="$(cat "$VENV/.omgm-installed" 2>/dev/null || true)"
  if [ "$want" != "$have" ]; then
    echo "[omgm] installing dependencies into $VENV (first run: a few minutes)"
    "$PY" -m pip install -q --disable-pip-version-check -r requirements.txt
    # compat: the checkout itself goes on sys.path, so a folder named omgm in the working directory (a clone, say)
    # can never shadow the package as an empty namespace package
    "$PY" -m pip install -q --disable-pip-version-check --no-deps -e . --config-settings editable_mode=compat
    echo "$want" > "$VENV/.omgm-installed"
  fi
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export WANDB_MODE="${WANDB_MODE:-disabled}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
