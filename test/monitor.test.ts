// The prediction log and the monitor (issue 21) with real processes, on SQLite and PostgreSQL:
// a registry holding iris_svc with its companions (outlier model, reference profile), a
// Predictor recording every prediction, and a monitor with short windows. Iris traffic raises
// no alert; shifted traffic raises drift; far rows are flagged and raise the outlier rate; the
// monitor killed under load loses nothing; resends are idempotent; hostile input is refused.
import { randomUUID } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GRPCInferenceService } from "../gen/inference/open_inference_pb.js";
import { AlertKind, AlertState, MonitorService, PredictionRecordSchema, RecordBlockSchema, RecordSource, type Alert } from "../gen/mlmesh/monitor/v1/monitor_pb.js";
import { PredictorService } from "../gen/mlmesh/predictor/v1/predictor_pb.js";
import { pushModelFolder, registryClient, resolveModel } from "../services/cli/model-push.js";
import { checkHealth, ServingStatus } from "../services/runtime/client/health-client.js";
import { failure } from "./support/clients.js";
import { freshDatabase, queryDatabase, type TestDatabase } from "./support/databases.js";
import { freePort, repoRoot, type ServiceProcess, startService } from "./support/service-process.js";

const irisFolder = join(repoRoot, "models/iris_svc/1");
const windowMs = 1500;
const iris = JSON.parse(await readFile(join(repoRoot, "test/fixtures/iris.json"), "utf8")) as { rows: { values: number[] }[] };
const irisRows = iris.rows.map((r) => r.values);


/** A client stream's messages. */
async function* stream<T>(...messages: T[]): AsyncIterable<T> {
  yield* messages;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Rows drawn at random from the iris set, each passed through `change`. */
function irisSample(count: number, change: (row: number[]) => number[] = (r) => r): { values: number[] }[] {
  return Array.from({ length: count }, () => ({ values: change([...irisRows[Math.floor(Math.random() * irisRows.length)]]) }));
}

describe.each(["sqlite", "postgresql"] as const)("the prediction log and the monitor on %s", (dialect) => {
  let registryDb: TestDatabase;
  let monitorDb: TestDatabase;
  let artifactDir: string;
  let registry: ServiceProcess;
  let monitor: ServiceProcess;
  let predictor: ServiceProcess;
  let monitorPort: number;
  let predict: Client<typeof PredictorService>;
  let monitorClient: Client<typeof MonitorService>;
  const alerts: Alert[] = [];
  const watching = new AbortController();

  const monitorEnv = () => ({
    MONITOR_PORT: String(monitorPort),
    MONITOR_DATABASE_URL: monitorDb.url,
    REGISTRY_ADDRESS: registry.address,
    MONITOR_WINDOW: `${windowMs}ms`,
    MONITOR_WINDOW_GRACE: "300ms",
    MONITOR_REFERENCE_REFRESH: "500ms",
    MONITOR_MIN_ROWS: "200",
  });

  /** Starts watching alerts (again, after a monitor restart). */
  const watchAlerts = () => {
    void (async () => {
      try {
        for await (const message of monitorClient.watchAlerts({}, { signal: watching.signal })) alerts.push(message.alert!);
      } catch {
        // the monitor went away (a restart) or the suite ended
      }
    })();
  };

  /** Sends `requests` Predict calls of `rows` each, in sequence; returns their request ids. */
  async function send(requests: number, rows: () => { values: number[] }[], pauseMs = 0): Promise<string[]> {
    const ids: string[] = [];
    for (let i = 0; i < requests; i++) {
      const id = randomUUID();
      await predict.predict({ model: "iris_svc@production", rows: rows() }, { headers: { "x-request-id": id } });
      ids.push(id);
      if (pauseMs > 0) await sleep(pauseMs);
    }
    return ids;
  }

  /** Waits until `check` holds, or fails with `what` after `timeoutMs`. */
  async function eventually(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 20_000): Promise<void> {
    const until = Date.now() + timeoutMs;
    while (!(await check())) {
      if (Date.now() > until) throw new Error(`${what}: not within ${timeoutMs} ms`);
      await sleep(100);
    }
  }

  const storedCount = async () => Number((await queryDatabase<{ n: number | string }>(monitorDb.url, `SELECT count(*) AS n FROM prediction_records`))[0].n);

  beforeAll(async () => {
    registryDb = await freshDatabase(dialect);
    monitorDb = await freshDatabase(dialect);
    artifactDir = await mkdtemp(join(tmpdir(), "mlmesh-artifacts-"));
    registry = await startService("registry", { DATABASE_URL: registryDb.url, ARTIFACT_DIR: artifactDir });
    const client = registryClient(registry.address, "monitor-test");
    const modelId = (await resolveModel(client, { project: "iris", name: "iris_svc" }, true)).id;
    const pushed = await pushModelFolder(client, irisFolder, { modelId, modelName: "iris_svc", alias: "production" });
    expect(pushed.files.map((f) => f.name).sort()).toEqual(["metadata.json", "model.onnx", "outlier.onnx", "reference_profile.json"]);
    monitorPort = await freePort();
    monitor = await startService("monitor", monitorEnv());
    predictor = await startService("predictor", {
      REGISTRY_ADDRESS: registry.address,
      PREDICTOR_MODELS: "iris/*",
      MONITOR_ADDRESS: `127.0.0.1:${monitorPort}`,
      PREDICTION_LOG_FLUSH_INTERVAL: "50ms",
    });
    const deadline = Date.now() + 20_000;
    while ((await checkHealth(predictor.address, "mlmesh.predictor.v1.PredictorService", 1000)) !== ServingStatus.SERVING) {
      if (Date.now() > deadline) throw new Error("the Predictor did not load iris_svc within 20 s");
      await sleep(100);
    }
    predict = createClient(PredictorService, createGrpcTransport({ baseUrl: predictor.baseUrl }));
    monitorClient = createClient(MonitorService, createGrpcTransport({ baseUrl: monitor.baseUrl }));
    watchAlerts();
  }, 60_000);

  afterAll(async () => {
    watching.abort();
    await predictor?.stop();
    await monitor?.stop();
    await registry?.stop();
    await registryDb?.drop();
    await monitorDb?.drop();
    await rm(artifactDir, { recursive: true, force: true });
  });

  it("answers outlier scores beside each prediction, natively and over the Open Inference Protocol", async () => {
    const response = await predict.predict({ model: "iris_svc", rows: [{ values: [5.1, 3.5, 1.4, 0.2] }, { values: [20, 20, 20, 20] }] });
    expect(response.predictions[0].outlier?.isOutlier).toBe(false);
    expect(response.predictions[0].outlier!.score).toBeLessThan(0);
    expect(response.predictions[1].outlier?.isOutlier).toBe(true);
    expect(response.predictions[1].outlier!.score).toBeGreaterThan(0);
    const oip = createClient(GRPCInferenceService, createGrpcTransport({ baseUrl: predictor.baseUrl }));
    const infer = await oip.modelInfer({
      modelName: "iris_svc",
      inputs: [{ name: "input", datatype: "FP32", shape: [2n, 4n], contents: { fp32Contents: [5.1, 3.5, 1.4, 0.2, 20, 20, 20, 20] } }],
      outputs: [{ name: "label" }, { name: "outlier_score" }, { name: "is_outlier" }],
    });
    expect(infer.outputs.map((o) => o.name)).toEqual(["label", "outlier_score", "is_outlier"]);
    expect(infer.outputs[2].contents?.boolContents).toEqual([false, true]);
    const metadata = await predict.getModelMetadata({ model: "iris_svc" });
    expect(metadata.metadata?.outlierScoring).toBe(true);
  });

  it("records each prediction, found by its request id with what went in and came out", async () => {
    const [id] = await send(1, () => [{ values: [5.9, 3.0, 4.2, 1.5] }]);
    await eventually("the record is stored", async () => (await failure(monitorClient.getPrediction({ requestId: id })).catch(() => undefined)) === undefined);
    const { record } = await monitorClient.getPrediction({ requestId: id });
    expect(record).toMatchObject({ requestId: id, source: RecordSource.PREDICTOR, api: "predict", model: "iris_svc", version: 1, alias: "production", rowCount: 1 });
    expect(record!.inputs!.rows!.width).toBe(4);
    expect(record!.inputs!.rows!.values.map((v) => Math.round(v * 10) / 10)).toEqual([5.9, 3.0, 4.2, 1.5]);
    expect(record!.outputs!.classification!.labels).toEqual(["setosa", "versicolor", "virginica"]);
    expect(record!.outputs!.classification!.probabilities).toHaveLength(3);
    expect(record!.outlierScores).toHaveLength(1);
    expect(record!.traceId).toMatch(/^[0-9a-f]{32}$/);
    expect(record!.latency).toBeDefined();
  });

  it("raises no alert over 10 windows of traffic drawn from the iris data", async () => {
    const started = Date.now();
    while (Date.now() - started < 10 * windowMs + 500) await send(1, () => irisSample(25), 40);
    await sleep(windowMs + 500); // the last window closes
    const report = await monitorClient.getDriftReport({ model: "iris_svc", version: 1, startTime: timestampFromMs(started) });
    expect(report.hasReference).toBe(true);
    // The windows the monitor judges (min_rows): a partial first or last window of a few dozen
    // rows is too small a sample for PSI (its expected value alone nears the threshold there).
    const full = report.windows.filter((w) => w.rows >= report.thresholds!.minRows);
    expect(full.length).toBeGreaterThanOrEqual(9);
    for (const w of full) {
      expect(w.features.map((f) => f.feature)).toEqual(["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"]);
      for (const f of w.features) expect(f.psi, `${f.feature} PSI`).toBeLessThan(report.thresholds!.psi);
      expect(w.labels!.maxShift).toBeLessThan(report.thresholds!.labelShift);
    }
    expect(alerts).toEqual([]);
    expect((await monitorClient.listAlerts({ state: AlertState.FIRING })).alerts).toEqual([]);
  }, 60_000);

  it("raises a drift alert within 2 windows of petal lengths shifted by +2 cm, and the outlier rate alert on far rows", async () => {
    const started = Date.now();
    const shifted = () => irisSample(25, (r) => [r[0], r[1], r[2] + 2, r[3]]);
    await eventually(
      "a feature drift alert on petal_length_cm",
      async () => {
        await send(1, shifted, 20);
        return alerts.some((a) => a.kind === AlertKind.FEATURE_DRIFT && a.feature === "petal_length_cm" && a.state === AlertState.FIRING);
      },
      3 * windowMs + 2000,
    );
    const drift = alerts.find((a) => a.kind === AlertKind.FEATURE_DRIFT && a.feature === "petal_length_cm")!;
    // Raised by the first or the second window of shifted traffic.
    expect(Number(drift.windowStart!.seconds) * 1000).toBeLessThan(Math.floor(started / windowMs) * windowMs + 2 * windowMs);
    expect(drift.summary).toContain("petal_length_cm");

    // Far rows: 40 % outliers, well above the 10 % threshold.
    const far = () => [...irisSample(15), ...Array.from({ length: 10 }, () => ({ values: [20 + Math.random(), 0.5, 20, 10] }))];
    await eventually(
      "an outlier rate alert",
      async () => {
        await send(1, far, 20);
        return alerts.some((a) => a.kind === AlertKind.OUTLIER_RATE && a.state === AlertState.FIRING);
      },
      3 * windowMs + 2000,
    );
    const outliers = await monitorClient.listPredictions({ model: "iris_svc", outliersOnly: true, pageSize: 5 });
    expect(outliers.records.length).toBe(5);
    for (const r of outliers.records) expect(r.outlierScores.some((s) => s > 0)).toBe(true);
    expect(outliers.nextPageToken).not.toBe("");
    const next = await monitorClient.listPredictions({ model: "iris_svc", outliersOnly: true, pageSize: 5, pageToken: outliers.nextPageToken });
    expect(next.records.map((r) => r.requestId)).not.toContain(outliers.records[0].requestId);

    // Back to iris traffic: the alerts resolve.
    await eventually(
      "the alerts resolve",
      async () => {
        await send(1, () => irisSample(25), 20);
        return (await monitorClient.listAlerts({ state: AlertState.FIRING })).alerts.length === 0;
      },
      4 * windowMs + 2000,
    );
    expect(alerts.some((a) => a.state === AlertState.RESOLVED && a.id === drift.id)).toBe(true);
  }, 60_000);

  it("loses no record when the monitor is killed and restarted under load", async () => {
    await sleep(500);
    const before = await storedCount();
    let running = true;
    const ids: string[] = [];
    const load = (async () => {
      while (running) ids.push(...(await send(1, () => irisSample(5))));
    })();
    await sleep(800);
    await monitor.stop("SIGKILL");
    await sleep(1000);
    monitor = await startService("monitor", monitorEnv());
    monitorClient = createClient(MonitorService, createGrpcTransport({ baseUrl: monitor.baseUrl }));
    watchAlerts();
    await sleep(800);
    running = false;
    await load;
    await eventually("every call's record is stored", async () => (await storedCount()) === before + ids.length, 20_000);
    const metrics = await (await fetch(`${predictor.baseUrl}/metrics`)).text();
    expect(metrics).toMatch(/mlmesh_prediction_log_send_failures_total [1-9]/);
    expect(metrics).not.toMatch(/mlmesh_prediction_log_dropped_total\{reason="queue_full"\} [1-9]/);
    const { record } = await monitorClient.getPrediction({ requestId: ids[ids.length - 1] });
    expect(record?.requestId).toBe(ids[ids.length - 1]);
  }, 60_000);

  it("keeps records within the retention: older ones are deleted at start (PostgreSQL: whole day partitions dropped)", async () => {
    const day = 86_400_000;
    const old = Date.now() - 9 * day;
    const oldDay = new Date(Math.floor(old / day) * day).toISOString().slice(0, 10).replaceAll("-", "");
    if (dialect === "postgresql") {
      const from = Math.floor(old / day) * day;
      await queryDatabase(monitorDb.url, `CREATE TABLE "prediction_records_${oldDay}" PARTITION OF "prediction_records" FOR VALUES FROM (${from}) TO (${from + day})`);
    }
    const record = (requestId: string, timeMs: number) => create(PredictionRecordSchema, { requestId, time: timestampFromMs(timeMs), source: RecordSource.PREDICTOR, api: "predict", model: "retention_probe", version: 1 });
    await monitorClient.ingestRecords(stream({ records: [record("old-record", old), record("new-record", Date.now())] }));
    await monitor.stop();
    monitor = await startService("monitor", monitorEnv());
    monitorClient = createClient(MonitorService, createGrpcTransport({ baseUrl: monitor.baseUrl }));
    watchAlerts();
    expect((await failure(monitorClient.getPrediction({ requestId: "old-record" }))).code).toBe(Code.NotFound);
    expect((await monitorClient.getPrediction({ requestId: "new-record" })).record?.model).toBe("retention_probe");
    if (dialect === "postgresql") {
      const partitions = (
        await queryDatabase<{ name: string }>(
          monitorDb.url,
          `SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'prediction_records' ORDER BY 1`,
        )
      ).map((r) => r.name);
      expect(partitions).not.toContain(`prediction_records_${oldDay}`);
      const today = new Date().toISOString().slice(0, 10).replaceAll("-", "");
      expect(partitions).toContain(`prediction_records_${today}`);
      expect(partitions).toContain("prediction_records_default");
      expect(monitor.logs.some((l) => Array.isArray(l.dropped) && (l.dropped as string[]).includes(`prediction_records_${oldDay}`))).toBe(true);
    }
  });

  it("stores a resent record once", async () => {
    const record = create(PredictionRecordSchema, {
      requestId: randomUUID(),
      time: timestampFromMs(Date.now()),
      source: RecordSource.BATCH,
      api: "batch",
      model: "iris_svc",
      version: 1,
      rowCount: 1,
    });
    const first = await monitorClient.ingestRecords(stream({ records: [record] }));
    const again = await monitorClient.ingestRecords(stream({ records: [record, record] }));
    expect([first.accepted, first.duplicates, again.accepted, again.duplicates]).toEqual([1n, 0n, 0n, 2n]);
    expect(await queryDatabase(monitorDb.url, `SELECT request_id FROM prediction_records WHERE request_id = '${record.requestId}'`)).toHaveLength(1);
  });

  it("stores a block's records as the records they stand for, once", async () => {
    const ids = [randomUUID(), randomUUID()];
    const timeMs = Date.now();
    const block = create(RecordBlockSchema, {
      source: RecordSource.PREDICTOR,
      api: "predict",
      model: "iris_svc",
      version: 1,
      alias: "production",
      width: 4,
      labels: ["setosa", "versicolor", "virginica"],
      requestIds: ids,
      traceIds: ["4bf92f3577b34da6a3ce929d0e0e4736", ""],
      time: timestampFromMs(timeMs),
      timeOffsetsUs: [0n, -1500n],
      latenciesUs: [2500, 125],
      rowCounts: [1, 2],
      features: [5.1, 3.5, 1.4, 0.2, 6.3, 3.3, 6, 2.5, 9, 9, 9, 9],
      probabilities: [0.5, 0.25, 0.25, 0, 0.5, 0.5, 0, 0, 1],
      outlierScores: [-1, -0.5, 2],
    });
    const first = await monitorClient.ingestRecords(stream({ blocks: [block] }));
    const again = await monitorClient.ingestRecords(stream({ blocks: [block] }));
    expect([first.accepted, first.duplicates, again.accepted, again.duplicates]).toEqual([2n, 0n, 0n, 2n]);
    const { record } = await monitorClient.getPrediction({ requestId: ids[1] });
    expect(record).toMatchObject({ requestId: ids[1], traceId: "", source: RecordSource.PREDICTOR, api: "predict", model: "iris_svc", version: 1, alias: "production", status: 0, rowCount: 2, truncated: false });
    expect(record?.time).toMatchObject(timestampFromMs(timeMs - 1.5));
    expect(record?.latency).toMatchObject({ seconds: 0n, nanos: 125_000 });
    expect(record?.inputs?.rows?.values).toEqual([6.3, 3.3, 6, 2.5, 9, 9, 9, 9].map(Math.fround));
    expect(record?.outputs?.classification).toMatchObject({ labels: ["setosa", "versicolor", "virginica"], probabilities: [0, 0.5, 0.5, 0, 0, 1] });
    expect(record?.outlierScores).toEqual([-0.5, 2]);
    const listed = await monitorClient.listPredictions({ model: "iris_svc", outliersOnly: true, startTime: timestampFromMs(timeMs - 10), endTime: timestampFromMs(timeMs + 10) });
    expect(listed.records.map((r) => r.requestId)).toContain(ids[1]);
    expect(listed.records.map((r) => r.requestId)).not.toContain(ids[0]);
  });

  it("takes a model's thresholds from its registry tags", async () => {
    const client = registryClient(registry.address, "monitor-test");
    const { model } = await client.getModelByName({ projectName: "iris", name: "iris_svc" });
    await client.setModelTag({ modelId: model!.id, key: "monitor.psi", value: "0.4" });
    await client.setModelTag({ modelId: model!.id, key: "monitor.outlier_rate", value: "0.05" });
    await eventually("the monitor reads the tags", async () => (await monitorClient.getDriftReport({ model: "iris_svc", version: 1 })).thresholds?.psi === 0.4, 5000);
    const { thresholds } = await monitorClient.getDriftReport({ model: "iris_svc", version: 1 });
    expect(thresholds).toMatchObject({ psi: 0.4, outlierRate: 0.05, ks: 0.25, minRows: 200n });
  });

  it("refuses hostile records and queries with precise errors", async () => {
    const base = { requestId: "x", time: timestampFromMs(Date.now()), source: RecordSource.PREDICTOR, model: "iris_svc" };
    const invalid = async (records: object[]) => failure(monitorClient.ingestRecords(stream({ records: records.map((r) => create(PredictionRecordSchema, r)) })));
    expect((await invalid([{ ...base, requestId: "" }])).code).toBe(Code.InvalidArgument);
    expect((await invalid([{ ...base, requestId: "r".repeat(129) }])).rawMessage).toContain("request_id");
    expect((await invalid([{ ...base, time: undefined }])).rawMessage).toContain("time");
    expect((await invalid([{ ...base, source: RecordSource.UNSPECIFIED }])).code).toBe(Code.InvalidArgument);
    // A record above the message limit (4 MiB): refused before it is read.
    const huge = create(PredictionRecordSchema, { ...base, inputs: { rows: { width: 1, values: new Array(1_200_000).fill(1) } } });
    expect(toBinary(PredictionRecordSchema, huge).length).toBeGreaterThan(4 * 1024 * 1024);
    expect((await failure(monitorClient.ingestRecords(stream({ records: [huge] })))).code).toBe(Code.ResourceExhausted);
    // Blocks whose columns disagree with the records they hold, and a message with nothing.
    const block = { source: RecordSource.PREDICTOR, api: "predict", model: "iris_svc", version: 1, width: 2, labels: ["a"], requestIds: ["b-1", "b-2"], time: timestampFromMs(Date.now()), timeOffsetsUs: [0n, 5n], latenciesUs: [10, 20], rowCounts: [1, 1], features: [1, 2, 3, 4], probabilities: [1, 1] };
    const invalidBlock = async (fields: object) => failure(monitorClient.ingestRecords(stream({ blocks: [create(RecordBlockSchema, { ...block, ...fields })] })));
    expect((await invalidBlock({ latenciesUs: [10] })).rawMessage).toBe("blocks[0]: 2 request ids but 1 latencies_us (one per record)");
    expect((await invalidBlock({ features: [1, 2, 3] })).rawMessage).toBe("blocks[0]: 3 features, but 2 rows of width 2 need 4");
    expect((await invalidBlock({ outlierScores: [1] })).rawMessage).toBe("blocks[0]: 1 outlier scores for 2 rows (one per row, or none)");
    expect((await invalidBlock({ requestIds: [] })).rawMessage).toContain("request_ids");
    expect((await invalidBlock({ time: undefined })).rawMessage).toContain("time");
    expect((await failure(monitorClient.ingestRecords(stream({})))).rawMessage).toContain("at least one record or block");
    const full = { ...block, width: 0, labels: [], features: [], probabilities: [], requestIds: Array.from({ length: 10_000 }, (_, i) => `full-${i}`) };
    const columns = { timeOffsetsUs: full.requestIds.map(() => 0n), latenciesUs: full.requestIds.map(() => 1), rowCounts: full.requestIds.map(() => 1) };
    const over = await failure(monitorClient.ingestRecords(stream({ records: [create(PredictionRecordSchema, base)], blocks: [create(RecordBlockSchema, { ...full, ...columns })] })));
    expect(over.rawMessage).toBe("a message holds at most 10000 records, blocks' records included");
    expect(await queryDatabase(monitorDb.url, "SELECT request_id FROM prediction_records WHERE request_id = 'full-0'")).toHaveLength(0);
    // Queries.
    const backwards = await failure(monitorClient.listPredictions({ model: "iris_svc", startTime: timestampFromMs(Date.now()), endTime: timestampFromMs(Date.now() - 60_000) }));
    expect(backwards.code).toBe(Code.InvalidArgument);
    expect(backwards.rawMessage).toContain("before it starts");
    expect((await failure(monitorClient.listPredictions({ model: "no_such_model" }))).code).toBe(Code.NotFound);
    expect((await failure(monitorClient.getDriftReport({ model: "no_such_model" }))).code).toBe(Code.NotFound);
    expect((await failure(monitorClient.getPrediction({ requestId: "no-such-request" }))).code).toBe(Code.NotFound);
    expect((await failure(monitorClient.listPredictions({ model: "iris_svc", pageToken: "garbage" }))).code).toBe(Code.InvalidArgument);
    expect((await failure(monitorClient.listPredictions({ model: "iris_svc", pageSize: 5000 }))).code).toBe(Code.InvalidArgument);
  });
});

describe("records of the Proxy and the batch job", () => {
  let monitorDb: TestDatabase;
  let batchDb: TestDatabase;
  let monitor: ServiceProcess;
  let predictor: ServiceProcess;
  let proxy: ServiceProcess;
  let batch: ServiceProcess;
  let monitorClient: Client<typeof MonitorService>;

  beforeAll(async () => {
    monitorDb = await freshDatabase("sqlite");
    batchDb = await freshDatabase("sqlite");
    monitor = await startService("monitor", { MONITOR_DATABASE_URL: monitorDb.url });
    const logTo = { MONITOR_ADDRESS: monitor.address, PREDICTION_LOG_FLUSH_INTERVAL: "50ms" };
    predictor = await startService("predictor", logTo);
    proxy = await startService("proxy", { ...logTo, PREDICTOR_ADDRESS: predictor.address });
    batch = await startService("batch", { ...logTo, DATABASE_URL: batchDb.url, PREDICTOR_ADDRESS: predictor.address, BATCH_RUN_JOB_IN_SERVICE: "false" });
    monitorClient = createClient(MonitorService, createGrpcTransport({ baseUrl: monitor.baseUrl }));
  }, 60_000);

  afterAll(async () => {
    await Promise.all([batch?.stop(), proxy?.stop()]);
    await predictor?.stop();
    await monitor?.stop();
    await monitorDb?.drop();
    await batchDb?.drop();
  });

  /** GetPrediction once the record and `linked` linked records are stored. */
  async function recordOf(requestId: string, linked: number) {
    const until = Date.now() + 10_000;
    for (;;) {
      const found = await monitorClient.getPrediction({ requestId }).catch(() => undefined);
      if (found !== undefined && found.linked.length >= linked) return found;
      if (Date.now() > until) throw new Error(`no record of ${requestId} with ${linked} linked records within 10 s`);
      await sleep(100);
    }
  }

  it("records the Proxy's aggregated answer, linked to the three backend calls", async () => {
    const { ProxyService } = await import("../gen/mlmesh/proxy/v1/proxy_pb.js");
    const client = createClient(ProxyService, createGrpcTransport({ baseUrl: proxy.baseUrl }));
    const requestId = randomUUID();
    const answer = await client.predictLabel({ rows: [{ values: [6.3, 3.3, 6.0, 2.5] }] }, { headers: { "x-request-id": requestId } });
    expect(answer.predictions[0].label).toBe("virginica");
    const { record, linked } = await recordOf(requestId, 3);
    expect(record).toMatchObject({ requestId, source: RecordSource.PROXY, api: "predict_label", model: "proxy", rowCount: 1 });
    expect(record!.outputs!.classification!.labels).toEqual(["setosa", "versicolor", "virginica"]);
    const p = record!.outputs!.classification!.probabilities;
    expect(p.indexOf(Math.max(...p))).toBe(2);
    expect(linked.map((l) => l.model).sort()).toEqual(["iris_svc_setosa", "iris_svc_versicolor", "iris_svc_virginica"]);
    for (const l of linked) expect(l).toMatchObject({ source: RecordSource.PREDICTOR, parentRequestId: requestId, api: "predict_models" });
    // One PredictModels call asked the Predictor for the three: a record per model, "<call's id>:<i>".
    expect(new Set(linked.map((l) => l.requestId.replace(/:\d+$/, ""))).size).toBe(1);
    expect(linked.map((l) => l.requestId.slice(-2)).sort()).toEqual([":0", ":1", ":2"]);
  });

  it("records each batch item under its id, linked to the Predict call that predicted it", async () => {
    const { BatchJobService } = await import("../gen/mlmesh/batch/v1/batch_pb.js");
    const client = createClient(BatchJobService, createGrpcTransport({ baseUrl: batch.baseUrl }));
    const { items } = await client.registerItems({ items: [{ values: [5.1, 3.5, 1.4, 0.2] }, { values: [1, 2, 3] }] });
    await client.runJobNow({});
    const ok = await recordOf(items[0].id, 1);
    expect(ok.record).toMatchObject({ requestId: items[0].id, source: RecordSource.BATCH, api: "batch", model: "iris_svc", status: 0 });
    expect(ok.record!.outputs!.classification!.labels).toEqual(["setosa", "versicolor", "virginica"]);
    expect(ok.linked[0]).toMatchObject({ source: RecordSource.PREDICTOR, requestId: ok.record!.parentRequestId, rowCount: 1 });
    const failed = await recordOf(items[1].id, 0);
    expect(failed.record).toMatchObject({ status: Code.InvalidArgument, source: RecordSource.BATCH });
    expect(failed.record!.error).toContain("values");
  });
});
