#!/usr/bin/env bash
# Copies into the Helm chart the files it ships from elsewhere in the repository (Helm reads only
# files inside a chart): Envoy's configuration and descriptor set, and the alert rules.
# test/helm-chart.test.ts fails when a copy differs from its original.
set -euo pipefail
cd "$(dirname "$0")/.."
files=deploy/helm/mlmesh/files
cp envoy/envoy.yaml envoy/mlmesh.binpb "$files/"
cp monitoring/alerts.yml "$files/"
