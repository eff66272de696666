#!/usr/bin/env bash
# Installs the Python clients the tests use (tritonclient for the Open Inference Protocol) into
# a private virtual environment, .tools/venv-clients, from PyPI at the pinned versions of
# test/python/requirements.txt. Reinstalls only when that file changed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-venv.sh .tools/venv-clients test/python/requirements.txt
