#!/usr/bin/env bash
# The one test command: makes .venv, installs Pitstop with its dev extras, then runs
# lint, format check, type check and the whole test suite. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${PITSTOP_VENV:-.venv}
PYTHON=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
echo "== installing pitstop[dev]"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[dev]'

export OMP_WAIT_POLICY=PASSIVE
echo "== ruff"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
echo "== mypy"
"$VENV/bin/mypy"
echo "== pytest"
set +e
"$VENV/bin/pytest" "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
