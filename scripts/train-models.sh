#!/usr/bin/env bash
# Retrains the bundled models (models/train.py, then models/train_tensor_models.py) with pinned
# Python packages from PyPI in a private virtual environment (.venv-train, ignored by git). The
# result is deterministic: committed models only change when the training code or the pinned
# packages do.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-venv.sh .venv-train models/requirements.txt
exec .venv-train/bin/python models/train.py "$@"
