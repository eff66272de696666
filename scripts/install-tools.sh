#!/usr/bin/env bash
# Installs the Go command-line tools the tests and benchmarks use, at pinned versions, through
# the Go module proxy, into .tools/bin (ignored by git). Already-installed versions are kept.
set -euo pipefail
cd "$(dirname "$0")/.."

GRPCURL_VERSION=v1.9.3
GHZ_VERSION=v0.120.0

bin="$PWD/.tools/bin"
mkdir -p "$bin"
command -v go >/dev/null || { echo "install-tools: Go is required (https://go.dev/dl, or apt-get install golang)" >&2; exit 1; }

install() { # name module version
  local stamp="$bin/.$1-$3"
  if [ -x "$bin/$1" ] && [ -f "$stamp" ]; then return; fi
  echo "install-tools: go install $2@$3" >&2
  GOBIN="$bin" GOFLAGS=-mod=mod go install "$2@$3"
  rm -f "$bin/.$1-"*
  touch "$stamp"
}

install grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl "$GRPCURL_VERSION" &
install ghz github.com/bojand/ghz/cmd/ghz "$GHZ_VERSION" &
wait %1 && wait %2
