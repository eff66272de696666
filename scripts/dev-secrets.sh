#!/usr/bin/env bash
# Development secrets for `docker compose up` (compose runs with TLS and authentication on):
#   scripts/dev-secrets.sh            writes deploy/dev-secrets/ (kept out of git; rerun: no-op)
# - a development CA with server and client certificates (scripts/dev-ca.sh);
# - bearer tokens, one file each: admin.token, writer.token, reader.token for you, and one per
#   service for its calls to the others (least privilege: the Predictor, the Proxy and the
#   batch job are writers, for ReportServing and the monitor's IngestRecords; the monitor, the
#   console and Prometheus read; the one-shot bootstrap is an admin);
# - tokens: the services' AUTH_TOKENS_FILE, holding only the tokens' SHA-256 hashes.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=deploy/dev-secrets
scripts/dev-ca.sh "$dir"
cd "$dir"
[ -f tokens ] && exit 0
line() { # name role
  local token
  token="mlm_$(openssl rand -base64 32 | tr '+/' '-_' | tr -d '=')"
  printf '%s\n' "$token" > "$1.token"
  printf 'sha256:%s %s %s\n' "$(printf '%s' "$token" | sha256sum | cut -d' ' -f1)" "$2" "$1"
}
{
  echo "# AUTH_TOKENS_FILE made by scripts/dev-secrets.sh: sha256:<hash> <role> <name>"
  line admin admin
  line writer writer
  line reader reader
  line mesh-predictor writer
  # The Proxy and the batch service write prediction records to the monitor (IngestRecords).
  line mesh-proxy writer
  line mesh-batch writer
  line mesh-monitor reader
  # The registry reads canary rollouts' figures from the monitor (GetTrafficStats).
  line mesh-registry reader
  line mesh-console reader
  line prometheus reader
  line bootstrap admin
} > tokens
chmod 600 ./*.token
echo "dev-secrets: tokens in $dir (yours: admin.token, writer.token, reader.token)" >&2
