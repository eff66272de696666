#!/usr/bin/env bash
# Generates the ModelRegistry's two Prisma clients (PostgreSQL and SQLite) from
# services/registry/prisma/schema.prisma. Committed like gen/; CI checks they are current.
# `prisma generate` insists on a schema engine binary, which cannot be downloaded here, and does
# not use it to generate: point it at a no-op (migrations are ours, see migrations.ts).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=services/registry/prisma
engine=$(mktemp -d)
sqlite_schema="$engine/schema.sqlite.prisma"
trap 'rm -rf "$engine"' EXIT
printf '#!/bin/sh\nexit 0\n' > "$engine/schema-engine"
chmod +x "$engine/schema-engine"
export PRISMA_SCHEMA_ENGINE_BINARY="$engine/schema-engine" PRISMA_HIDE_UPDATE_MESSAGE=1
sed -e 's/provider = "postgresql"/provider = "sqlite"/' \
    -e "s#output              = \"generated/postgresql\"#output              = \"$PWD/$dir/generated/sqlite\"#" \
    "$dir/schema.prisma" > "$sqlite_schema"
rm -rf "$dir/generated"
npx prisma generate --schema "$dir/schema.prisma" >/dev/null
npx prisma generate --schema "$sqlite_schema" >/dev/null
echo "generated $dir/generated/{postgresql,sqlite}"
