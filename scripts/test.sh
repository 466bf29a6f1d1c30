#!/usr/bin/env bash
# Run the test suite (tiny random models, no GPU, no downloads). Extra arguments go to pytest.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
"$PY" -m ruff check omgm tests benchmarks utils scripts     # lint + import order (pyproject.toml)
exec "$PY" -m pytest "$@"
