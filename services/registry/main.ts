import { ModelRegistryService } from "../../gen/mlmesh/registry/v1/registry_pb.js";
import { ConfigError, envSqliteBusyTimeoutMs, envString, type Env } from "../runtime/config.js";
import { ServingStatus } from "../runtime/health.js";
import { serve } from "../runtime/instrument.js";
import { runService } from "../runtime/run-service.js";
import { startServer } from "../runtime/server.js";
import { dialectOf } from "../runtime/storage/migrations.js";
import { defaultDatabaseUrl, openRegistryDatabase } from "./database.js";
import { createRegistryService } from "./service.js";
import { RegistryStore } from "./store.js";

/**
 * Runs the ModelRegistry: opens DATABASE_URL (default: a SQLite file under data/), applies
 * pending migrations, then serves. SERVING once the database answered and is migrated.
 */
export function main(env: Env): Promise<void> {
  return runService("registry", env, async ({ config, logger }) => {
    const url = envString(env, "DATABASE_URL", defaultDatabaseUrl);
    if (dialectOf(url) === undefined) {
      throw new ConfigError("DATABASE_URL", "must be file:<path> (SQLite) or postgresql://... (PostgreSQL)");
    }
    const { db, dialect, applied } = await openRegistryDatabase(url, envSqliteBusyTimeoutMs(env));
    logger.info({ dialect, database: redact(url), migrationsApplied: applied }, "database ready");
    const store = new RegistryStore(db, dialect);
    const server = await startServer({ config, logger, services: [serve(ModelRegistryService, createRegistryService(store))] });
    server.health.setAll(ServingStatus.SERVING);
    return { server, close: () => db.$disconnect() };
  });
}

/** The URL without its password, for logs. */
function redact(url: string): string {
  return url.replace(/\/\/([^:/@]+):[^@]*@/, "//$1:***@");
}
