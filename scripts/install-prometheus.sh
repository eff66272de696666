#!/usr/bin/env bash
# Builds Prometheus and promtool from their Go module (the project's own pinned version) and
# links them into .tools/bin. `go install` refuses the module (its go.mod has exclude
# directives), so the module is downloaded and built in place. The binaries are cached per user
# (~12 minutes to build on a busy 2-core machine; instant afterwards).
set -euo pipefail
cd "$(dirname "$0")/.."
PROMETHEUS_VERSION=v0.307.3
cache="${XDG_CACHE_HOME:-$HOME/.cache}/mlmesh/go-tools/prometheus-$PROMETHEUS_VERSION"
mkdir -p .tools/bin
if [ ! -x "$cache/prometheus" ] || [ ! -x "$cache/promtool" ]; then
  command -v go >/dev/null || { echo "install-prometheus: the Go toolchain is required" >&2; exit 1; }
  echo "install-prometheus: building prometheus and promtool $PROMETHEUS_VERSION from the Go module proxy (~12 min the first time)" >&2
  module=$(GOFLAGS=-mod=mod go mod download -json "github.com/prometheus/prometheus@$PROMETHEUS_VERSION" | python3 -c "import json,sys; print(json.load(sys.stdin)['Dir'])")
  work=$(mktemp -d)
  trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
  cp -r "$module/." "$work"
  chmod -R u+w "$work"
  mkdir -p "$cache.partial"
  (cd "$work" && go build -o "$cache.partial/prometheus" ./cmd/prometheus && go build -o "$cache.partial/promtool" ./cmd/promtool)
  rm -rf "$cache" && mv "$cache.partial" "$cache"
fi
ln -sfn "$cache/prometheus" .tools/bin/prometheus
ln -sfn "$cache/promtool" .tools/bin/promtool
