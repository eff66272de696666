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
  venv=.tools/venv-mlserver
  if [ ! -x "$venv/bin/mlserver" ] || ! cmp -s bench/mlserver/requirements.txt "$venv/requirements.txt"; then
    echo "install-bench-tools: pip install -r bench/mlserver/requirements.txt into $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r bench/mlserver/requirements.txt
    cp bench/mlserver/requirements.txt "$venv/requirements.txt"
  fi
fi
