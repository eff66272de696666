#!/usr/bin/env bash
# Copies the third-party .proto files mlmesh imports into third_party/, each from the registry
# package that ships it (never retyped), so buf works offline with no Buf Schema Registry:
#   google/api, google/rpc      <- npm google-proto-files        (devDependency, pinned)
#   grpc/health/v1              <- npm grpc-health-check         (devDependency, pinned)
#   grpc/reflection/v1, v1alpha <- npm @grpc/reflection          (devDependency, pinned)
#   buf/validate                <- Maven Central build.buf:protovalidate (jar ships the source)
#   connectrpc/conformance/v1   <- Go module connectrpc.com/conformance (the conformance suite's contract)
#   grpc/testing                <- Go module google.golang.org/grpc: grpc-go ships the interop
#                                  service's descriptors, not its source, so they are printed from
#                                  them (scripts/grpc-testing-protos; no comments survive)
# The last two are only served by the peer test servers (test/peers/).
# Usage: scripts/sync-third-party-protos.sh [--check]   (--check: fail if third_party/ differs)
# The files are then reformatted by `buf format` (layout only) so the workspace is uniform.
set -euo pipefail
cd "$(dirname "$0")/.."

PROTOVALIDATE_VERSION=1.3.0
CONFORMANCE_VERSION=v1.0.7   # also scripts/install-tools.sh
out=third_party
if [ "${1:-}" = "--check" ]; then out=$(mktemp -d); trap 'rm -rf "$out"' EXIT; fi

copy() { mkdir -p "$out/$(dirname "$2")"; cp "$1" "$out/$2"; }

gpf=node_modules/google-proto-files
copy "$gpf/google/api/annotations.proto" google/api/annotations.proto
copy "$gpf/google/api/http.proto" google/api/http.proto
copy "$gpf/google/rpc/code.proto" google/rpc/code.proto
copy "$gpf/google/rpc/error_details.proto" google/rpc/error_details.proto
copy node_modules/grpc-health-check/proto/health/v1/health.proto grpc/health/v1/health.proto
refl=node_modules/@grpc/reflection/build/proto/grpc/reflection
copy "$refl/v1/reflection.proto" grpc/reflection/v1/reflection.proto
copy "$refl/v1alpha/reflection.proto" grpc/reflection/v1alpha/reflection.proto

jar_dir=${MAVEN_REPO:-$HOME/.m2/repository}/build/buf/protovalidate/$PROTOVALIDATE_VERSION
jar=$jar_dir/protovalidate-$PROTOVALIDATE_VERSION.jar
if [ ! -f "$jar" ]; then
  mvn -q dependency:get -Dartifact="build.buf:protovalidate:$PROTOVALIDATE_VERSION" -Dtransitive=false >&2
fi
mkdir -p "$out/buf/validate"
unzip -p "$jar" buf/validate/validate.proto > "$out/buf/validate/validate.proto"

conformance_dir=$(GOFLAGS=-mod=mod go mod download -json "connectrpc.com/conformance@$CONFORMANCE_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
for f in config service server_compat; do
  copy "$conformance_dir/proto/connectrpc/conformance/v1/$f.proto" "connectrpc/conformance/v1/$f.proto"
done
out_dir=$(cd "$out" && pwd)
(cd scripts/grpc-testing-protos && GOFLAGS=-mod=mod go run . "$out_dir")
# Only the interop service and what it imports.
printed=$(cd "$out/grpc/testing" && ls)
[ "$printed" = "$(printf 'empty.proto\nmessages.proto\ntest.proto')" ] || { echo "unexpected grpc/testing files: $printed" >&2; exit 1; }

# Formatted with buf, so `buf format` is clean over the whole workspace (content unchanged).
npx buf format -w "$out" >/dev/null

if [ "$out" != third_party ]; then
  diff -r third_party "$out" >&2 || { echo "third_party/ differs from its registry packages: run $0" >&2; exit 1; }
  echo "third_party/ matches its registry packages"
fi
