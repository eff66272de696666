// Acknowledged writes are stored (issue 9): several clients write while the batch job runs,
// on SQLite and PostgreSQL, with real processes; afterwards the rows are counted in the
// database itself, not through the service. And a database held busy or cut in the middle of
// a transaction makes the call fail, write nothing, and leave the next call working.
import Database from "better-sqlite3";
import pg from "pg";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BatchJobService } from "../gen/mlmesh/batch/v1/batch_pb.js";
import { ModelRegistryService } from "../gen/mlmesh/registry/v1/registry_pb.js";
import { clientFor, failure } from "./support/clients.js";
import { freshDatabase, queryDatabase } from "./support/databases.js";
import { startService, type ServiceProcess } from "./support/service-process.js";

const dialects = ["sqlite", "postgresql"] as const;

/** 1,000 items; every 100th has 3 values, which the model refuses (the item ends FAILED). */
const itemsToRegister = Array.from({ length: 1000 }, (_, i) => ({ values: i % 100 === 99 ? [5.9, 3.0, 4.2] : [5.1, 3.5, 1.4, 0.2] }));

let predictor: ServiceProcess;
beforeAll(async () => {
  predictor = await startService("predictor");
});
afterAll(async () => {
  await predictor?.stop();
});

describe.each(dialects)("acknowledged writes on %s", (dialect) => {
  it("stores every item four concurrent clients had acknowledged, once, while the job runs every second in the service and a second worker", async () => {
    const database = await freshDatabase(dialect);
    const env = { BATCH_DATABASE_URL: database.url, PREDICTOR_ADDRESS: predictor.address, BATCH_INTERVAL: "1s" };
    const batch = await startService("batch", env);
    const worker = await startService("batch-worker", env);
    try {
      const client = clientFor(BatchJobService, batch.baseUrl, "grpc");
      const acknowledged = new Set<string>();
      const refusable = new Set<string>();
      const refusals: string[] = [];
      const until = Date.now() + 12_000;
      await Promise.all(
        [0, 1, 2, 3].map(async () => {
          while (Date.now() < until) {
            try {
              const { items } = await client.registerItems({ items: itemsToRegister });
              for (const item of items) {
                acknowledged.add(item.id);
                if (item.values.length !== 4) refusable.add(item.id);
              }
            } catch (err) {
              // A busy database may refuse a call (it then wrote nothing: counted below), never fail it otherwise.
              const error = ConnectError.from(err);
              expect(error.code, error.message).toBe(Code.Unavailable);
              refusals.push(error.rawMessage);
            }
          }
        }),
      );
      expect(acknowledged.size).toBeGreaterThanOrEqual(20_000);
      expect(refusals.length).toBeLessThan(acknowledged.size / 1000 / 10);
      await expect.poll(async () => Number((await client.getJobStatus({})).pendingItems), { timeout: 120_000, interval: 500 }).toBe(0);

      expect(await batch.stop()).toBe(0);
      expect(await worker.stop()).toBe(0);
      const rows = await queryDatabase<{ id: string; state: string }>(database.url, `SELECT "id", "state" FROM "batch_items"`);
      expect(rows.length).toBe(acknowledged.size); // once each, and refused calls wrote nothing
      expect(rows.filter((r) => !acknowledged.has(r.id))).toEqual([]);
      const wrongState = rows.filter((r) => r.state !== (refusable.has(r.id) ? "FAILED" : "PREDICTED"));
      expect(wrongState).toEqual([]);

      // No scheduled run may have died: bree reports a worker thread that exited with an error.
      const logs = [...batch.logs, ...worker.logs].map((l) => JSON.stringify(l));
      expect(logs.filter((l) => /exited with code|batch job failed|could not start|record could not be stored/.test(l))).toEqual([]);
    } finally {
      await batch.stop();
      await worker.stop();
      await database.drop();
    }
  }, 180_000);

  it("keeps every acknowledged registry write from concurrent clients: experiments, alias moves, tags", async () => {
    const database = await freshDatabase(dialect);
    const registry = await startService("registry", { DATABASE_URL: database.url });
    try {
      const client = clientFor(ModelRegistryService, registry.baseUrl, "grpc");
      const { project } = await client.createProject({ name: "durability" });
      const { model } = await client.createModel({ projectId: project!.id, name: "m" });
      const modelId = model!.id;
      for (let i = 0; i < 3; i++) await client.createModelVersion({ modelId, sourceUri: `file:///v${i + 1}` });

      const experiments = new Set<string>();
      const aliasMoves: number[] = [];
      const tagKeys = new Set<string>();
      await Promise.all(
        Array.from({ length: 6 }, async (_, c) => {
          for (let i = 0; i < 40; i++) {
            const { experiment } = await client.createExperiment({ modelId, modelVersionId: `c${c}`, evaluations: { accuracy: i / 40 } });
            experiments.add(experiment!.id);
            const version = ((c + i) % 3) + 1;
            await client.setModelVersionAlias({ modelId, alias: "production", version });
            aliasMoves.push(version);
            const key = `client${c}_${i}`;
            await client.setModelTag({ modelId, key, value: String(i) });
            tagKeys.add(key);
          }
        }),
      );
      expect(await registry.stop()).toBe(0);

      const stored = await queryDatabase<{ id: string }>(database.url, `SELECT "id" FROM "experiments"`);
      expect(stored.map((r) => r.id).sort()).toEqual([...experiments].sort());
      const aliases = await queryDatabase<{ version: number }>(
        database.url,
        `SELECT v."version" FROM "model_aliases" a JOIN "model_versions" v ON v."id" = a."version_id" WHERE a."alias" = 'production'`,
      );
      expect(aliases).toHaveLength(1);
      expect(aliasMoves).toContain(Number(aliases[0].version));
      // Concurrent tag changes of different keys all survive: none started from stale tags.
      const [{ tags }] = await queryDatabase<{ tags: unknown }>(database.url, `SELECT "tags" FROM "models"`);
      const storedTags = (typeof tags === "string" ? JSON.parse(tags) : tags) as Record<string, string>;
      expect(Object.keys(storedTags).sort()).toEqual([...tagKeys].sort());
    } finally {
      await registry.stop();
      await database.drop();
    }
  }, 120_000);
});

describe("a storage failure in the middle of a call", () => {
  it("SQLite held by another connection past the busy timeout: UNAVAILABLE, nothing written, reads still served, the next call commits", async () => {
    const database = await freshDatabase("sqlite");
    const env = { BATCH_DATABASE_URL: database.url, PREDICTOR_ADDRESS: predictor.address, BATCH_RUN_JOB_IN_SERVICE: "false", SQLITE_BUSY_TIMEOUT: "400ms" };
    const batch = await startService("batch", env);
    const registry = await startService("registry", { DATABASE_URL: database.url.replace("test.db", "registry.db"), SQLITE_BUSY_TIMEOUT: "400ms" });
    try {
      const items = clientFor(BatchJobService, batch.baseUrl, "grpc");
      const models = clientFor(ModelRegistryService, registry.baseUrl, "grpc");
      const { project } = await models.createProject({ name: "busy" });
      const { model } = await models.createModel({ projectId: project!.id, name: "m" });
      await models.createModelVersion({ modelId: model!.id, sourceUri: "file:///v1" });

      // Another process's writer holds each database's write lock.
      const holders = [new Database(database.url.slice("file:".length)), new Database(database.url.slice("file:".length).replace("test.db", "registry.db"))];
      for (const holder of holders) holder.exec("BEGIN IMMEDIATE");
      const started = Date.now();
      const refused = await failure(items.registerItems({ items: itemsToRegister }));
      expect(refused.code).toBe(Code.Unavailable);
      expect(refused.rawMessage).toBe("the batch database is busy (locked by another writer); retry later");
      expect(Date.now() - started).toBeGreaterThanOrEqual(400);
      // The service did not block while it waited: reads are answered meanwhile.
      const [late, status] = await Promise.all([failure(items.registerItems({ items: itemsToRegister })), items.getJobStatus({})]);
      expect(late.code).toBe(Code.Unavailable);
      expect(status.pendingItems).toBe(0n);
      for (const call of [
        () => models.createExperiment({ modelId: model!.id }),
        () => models.setModelVersionAlias({ modelId: model!.id, alias: "production", version: 1 }),
        () => models.setModelTag({ modelId: model!.id, key: "k", value: "v" }),
        () => models.createModelVersion({ modelId: model!.id, sourceUri: "file:///v2" }),
      ]) {
        const error = await failure(call());
        expect(error.code, error.message).toBe(Code.Unavailable);
        expect(error.rawMessage).toBe("the registry database is busy (locked by another writer); retry later");
      }
      for (const holder of holders) {
        holder.exec("ROLLBACK");
        holder.close();
      }

      const { items: stored } = await items.registerItems({ items: itemsToRegister.slice(0, 10) });
      await models.setModelVersionAlias({ modelId: model!.id, alias: "production", version: 1 });
      expect(await batch.stop()).toBe(0);
      expect(await registry.stop()).toBe(0);
      const rows = await queryDatabase<{ id: string }>(database.url, `SELECT "id" FROM "batch_items"`);
      expect(rows.map((r) => r.id).sort()).toEqual(stored.map((i) => i.id).sort());
      const registryUrl = database.url.replace("test.db", "registry.db");
      expect(await queryDatabase(registryUrl, `SELECT "id" FROM "experiments"`)).toEqual([]);
      expect(await queryDatabase(registryUrl, `SELECT "version" FROM "model_versions"`)).toEqual([{ version: 1 }]);
      expect(await queryDatabase(registryUrl, `SELECT "alias" FROM "model_aliases"`)).toEqual([{ alias: "production" }]);
      expect(await queryDatabase(registryUrl, `SELECT "tags" FROM "models"`)).toEqual([{ tags: "{}" }]);
    } finally {
      await batch.stop();
      await registry.stop();
      await database.drop();
    }
  }, 60_000);

  it("PostgreSQL connection killed inside a transaction: UNAVAILABLE, nothing written, the next call commits on a new connection", async () => {
    const database = await freshDatabase("postgresql");
    const registry = await startService("registry", { DATABASE_URL: database.url });
    const admin = new pg.Client({ connectionString: database.url });
    await admin.connect();
    try {
      const models = clientFor(ModelRegistryService, registry.baseUrl, "grpc");
      const { project } = await models.createProject({ name: "cut" });
      const modelId = (await models.createModel({ projectId: project!.id, name: "m" })).model!.id;

      // The test holds the model's row; SetModelTag's transaction begins, then waits for it.
      await admin.query("BEGIN");
      await admin.query(`SELECT 1 FROM "models" WHERE "id" = $1 FOR UPDATE`, [modelId]);
      const call = failure(models.setModelTag({ modelId, key: "stage", value: "lost" }));
      await expect
        .poll(async () => (await admin.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`)).rows[0].n)
        .toBe(1);
      // Its connection dies mid-transaction.
      await admin.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`);
      const error = await call;
      expect(error.code, error.message).toBe(Code.Unavailable);
      expect(error.rawMessage).toBe("the registry database is unavailable; retry later");
      await admin.query("ROLLBACK");

      const { model } = await models.setModelTag({ modelId, key: "stage", value: "kept" });
      expect(model!.tags).toEqual({ stage: "kept" });
      expect(await registry.stop()).toBe(0);
      const [{ tags }] = (await admin.query(`SELECT "tags" FROM "models"`)).rows as { tags: unknown }[];
      expect(tags).toEqual({ stage: "kept" });
    } finally {
      await admin.end();
      await registry.stop();
      await database.drop();
    }
  }, 60_000);
});
