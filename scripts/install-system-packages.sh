#!/usr/bin/env bash
# Installs the Debian packages the tests use and the base image lacks, in one apt-get call:
#   docker-compose  a real compose parser for docker-compose.yml (no Docker engine is needed)
#   chromium        the headless browser the web console's tests drive with playwright-core
#   prometheus      Prometheus 2.42 with promtool: scrapes the services and checks the rules
#   postgresql      the second database every storage test runs on
#   openssl, curl   the security tests make a development CA and call the services over HTTPS
#   redis-server    the shared prediction cache the Predictor replicas use in the tests
# Packages' own services are not started by apt (policy-rc.d): the tests start what they need.
set -euo pipefail
missing=()
command -v docker-compose >/dev/null || missing+=(docker-compose)
[ -x /usr/bin/chromium ] || missing+=(chromium)
{ [ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ]; } || missing+=(prometheus)
command -v pg_lsclusters >/dev/null || missing+=(postgresql)
command -v openssl >/dev/null || missing+=(openssl)
command -v curl >/dev/null || missing+=(curl)
command -v redis-server >/dev/null || missing+=(redis-server)
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "install-system-packages: apt-get install ${missing[*]}" >&2
# No daemon starts at install time (exit 101 = "action forbidden"); a policy already there is kept.
policy=/usr/sbin/policy-rc.d
added_policy=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
  $sudo chmod +x "$policy"
  added_policy=1
fi
trap '[ -z "$added_policy" ] || $sudo rm -f "$policy"' EXIT
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
