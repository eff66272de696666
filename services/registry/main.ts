import { join } from "node:path";
import { ModelRegistryService } from "../../gen/mlmesh/registry/v1/registry_pb.js";
import type { Env } from "../runtime/env/variables.js";
import { ServingStatus } from "../runtime/serve/health.js";
import { serve } from "../runtime/serve/registration.js";
import { runService } from "../runtime/serve/run-service.js";
import { startServer } from "../runtime/serve/server.js";
import { LocalArtifactStore } from "./artifact-store.js";
import { BlobCollector } from "./blob-collector.js";
import { S3ArtifactStore } from "./s3-artifact-store.js";
import { loadRegistryConfig } from "./config.js";
import { openRegistryDatabase } from "./database.js";
import { EventFeed } from "./event-feed.js";
import { monitorTrafficReader, RolloutController } from "./rollouts.js";
import { createRegistryService } from "./service.js";
import { WebhookDispatcher } from "./webhooks.js";
import { RegistryStore } from "./store.js";

/** How often watch streams look for events committed by other registry processes. */
const eventPollMs = 250;

/**
 * Runs the ModelRegistry: opens DATABASE_URL (default: a SQLite file under data/), applies
 * pending migrations, opens the artifact store (ARTIFACT_DIR), then serves. SERVING once the
 * database answered and is migrated.
 */
export function main(env: Env): Promise<void> {
  return runService("registry", env, async ({ config, logger, tracing, gatekeeper, meshCredentials }) => {
    const registryConfig = loadRegistryConfig(env);
    const { db, dialect, applied } = await openRegistryDatabase(registryConfig.databaseUrl, registryConfig.sqliteBusyTimeoutMs);
    // With ARTIFACT_S3_BUCKET the blobs live in the bucket every replica shares, staged in ARTIFACT_DIR.
    const s3 = registryConfig.artifactS3;
    const artifacts = s3
      ? await new S3ArtifactStore({ ...s3, stagingDir: join(registryConfig.artifactDir, "staging") }).open()
      : await new LocalArtifactStore(registryConfig.artifactDir).open();
    logger.info(
      {
        dialect,
        database: redact(registryConfig.databaseUrl),
        migrationsApplied: applied,
        artifacts: s3 ? `s3://${s3.bucket}/${s3.prefix}${s3.endpoint ? ` at ${s3.endpoint}` : ""}` : registryConfig.artifactDir,
      },
      "database and artifact store ready",
    );
    const store = new RegistryStore(db, dialect);
    const draining = new AbortController();
    const feed = new EventFeed(eventPollMs);
    const webhooks = new WebhookDispatcher(db, store, registryConfig.webhooks, logger);
    const changed = () => {
      feed.notify();
      webhooks.notify();
    };
    const traffic = registryConfig.monitorAddress === undefined ? undefined : monitorTrafficReader(registryConfig.monitorAddress, meshCredentials);
    const rollouts = new RolloutController(db, store, traffic, logger, changed);
    const service = createRegistryService(store, {
      artifacts,
      maxUploadBytes: registryConfig.artifactMaxBytes,
      feed,
      changed,
      rollouts,
      webhooks,
      stopping: () => draining.signal,
    });
    const server = await startServer({ config, logger, tracing, gatekeeper, services: [serve(ModelRegistryService, service)] });
    server.stopping.addEventListener("abort", () => draining.abort(), { once: true });
    server.health.setAll(ServingStatus.SERVING);
    const controller = rollouts.run(draining.signal, registryConfig.rolloutTickMs);
    const dispatcher = webhooks.run(draining.signal);
    const collector = new BlobCollector(artifacts, () => store.referencedBlobs(), registryConfig.blobCollection, logger);
    collector.start();
    return {
      server,
      async close() {
        await Promise.all([controller, dispatcher, collector.stop()]);
        await db.$disconnect();
      },
    };
  });
}

/** The URL without its password, for logs. */
function redact(url: string): string {
  return url.replace(/\/\/([^:/@]+):[^@]*@/, "//$1:***@");
}
