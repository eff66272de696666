#!/usr/bin/env bash
# Everything the tests need, installed side by side (each step is idempotent and fast when
# already done): npm packages, Debian packages (one apt-get call), grpcurl and ghz from the Go
# module proxy, tritonclient in a venv, the ResNet-50 test model (random weights, built with the
# training venv); then Prometheus is linked. Each step's output goes to
# stderr prefixed with its name; any failure fails the whole, after all steps have ended.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
pids=() names=()
step() { # name command...
  local name=$1; shift
  ( "$@" 2>&1 | sed -u "s/^/[$name] /" >&2; exit "${PIPESTATUS[0]}" ) &
  pids+=($!) names+=("$name")
}
step npm scripts/ensure-deps.sh
step apt scripts/install-system-packages.sh
step go scripts/install-tools.sh
step python scripts/install-python-clients.sh
step resnet50 scripts/make-resnet50.sh
failed=()
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || failed+=("${names[$i]}")
done
[ ${#failed[@]} -eq 0 ] || { echo "install-test-deps: failed: ${failed[*]}" >&2; exit 1; }
scripts/install-prometheus.sh
echo "install-test-deps: ready in $((SECONDS - started)) s" >&2
