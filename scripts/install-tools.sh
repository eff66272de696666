#!/usr/bin/env bash
# Installs the Go command-line tools the tests and benchmarks use, at pinned versions, through
# the Go module proxy. Binaries are built once into a per-user cache and linked into
# .tools/bin (ignored by git), so a fresh clone on the same machine does not rebuild them.
set -euo pipefail
cd "$(dirname "$0")/.."

GRPCURL_VERSION=v1.9.3
GHZ_VERSION=v0.120.0

cache="${XDG_CACHE_HOME:-$HOME/.cache}/mlmesh/go-tools"
mkdir -p "$cache" .tools/bin
command -v go >/dev/null || { echo "install-tools: the Go toolchain is required (apt-get install golang-go)" >&2; exit 1; }

install() { # name module version
  local dir="$cache/$1-$3"
  if [ ! -x "$dir/$1" ]; then
    echo "install-tools: go install $2@$3" >&2
    GOBIN="$dir" GOFLAGS=-mod=mod go install "$2@$3"
  fi
  ln -sfn "$dir/$1" ".tools/bin/$1"
}

install grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl "$GRPCURL_VERSION" &
grpcurl_job=$!
install ghz github.com/bojand/ghz/cmd/ghz "$GHZ_VERSION" &
ghz_job=$!
wait "$grpcurl_job"
wait "$ghz_job"
