#!/usr/bin/env bash
# Retrains the bundled iris models (models/train.py) with pinned Python packages from PyPI in a
# private virtual environment (.venv-train, ignored by git). The result is deterministic:
# committed models only change when the training code or the pinned packages do.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-train
if [ ! -x "$venv/bin/python" ] || ! cmp -s models/requirements.txt "$venv/requirements.txt"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r models/requirements.txt
  cp models/requirements.txt "$venv/requirements.txt"
fi
exec "$venv/bin/python" models/train.py "$@"
