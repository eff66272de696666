#!/usr/bin/env bash
# Keeps a private Python virtual environment in step with a pinned requirements file:
#   scripts/ensure-venv.sh <venv dir> <requirements.txt>
# (Re)creates it only when it is missing or the file changed since it was installed.
set -euo pipefail
venv=$1
requirements=$2
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$requirements" "$venv/requirements.txt"; then
  echo "ensure-venv: pip install -r $requirements into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$venv/requirements.txt"
fi
