#!/usr/bin/env bash
# Regenerates the hash-pinned lock files from pyproject.toml, for Python 3.11 on Linux x86_64:
#   requirements/lock.txt        the platform (what `pip install '.[server]'` needs; the Dockerfile's)
#   requirements/lock-agent.txt  a device's agent (what `pip install '.[agent]'` needs)
#   requirements/lock-dev.txt    everything with the dev extras (what .ci/run installs)
# All three also pin pyproject's build-system requires (setuptools, wheel), so Pitstop itself can be
# built from the lock with --no-build-isolation and nothing is fetched without a hash.
# The platform and agent locks are resolved within the dev lock, so they never disagree on a version.
# Run it after changing a dependency range in pyproject.toml, and commit the four files.
#   bash scripts/lock.sh              newest versions the ranges allow
#   bash scripts/lock.sh --upgrade-package fastapi   (any extra flags go to `uv pip compile`)
set -euo pipefail
cd "$(dirname "$0")/.."

UV=${UV:-$(command -v uv || true)}
if [ -z "$UV" ]; then  # no uv here: a throwaway venv holds it
  tools=$(mktemp -d)
  trap 'rm -rf "$tools"' EXIT
  echo "== installing uv into a throwaway venv"
  python3 -m venv "$tools/venv"
  "$tools/venv/bin/python" -m pip install -q --disable-pip-version-check "uv>=0.5"
  UV="$tools/venv/bin/uv"
fi

python3 - > requirements/build.in <<'PY'
import tomllib
with open("pyproject.toml", "rb") as f:
    requires = tomllib.load(f)["build-system"]["requires"]
print("# pyproject.toml's build-system requires (written by scripts/lock.sh)")
print("\n".join(requires))
PY

compile() {
  "$UV" pip compile --quiet --generate-hashes --python-version 3.11 \
    --python-platform x86_64-manylinux_2_28 --custom-compile-command "bash scripts/lock.sh" "$@"
}
echo "== requirements/lock-dev.txt"
compile pyproject.toml requirements/build.in --extra dev -o requirements/lock-dev.txt "${@}"
echo "== requirements/lock.txt"
compile pyproject.toml requirements/build.in --extra server -c requirements/lock-dev.txt \
  -o requirements/lock.txt "${@}"
echo "== requirements/lock-agent.txt"
compile pyproject.toml requirements/build.in --extra agent -c requirements/lock-dev.txt \
  -o requirements/lock-agent.txt "${@}"
for lock in lock.txt lock-agent.txt lock-dev.txt; do
  echo "== $(grep -c '==' "requirements/$lock") pinned in $lock"
done
