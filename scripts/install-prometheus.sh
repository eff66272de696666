#!/usr/bin/env bash
# Links Prometheus and promtool into .tools/bin. Debian's package (2.42, installed in seconds by
# scripts/install-system-packages.sh) serves the tests: scraping, the HTTP query API, `promtool
# check` and `promtool test rules`. Where the machine has no such package, the fallback builds
# them from their Go module (~12 minutes on 2 cores, cached per user): `go install` refuses the
# module (its go.mod has exclude directives), so it is downloaded and built in place.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .tools/bin
if [ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ]; then
  ln -sfn /usr/bin/prometheus .tools/bin/prometheus
  ln -sfn /usr/bin/promtool .tools/bin/promtool
  exit 0
fi
PROMETHEUS_VERSION=v0.307.3
cache="${XDG_CACHE_HOME:-$HOME/.cache}/mlmesh/go-tools/prometheus-$PROMETHEUS_VERSION"
if [ ! -x "$cache/prometheus" ] || [ ! -x "$cache/promtool" ]; then
  command -v go >/dev/null || { echo "install-prometheus: the Go toolchain is required" >&2; exit 1; }
  echo "install-prometheus: no Debian prometheus package; building $PROMETHEUS_VERSION from the Go module proxy (~12 min the first time)" >&2
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
