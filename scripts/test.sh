#!/usr/bin/env bash
# `npm test`: installs what the tests need (npm packages, grpcurl and ghz), then runs every
# suite with vitest. The suites start real servers on loopback ports; nothing is mocked.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
scripts/install-tools.sh
exec npx vitest run "$@"
