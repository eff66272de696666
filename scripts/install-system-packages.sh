#!/usr/bin/env bash
# Installs the Debian packages the tests use and the base image lacks: docker-compose (a real
# compose parser for docker-compose.yml; no Docker engine is needed or started), chromium
# (the headless browser the web console's tests drive with playwright-core), and openssl and
# curl (the security tests make a development CA and call the services over HTTPS).
set -euo pipefail
missing=()
command -v docker-compose >/dev/null || missing+=(docker-compose)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v openssl >/dev/null || missing+=(openssl)
command -v curl >/dev/null || missing+=(curl)
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "install-system-packages: apt-get install ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
