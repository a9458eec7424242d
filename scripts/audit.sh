#!/usr/bin/env bash
# Checks the application lock (requirements/lock.txt) for known vulnerabilities with pip-audit.
# Every pinned package is looked up exactly as locked (--require-hashes, no resolution), and the
# audit is strict: a package that could not be looked up fails it, so an unreachable database
# can never read as "no known vulnerabilities".
#   bash scripts/audit.sh                 PyPI's vulnerability data (the default service)
#   bash scripts/audit.sh -s osv          OSV instead (any extra flags go to pip-audit)
# Exit status: 0 no known vulnerabilities; 1 vulnerabilities found (listed) or another pip-audit
# error; 2 the vulnerability database could not be reached, so nothing was checked.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
AUDIT=${PIP_AUDIT:-$(command -v pip-audit || true)}
if [ -z "$AUDIT" ]; then  # no pip-audit here: a throwaway venv holds it
  echo "== installing pip-audit into a throwaway venv"
  python3 -m venv "$work/venv"
  "$work/venv/bin/python" -m pip install -q --disable-pip-version-check "pip-audit>=2.7,<3"
  AUDIT="$work/venv/bin/pip-audit"
fi

echo "== pip-audit over requirements/lock.txt"
set +e
"$AUDIT" --strict --disable-pip --require-hashes -r requirements/lock.txt --progress-spinner off "$@" \
  >"$work/out" 2>"$work/err"
rc=$?
set -e
cat "$work/out"
if [ "$rc" -eq 0 ]; then
  exit 0
fi
unreached='ConnectionError|NameResolutionError|Failed to resolve|Max retries exceeded|timed out|Timeout'
unreached+='|Dependency not found on PyPI and could not be audited'
if grep -Eq "$unreached" "$work/err"; then
  echo "audit: NOT DONE, the vulnerability database could not be reached from this machine." >&2
  echo "audit: pip-audit said: $(grep -E "$unreached" "$work/err" | tail -1 | cut -c1-300)" >&2
  if grep -q 'Dependency not found on PyPI' "$work/err"; then
    echo "audit: (a locked package 'not found on PyPI' means the index's JSON API, which carries" >&2
    echo "audit: the vulnerability data, is not served here: only the package files are.)" >&2
  fi
  echo "audit: Nothing was checked: run it where that API, or OSV (-s osv), is reachable." >&2
  exit 2
fi
cat "$work/err" >&2
exit "$rc"
