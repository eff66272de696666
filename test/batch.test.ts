// The BatchJob service and its workers as real processes, with a real Predictor, on SQLite and
// PostgreSQL (TEST_POSTGRES_URL, started by `npm test`).
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BatchJobService, ItemState, type Item } from "../gen/mlmesh/batch/v1/batch_pb.js";
import { clientFor } from "./support/clients.js";
import { freshDatabase, type TestDatabase } from "./support/databases.js";
import { freePort, repoRoot, run, type ServiceProcess, startService, tools } from "./support/service-process.js";

const iris = JSON.parse(await readFile(join(repoRoot, "test/fixtures/iris.json"), "utf8")) as {
  rows: { values: number[]; label: string }[];
};

/** Every item, through ListItems pages. */
async function allItems(client: Client<typeof BatchJobService>): Promise<Item[]> {
  const items: Item[] = [];
  let pageToken = "";
  do {
    const page = await client.listItems({ pageSize: 1000, pageToken });
    items.push(...page.items);
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  return items;
}

async function waitUntilNonePending(client: Client<typeof BatchJobService>, timeoutMs: number): Promise<void> {
  await expect.poll(async () => Number((await client.getJobStatus({})).pendingItems), { timeout: timeoutMs, interval: 250 }).toBe(0);
}


let predictor: ServiceProcess;
beforeAll(async () => {
  predictor = await startService("predictor");
});
afterAll(async () => {
  await predictor?.stop();
});

describe.each(["sqlite", "postgresql"] as const)("BatchJob on %s", (dialect) => {
  let database: TestDatabase;
  let batch: ServiceProcess;
  let client: Client<typeof BatchJobService>;

  beforeAll(async () => {
    database = await freshDatabase(dialect);
    batch = await startService("batch", { DATABASE_URL: database.url, PREDICTOR_ADDRESS: predictor.address, BATCH_INTERVAL: "300ms" });
    client = clientFor(BatchJobService, batch.baseUrl, "grpc");
  });
  afterAll(async () => {
    await batch?.stop();
    await database?.drop();
  });

  it("predicts registered items on schedule with the right iris labels; a bad item fails with its reason", async () => {
    const registered = await client.registerItems({ items: iris.rows.map(({ values }) => ({ values })) });
    expect(registered.items).toHaveLength(150);
    expect(registered.items.every((i) => i.state === ItemState.PENDING)).toBe(true);
    const bad = (await client.registerItem({ item: { values: [1, 2, 3] } })).item!;
    await waitUntilNonePending(client, 20_000);

    const byId = new Map((await allItems(client)).map((i) => [i.id, i]));
    const predicted = registered.items.map((i) => byId.get(i.id)!);
    expect(predicted.every((i) => i.state === ItemState.PREDICTED)).toBe(true);
    const correct = predicted.filter((item, i) => item.label === iris.rows[i].label).length;
    expect(correct / 150).toBeGreaterThanOrEqual(0.95);
    expect(predicted[0]).toMatchObject({ model: "iris_svc", modelVersion: 1, labels: ["setosa", "versicolor", "virginica"], label: "setosa", attempts: 1 });
    expect(predicted[0].probabilities.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
    expect(predicted[0].predictTime).toBeDefined();

    const failed = byId.get(bad.id)!;
    expect(failed.state).toBe(ItemState.FAILED);
    expect(failed.error).toBe("the item has 3 values; iris_svc v1 takes 4 (sepal_length_cm, sepal_width_cm, petal_length_cm, petal_width_cm)");
    const status = await client.getJobStatus({});
    expect(status).toMatchObject({ predictedItems: 150n, failedItems: 1n, pendingItems: 0n });
    expect(status.recentRuns.reduce((sum, r) => sum + r.predicted, 0)).toBe(150);
  });

  it("lists items by state in pages without overlap or gaps", async () => {
    const ids: string[] = [];
    let pageToken = "";
    do {
      const page = await client.listItems({ state: ItemState.PREDICTED, pageSize: 40, pageToken });
      ids.push(...page.items.map((i) => i.id));
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    expect(ids).toHaveLength(150);
    expect(new Set(ids).size).toBe(150);
    expect([...ids].sort()).toEqual(ids);
    expect((await client.listItems({ state: ItemState.FAILED })).items).toHaveLength(1);
  });

  it("WatchItem streams pending then predicted, and ends", async () => {
    const { item } = await client.registerItem({ item: { values: [6.3, 3.3, 6.0, 2.5] } });
    const states: ItemState[] = [];
    for await (const update of client.watchItem({ itemId: item!.id })) states.push(update.item!.state);
    expect(states[0]).toBe(ItemState.PENDING);
    expect(states.at(-1)).toBe(ItemState.PREDICTED);
  });

  it("serves 100 concurrent WatchItem streams to their items' final states", async () => {
    const { items } = await client.registerItems({
      items: Array.from({ length: 100 }, (_, i) => ({ values: i % 10 === 0 ? [1, 2, 3] : [5.1, 3.5, 1.4, 0.2] })),
    });
    const finalStates = await Promise.all(
      items.map(async (item) => {
        let state = ItemState.UNSPECIFIED;
        for await (const update of client.watchItem({ itemId: item.id })) state = update.item!.state;
        return state;
      }),
    );
    expect(finalStates.filter((s) => s === ItemState.FAILED)).toHaveLength(10);
    expect(finalStates.filter((s) => s === ItemState.PREDICTED)).toHaveLength(90);
  });

  it("answers bad requests precisely", async () => {
    const cases: [string, () => Promise<unknown>, Code][] = [
      ["unknown item", () => client.getItem({ itemId: "nope" }), Code.NotFound],
      ["watch unknown item", async () => { for await (const _ of client.watchItem({ itemId: "nope" })) break; }, Code.NotFound],
      ["no values", () => client.registerItem({ item: { values: [] } }), Code.InvalidArgument],
      ["NaN", () => client.registerItem({ item: { values: [1, NaN] } }), Code.InvalidArgument],
      ["no item", () => client.registerItem({}), Code.InvalidArgument],
      ["too many items", () => client.registerItems({ items: Array.from({ length: 10_001 }, () => ({ values: [1] })) }), Code.InvalidArgument],
      ["bad page token", () => client.listItems({ pageToken: "x" }), Code.InvalidArgument],
    ];
    for (const [name, call, code] of cases) {
      const error = await call().then(
        () => undefined,
        (e: unknown) => ConnectError.from(e),
      );
      expect(error?.code, name).toBe(code);
    }
  });

  it("answers grpcurl as the README shows", async () => {
    const result = await run(tools.grpcurl, [
      "-plaintext",
      "-d",
      '{"item":{"values":[5.1,3.5,1.4,0.2]}}',
      batch.address,
      "mlmesh.batch.v1.BatchJobService/RegisterItem",
    ]);
    expect(result.code, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout)).toMatchObject({ item: { state: "ITEM_STATE_PENDING" } });
  });
});

describe("BatchJob failures and scale-out", () => {
  const cleanup: (() => Promise<unknown>)[] = [];
  afterAll(async () => {
    for (const step of cleanup.reverse()) await step();
  });

  it("leaves items pending while the Predictor is down and predicts them once it is back", async () => {
    const database = await freshDatabase("sqlite");
    cleanup.push(() => database.drop());
    const port = await freePort();
    const batch = await startService("batch", { DATABASE_URL: database.url, PREDICTOR_ADDRESS: `127.0.0.1:${port}`, BATCH_INTERVAL: "300ms" });
    cleanup.push(() => batch.stop());
    const client = clientFor(BatchJobService, batch.baseUrl, "grpc");
    await client.registerItems({ items: iris.rows.slice(0, 20).map(({ values }) => ({ values })) });
    await expect
      .poll(async () => (await client.getJobStatus({})).recentRuns.some((r) => r.released > 0 && r.error.includes("Unavailable")), { timeout: 10_000 })
      .toBe(true);
    expect(Number((await client.getJobStatus({})).pendingItems)).toBe(20);

    const late = await startService("predictor", { PREDICTOR_PORT: String(port) });
    cleanup.push(() => late.stop());
    await waitUntilNonePending(client, 20_000);
    const items = await allItems(client);
    expect(items.every((i) => i.state === ItemState.PREDICTED)).toBe(true);
  });

  it("RunJobNow runs the job at once and returns its record", async () => {
    const database = await freshDatabase("sqlite");
    cleanup.push(() => database.drop());
    const batch = await startService("batch", { DATABASE_URL: database.url, PREDICTOR_ADDRESS: predictor.address, BATCH_RUN_JOB_IN_SERVICE: "false" });
    cleanup.push(() => batch.stop());
    const client = clientFor(BatchJobService, batch.baseUrl, "grpc");
    await client.registerItems({ items: iris.rows.slice(0, 10).map(({ values }) => ({ values })) });
    const { run: jobRun } = await client.runJobNow({});
    expect(jobRun).toMatchObject({ claimed: 10, predicted: 10, failed: 0, released: 0, error: "" });
    expect(Number((await client.getJobStatus({})).pendingItems)).toBe(0);
  });

  it("1,000 items with 10 bad ones: one Predict call, 990 PREDICTED, 10 FAILED each with its own reason", async () => {
    const database = await freshDatabase("sqlite");
    cleanup.push(() => database.drop());
    const batch = await startService("batch", { DATABASE_URL: database.url, PREDICTOR_ADDRESS: predictor.address, BATCH_RUN_JOB_IN_SERVICE: "false", BATCH_ROWS_PER_REQUEST: "1000" });
    cleanup.push(() => batch.stop());
    const client = clientFor(BatchJobService, batch.baseUrl, "grpc");
    // Bad rows spread over the request, each of another width (so each reason is its own).
    const badAt = new Map([7, 99, 100, 250, 400, 512, 640, 777, 901, 999].map((row, k) => [row, k < 3 ? k + 1 : k + 2]));
    const values = Array.from({ length: 1000 }, (_, i) => (badAt.has(i) ? Array.from({ length: badAt.get(i)! }, () => 1) : iris.rows[i % 150].values));
    const { items } = await client.registerItems({ items: values.map((v) => ({ values: v })) });
    const predicts = () => predictor.logs.filter((l) => l.rpc === "/mlmesh.predictor.v1.PredictorService/Predict").length;
    const before = predicts();
    const { run: jobRun } = await client.runJobNow({});
    expect(jobRun).toMatchObject({ claimed: 1000, predicted: 990, failed: 10, released: 0, error: "" });
    await expect.poll(predicts).toBe(before + 1); // one round: no row was sent twice
    expect(predicts()).toBe(before + 1);
    const byId = new Map((await allItems(client)).map((i) => [i.id, i]));
    const reasons = new Set<string>();
    items.forEach((item, i) => {
      const stored = byId.get(item.id)!;
      if (!badAt.has(i)) return expect(stored.state).toBe(ItemState.PREDICTED);
      expect(stored.state).toBe(ItemState.FAILED);
      expect(stored.error).toBe(`the item has ${badAt.get(i)} values; iris_svc v1 takes 4 (sepal_length_cm, sepal_width_cm, petal_length_cm, petal_width_cm)`);
      reasons.add(stored.error);
    });
    expect(reasons.size).toBe(10);
  });

  it("several workers on PostgreSQL predict 10,000 items exactly once, and a killed worker's items are taken over", async () => {
    const database = await freshDatabase("postgresql");
    cleanup.push(() => database.drop());
    const shared = { DATABASE_URL: database.url, PREDICTOR_ADDRESS: predictor.address };
    const batch = await startService("batch", { ...shared, BATCH_RUN_JOB_IN_SERVICE: "false" });
    cleanup.push(() => batch.stop());
    const client = clientFor(BatchJobService, batch.baseUrl, "grpc");
    const rows = Array.from({ length: 10_000 }, (_, i) => ({ values: iris.rows[i % 150].values }));
    await client.registerItems({ items: rows });

    // Small claims and short leases so that the run is long enough to kill a worker in it.
    const workerEnv = { ...shared, BATCH_INTERVAL: "200ms", BATCH_CLAIM_SIZE: "200", BATCH_ROWS_PER_REQUEST: "100", BATCH_LEASE: "2s" };
    const victim = await startService("batch-worker", workerEnv);
    await expect.poll(async () => Number((await client.getJobStatus({})).predictedItems), { timeout: 20_000, interval: 50 }).toBeGreaterThan(0);
    await victim.stop("SIGKILL");
    const workers = await Promise.all([startService("batch-worker", workerEnv), startService("batch-worker", workerEnv)]);
    cleanup.push(() => Promise.all(workers.map((w) => w.stop())));

    await waitUntilNonePending(client, 90_000);
    const items = await allItems(client);
    expect(items).toHaveLength(10_000);
    expect(items.filter((i) => i.state !== ItemState.PREDICTED)).toEqual([]);
    // Exactly once: a result is stored only over a PENDING row its worker still holds, so each
    // item was stored once; only the items the killed worker held when it died were claimed a
    // second time, after their lease ran out: two claims at most (a worker stores one chunk
    // while it has claimed the next).
    const status = await client.getJobStatus({ recentRuns: 100 });
    expect(status).toMatchObject({ predictedItems: 10_000n, pendingItems: 0n, failedItems: 0n });
    const reclaimed = items.filter((i) => i.attempts > 1);
    expect(reclaimed.length).toBeLessThanOrEqual(2 * 200);
    expect(items.filter((i) => i.attempts > 2)).toEqual([]);
    const survivors = status.recentRuns.filter((r) => workers.some((w) => r.worker.includes(`:${w.child.pid}:`)));
    expect(new Set(survivors.map((r) => r.worker.split(":")[1])).size).toBe(2); // both survivors took part
    expect(survivors.reduce((sum, r) => sum + r.predicted, 0)).toBeLessThanOrEqual(10_000);
  }, 180_000);
});
