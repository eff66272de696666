#!/usr/bin/env bash
# Installs the Go command-line tools the tests and benchmarks use, at pinned versions, through
# the Go module proxy. Binaries are built once into a per-user cache and linked into
# .tools/bin (ignored by git), so a fresh clone on the same machine does not rebuild them.
set -euo pipefail
cd "$(dirname "$0")/.."

GRPCURL_VERSION=v1.9.3
GHZ_VERSION=v0.120.0
# The peer test suites of the serving stack (test/peer-suites.test.ts): the Connect conformance
# runner and grpc-go's interop client (the same versions as the protos in third_party/).
CONFORMANCE_VERSION=v1.0.7
GRPC_GO_VERSION=v1.85.0
# The Helm chart's offline checks (test/helm-chart.test.ts): helm lint and helm template.
HELM_VERSION=v3.22.0
# SeaweedFS, the S3-compatible server the registry's S3 artifact store is tested against.
SEAWEEDFS_VERSION=v0.0.0-20261109003541-7506e5f91cd6

cache="${XDG_CACHE_HOME:-$HOME/.cache}/mlmesh/go-tools"
mkdir -p "$cache" .tools/bin
command -v go >/dev/null || { echo "install-tools: the Go toolchain is required (apt-get install golang-go)" >&2; exit 1; }

install() { # name module version [the name go install gives the binary]
  local dir="$cache/$1-$3" built=${4:-$1}
  if [ ! -x "$dir/$1" ]; then
    echo "install-tools: go install $2@$3" >&2
    GOBIN="$dir" GOFLAGS=-mod=mod go install "$2@$3"
    [ "$built" = "$1" ] || mv "$dir/$built" "$dir/$1"
  fi
  ln -sfn "$dir/$1" ".tools/bin/$1"
}

# SeaweedFS's go.mod has a replace directive, which `go install module@version` refuses: it is
# built from a writable copy of the module (a large build: several minutes the first time).
install_weed() {
  local dir="$cache/weed-$SEAWEEDFS_VERSION" src work
  if [ ! -x "$dir/weed" ]; then
    echo "install-tools: building SeaweedFS $SEAWEEDFS_VERSION (weed)" >&2
    src=$(go mod download -json "github.com/seaweedfs/seaweedfs@$SEAWEEDFS_VERSION" | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
    work=$(mktemp -d)
    cp -r "$src/." "$work/"
    chmod -R u+w "$work"
    (cd "$work" && go build -o "$dir/weed" ./weed)
    rm -rf "$work"
  fi
  ln -sfn "$dir/weed" .tools/bin/weed
}

install grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl "$GRPCURL_VERSION" &
grpcurl_job=$!
install ghz github.com/bojand/ghz/cmd/ghz "$GHZ_VERSION" &
ghz_job=$!
install connectconformance connectrpc.com/conformance/cmd/connectconformance "$CONFORMANCE_VERSION" &
conformance_job=$!
install grpc-interop-client google.golang.org/grpc/interop/client "$GRPC_GO_VERSION" client &
interop_job=$!
install helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" &
helm_job=$!
install_weed &
weed_job=$!
wait "$grpcurl_job"
wait "$ghz_job"
wait "$conformance_job"
wait "$interop_job"
wait "$helm_job"
wait "$weed_job"
