#!/usr/bin/env bash
# Generates the two Prisma clients (PostgreSQL and SQLite) of each Prisma service from its
# services/<svc>/prisma/schema.prisma. Committed like gen/; CI checks they are current.
# `prisma generate` insists on a schema engine binary, which cannot be downloaded here, and does
# not use it to generate: point it at a no-op (migrations are ours: services/runtime/storage/migrations.ts).
set -euo pipefail
cd "$(dirname "$0")/.."
engine=$(mktemp -d)
trap 'rm -rf "$engine"' EXIT
printf '#!/bin/sh\nexit 0\n' > "$engine/schema-engine"
chmod +x "$engine/schema-engine"
export PRISMA_SCHEMA_ENGINE_BINARY="$engine/schema-engine" PRISMA_HIDE_UPDATE_MESSAGE=1
for schema in services/*/prisma/schema.prisma; do
  dir=$(dirname "$schema")
  # Beside the original, with a relative output: the generated client embeds the schema text,
  # which must not depend on where the checkout is.
  sqlite_schema="$dir/schema.sqlite.prisma"
  sed -e 's/provider = "postgresql"/provider = "sqlite"/' \
      -e 's#output              = "generated/postgresql"#output              = "generated/sqlite"#' \
      "$dir/schema.prisma" > "$sqlite_schema"
  rm -rf "$dir/generated"
  npx prisma generate --schema "$dir/schema.prisma" >/dev/null
  npx prisma generate --schema "$sqlite_schema" >/dev/null
  rm "$sqlite_schema"
  echo "generated $dir/generated/{postgresql,sqlite}"
done
