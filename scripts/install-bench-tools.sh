#!/usr/bin/env bash
# Installs what the benchmarks need beyond the tests' tools: h2load (Debian nghttp2-client) and
# wrk, low-overhead load generators; and, with --mlserver, Seldon MLServer from PyPI in a
# private venv (.tools/venv-mlserver) at the pinned versions of bench/mlserver/requirements.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-tools.sh
missing=()
command -v h2load >/dev/null || missing+=(nghttp2-client)
command -v wrk >/dev/null || missing+=(wrk)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "install-bench-tools: apt-get install ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ "${1:-}" = "--mlserver" ]; then
  scripts/ensure-venv.sh .tools/venv-mlserver bench/mlserver/requirements.txt
fi
