#!/usr/bin/env bash
# Run the test suite (tiny random models, no GPU, no downloads). Extra arguments go to pytest.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
exec "$PY" -m pytest "$@"
