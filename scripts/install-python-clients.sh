#!/usr/bin/env bash
# Installs the Python clients the tests use (tritonclient for the Open Inference Protocol) into
# a private virtual environment, .tools/venv-clients, from PyPI at the pinned versions of
# test/python/requirements.txt. Reinstalls only when that file changed.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.tools/venv-clients
if [ ! -x "$venv/bin/python" ] || ! cmp -s test/python/requirements.txt "$venv/requirements.txt"; then
  echo "install-python-clients: pip install -r test/python/requirements.txt into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r test/python/requirements.txt
  cp test/python/requirements.txt "$venv/requirements.txt"
fi
