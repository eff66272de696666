#!/usr/bin/env bash
# Makes a local PostgreSQL server available for the tests: installs Debian's postgresql package
# if needed, starts its cluster, and ensures a login role "mlmesh" (password "mlmesh") that may
# create databases. Prints the admin URL the tests create their throw-away databases with.
set -euo pipefail
# Only the URL goes to stdout (the caller captures it): everything the tools print goes to
# stderr. pg_ctlcluster, for one, prints "Removed stale pid file." on stdout after an unclean stop.
# (A function redirected as a whole, not `exec 3>&1`: the server would inherit fd 3 and hold the
# caller's $(...) open for as long as it runs.)
start_postgres() {
  sudo="" as_postgres="runuser -u postgres --"
  [ "$(id -u)" -eq 0 ] || { sudo="sudo"; as_postgres="sudo -u postgres"; }
  if ! command -v pg_lsclusters >/dev/null; then
    echo "start-postgres: apt-get install postgresql" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  fi
  read -r version cluster port status _ < <(pg_lsclusters --no-header | head -1)
  if [ -z "${version:-}" ]; then
    version=$(ls /usr/lib/postgresql | sort -V | tail -1)
    $sudo pg_createcluster "$version" main >/dev/null
    read -r version cluster port status _ < <(pg_lsclusters --no-header | head -1)
  fi
  if [ "$status" != "online" ]; then
    $sudo pg_ctlcluster "$version" "$cluster" start
  fi
  $as_postgres psql -q -p "$port" -v ON_ERROR_STOP=1 <<'SQL' >/dev/null
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mlmesh') THEN
    CREATE ROLE mlmesh LOGIN PASSWORD 'mlmesh' CREATEDB;
  END IF;
END $$;
-- The tests drop their databases WITH (FORCE), which also ends an autovacuum worker busy in
-- one; without this role PostgreSQL 15 refuses that ("must be a member of the role whose
-- process is being terminated or member of pg_signal_backend").
GRANT pg_signal_backend TO mlmesh;
SQL
}
start_postgres >&2
echo "postgresql://mlmesh:mlmesh@127.0.0.1:$port/postgres"
