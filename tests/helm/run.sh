#!/usr/bin/env bash
# Lint, render and check the Helm chart (helm/introspectd) with Helm's own engine,
# through helm-python-sdk: no helm binary, no cluster, no network after the first
# install. Creates the virtual environment ${INTROSPECTD_HELM_VENV:-.venv-helm} (relative
# paths are taken from the repository root) on first use. Extra arguments go to pytest.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${INTROSPECTD_HELM_VENV:-.venv-helm}"
case "$VENV" in
  /*) ;;
  *) VENV="$ROOT/$VENV" ;;
esac
PYTHON="${PYTHON:-python3}"
REQUIREMENTS=(helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 pytest==9.2.0 pyyaml)

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "tests/helm/run.sh: needs Python 3.11 or newer (tomllib); $PYTHON is $("$PYTHON" --version 2>&1)" >&2
  exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "tests/helm/run.sh: creating $VENV" >&2
  "$PYTHON" -m venv "$VENV"
fi

# Reinstall when the pins change or an earlier install did not finish.
STAMP="$VENV/.introspectd-helm-requirements"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "${REQUIREMENTS[*]}" ]; then
  echo "tests/helm/run.sh: installing ${REQUIREMENTS[*]}" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${REQUIREMENTS[@]}"
  printf '%s\n' "${REQUIREMENTS[*]}" > "$STAMP"
fi

cd "$ROOT"
exec "$VENV/bin/python" -m pytest -p no:cacheprovider -q "$@" tests/helm
