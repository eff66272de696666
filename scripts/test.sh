#!/usr/bin/env bash
# `npm test`: installs what the tests need (scripts/install-test-deps.sh: npm packages; grpcurl
# and ghz from the Go module proxy; tritonclient from PyPI in a venv; docker-compose, chromium,
# Prometheus and PostgreSQL from Debian), starts PostgreSQL, then runs every suite with vitest. The suites start real
# servers on loopback ports; nothing is mocked, and a missing tool fails a test, never skips it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
# The services compiled (dist/): every test starts them as `npm start` and the image do.
node scripts/build.mjs
TEST_POSTGRES_URL=$(scripts/start-postgres.sh)
case "$TEST_POSTGRES_URL" in
  *[[:space:]]* | "") echo "scripts/start-postgres.sh printed more than a URL: '$TEST_POSTGRES_URL'" >&2; exit 1 ;;
  postgresql://*) ;;
  *) echo "scripts/start-postgres.sh printed no single PostgreSQL URL: '$TEST_POSTGRES_URL'" >&2; exit 1 ;;
esac
export TEST_POSTGRES_URL
report=$(mktemp)
trap 'rm -f "$report"' EXIT
status=0
npx vitest run --reporter=default --reporter=json --outputFile="$report" "$@" || status=$?
# One plain closing line for CI logs: "N passed, N failed".
node -e 'const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  console.log(`tests: ${r.numPassedTests} passed, ${r.numFailedTests} failed`);' "$report" || true
exit "$status"
