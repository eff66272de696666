#!/usr/bin/env bash
# Builds the ResNet-50 model (the architecture with RANDOM weights: pretrained weights cannot be
# downloaded here) into a model repository, once: about 100 MB, so it is made, not committed.
#   scripts/make-resnet50.sh [repository]      (default .cache/models; writes resnet50/1/)
# Uses the training venv (.venv-train, models/requirements.txt) that scripts/train-models.sh uses.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-.cache/models}
if [ -f "$out/resnet50/1/model.onnx" ] && [ -f "$out/resnet50/1/metadata.json" ]; then
  exit 0
fi
scripts/ensure-venv.sh .venv-train models/requirements.txt
.venv-train/bin/python models/train_tensor_models.py --resnet50-out "$out"
