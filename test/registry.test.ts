// The ModelRegistry as a real process on a real database, once on SQLite and once on
// PostgreSQL (scripts/start-postgres.sh; `npm test` starts it and sets TEST_POSTGRES_URL).
import * as net from "node:net";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ModelRegistryService } from "../gen/mlmesh/registry/v1/registry_pb.js";
import { clientFor, failure } from "./support/clients.js";
import { freshDatabase, type TestDatabase } from "./support/databases.js";
import { run, startService, tools, type ServiceProcess } from "./support/service-process.js";

describe.each(["sqlite", "postgresql"] as const)("ModelRegistry on %s", (dialect) => {
  let database: TestDatabase;
  let registry: ServiceProcess;
  let client: Client<typeof ModelRegistryService>;

  beforeAll(async () => {
    database = await freshDatabase(dialect);
    registry = await startService("registry", { DATABASE_URL: database.url });
    client = clientFor(ModelRegistryService, registry.baseUrl, "grpc");
  });
  afterAll(async () => {
    await registry?.stop();
    await database?.drop();
  });

  it("runs the seed's flow: project -> model -> experiment -> merge evaluations -> list by model", async () => {
    const { project } = await client.createProject({ name: "image_classification", description: "画像分類プロジェクト" });
    expect(project).toMatchObject({ name: "image_classification", description: "画像分類プロジェクト" });
    expect(project!.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/); // UUIDv7
    const { model } = await client.createModel({ projectId: project!.id, name: "resnet50", description: "ResNet50" });
    const { experiment } = await client.createExperiment({
      modelId: model!.id,
      modelVersionId: "v1.0.0",
      parameters: { learning_rate: 0.001, batch_size: 32, epochs: 100 },
      trainingDataset: "s3://data/train",
      evaluations: { accuracy: 0.95, f1_score: 0.93 },
      artifactFilePaths: { onnx: "s3://models/resnet50.onnx" },
    });
    expect(experiment!.parameters).toEqual({ learning_rate: 0.001, batch_size: 32, epochs: 100 });

    const merged = await client.updateExperimentEvaluations({ experimentId: experiment!.id, evaluations: { accuracy: 0.97, recall: 0.9 } });
    expect(merged.experiment!.evaluations).toEqual({ accuracy: 0.97, f1_score: 0.93, recall: 0.9 });
    const paths = await client.updateExperimentArtifactFilePaths({ experimentId: experiment!.id, artifactFilePaths: { metadata: "s3://m.json" } });
    expect(paths.experiment!.artifactFilePaths).toEqual({ onnx: "s3://models/resnet50.onnx", metadata: "s3://m.json" });

    const listed = await client.listExperiments({ filter: { case: "modelId", value: model!.id } });
    expect(listed.experiments.map((e) => e.id)).toEqual([experiment!.id]);
    expect((await client.getExperiment({ experimentId: experiment!.id })).experiment!.evaluations).toEqual({ accuracy: 0.97, f1_score: 0.93, recall: 0.9 });
    expect((await client.listExperiments({ filter: { case: "projectId", value: project!.id } })).experiments).toHaveLength(1);
    expect((await client.listExperiments({ filter: { case: "modelVersionId", value: "v1.0.0" } })).experiments).toHaveLength(1);
  });

  it("gets projects and models by id and name, and lists them by project", async () => {
    const { project } = await client.createProject({ name: "lookup" });
    expect((await client.getProject({ projectId: project!.id })).project!.name).toBe("lookup");
    expect((await client.getProjectByName({ name: "lookup" })).project!.id).toBe(project!.id);
    const { model } = await client.createModel({ projectId: project!.id, name: "m1" });
    expect((await client.getModel({ modelId: model!.id })).model!.projectId).toBe(project!.id);
    const byId = await client.listModels({ project: { case: "projectId", value: project!.id } });
    const byName = await client.listModels({ project: { case: "projectName", value: "lookup" } });
    expect(byId.models.map((m) => m.id)).toEqual([model!.id]);
    expect(byName.models.map((m) => m.id)).toEqual([model!.id]);
    expect((await client.listModels({})).models.length).toBeGreaterThanOrEqual(2);
  });

  it("edits project and model descriptions, and records who created each version", async () => {
    const { project } = await client.createProject({ name: "descriptions", description: "first" });
    const { model } = await client.createModel({ projectId: project!.id, name: "m", description: "first" });
    expect((await client.setProjectDescription({ projectId: project!.id, description: "second" })).project!.description).toBe("second");
    expect((await client.getProject({ projectId: project!.id })).project!.description).toBe("second");
    expect((await client.setModelDescription({ modelId: model!.id, description: "" })).model!.description).toBe("");
    expect((await client.getModel({ modelId: model!.id })).model!.description).toBe("");
    const missingProject = await failure(client.setProjectDescription({ projectId: "no-such-project", description: "x" }));
    expect([missingProject.code, missingProject.rawMessage]).toEqual([Code.NotFound, "project no-such-project not found"]);
    const missingModel = await failure(client.setModelDescription({ modelId: "no-such-model", description: "x" }));
    expect([missingModel.code, missingModel.rawMessage]).toEqual([Code.NotFound, "model no-such-model not found"]);
    expect((await failure(client.setModelDescription({ modelId: model!.id, description: "x".repeat(4097) }))).code).toBe(Code.InvalidArgument);

    const anonymous = await client.createModelVersion({ modelId: model!.id, sourceUri: "file://a" });
    expect(anonymous.modelVersion!.creator).toBe("anonymous");
    const declared = await client.createModelVersion({ modelId: model!.id, sourceUri: "file://b" }, { headers: { "x-mlmesh-actor": "alice@laptop" } });
    expect(declared.modelVersion!.creator).toBe("alice@laptop");
    expect((await client.listModelVersions({ modelId: model!.id })).modelVersions.map((v) => v.creator)).toEqual(["anonymous", "alice@laptop"]);
  });

  it("pages through projects in creation order without overlap or gaps, with a name filter", async () => {
    const names = Array.from({ length: 7 }, (_, i) => `paged-${i}`);
    for (const name of names) await client.createProject({ name });
    const seen: string[] = [];
    let pageToken = "";
    do {
      const page = await client.listProjects({ pageSize: 3, pageToken, nameFilter: "paged-" });
      expect(page.projects.length).toBeLessThanOrEqual(3);
      seen.push(...page.projects.map((p) => p.name));
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    expect(seen).toEqual(names);
    expect((await failure(client.listProjects({ pageToken: "not-a-token" }))).code).toBe(Code.InvalidArgument);
  });

  it("numbers model versions, moves aliases, resolves 'latest', and sets and deletes tags", async () => {
    const { project } = await client.createProject({ name: "versions" });
    const { model } = await client.createModel({ projectId: project!.id, name: "iris_svc" });
    const modelId = model!.id;
    const created = [];
    for (let i = 1; i <= 3; i++) {
      created.push((await client.createModelVersion({ modelId, sourceUri: `file://models/iris_svc/${i}/model.onnx`, tags: { run: String(i) } })).modelVersion!);
    }
    expect(created.map((v) => v.version)).toEqual([1, 2, 3]);
    expect((await client.getModelVersion({ modelId, version: 2 })).modelVersion!.sourceUri).toBe("file://models/iris_svc/2/model.onnx");
    const page1 = await client.listModelVersions({ modelId, pageSize: 2 });
    const page2 = await client.listModelVersions({ modelId, pageSize: 2, pageToken: page1.nextPageToken });
    expect([...page1.modelVersions, ...page2.modelVersions].map((v) => v.version)).toEqual([1, 2, 3]);
    expect(page2.nextPageToken).toBe("");

    await client.setModelVersionAlias({ modelId, alias: "production", version: 1 });
    expect((await client.getModelVersionByAlias({ modelId, alias: "production" })).modelVersion!.version).toBe(1);
    const moved = await client.setModelVersionAlias({ modelId, alias: "production", version: 2 });
    expect(moved.modelVersion!.aliases).toEqual(["production"]);
    expect((await client.getModelVersion({ modelId, version: 1 })).modelVersion!.aliases).toEqual([]);
    expect((await client.getModelVersionByAlias({ modelId, alias: "latest" })).modelVersion!.version).toBe(3);
    await client.deleteModelVersionAlias({ modelId, alias: "production" });
    expect((await failure(client.getModelVersionByAlias({ modelId, alias: "production" }))).code).toBe(Code.NotFound);
    expect((await failure(client.deleteModelVersionAlias({ modelId, alias: "production" }))).code).toBe(Code.NotFound);

    expect((await client.setModelTag({ modelId, key: "owner", value: "ml-team" })).model!.tags).toEqual({ owner: "ml-team" });
    expect((await client.deleteModelTag({ modelId, key: "owner" })).model!.tags).toEqual({});
    expect((await failure(client.deleteModelTag({ modelId, key: "owner" }))).code).toBe(Code.NotFound);
    const tagged = await client.setModelVersionTag({ modelId, version: 3, key: "stage", value: "canary" });
    expect(tagged.modelVersion!.tags).toEqual({ run: "3", stage: "canary" });
    expect((await client.deleteModelVersionTag({ modelId, version: 3, key: "run" })).modelVersion!.tags).toEqual({ stage: "canary" });
  });

  it("searches versions by project, name, tag and alias, results carrying their aliases, paged", async () => {
    const { project } = await client.createProject({ name: "search" });
    const ids: string[] = [];
    for (const name of ["churn", "churn_v2", "fraud"]) {
      const { model } = await client.createModel({ projectId: project!.id, name });
      ids.push(model!.id);
      for (let v = 1; v <= 3; v++) await client.createModelVersion({ modelId: model!.id, sourceUri: `s3://${name}/${v}`, tags: { stage: v === 3 ? "candidate" : "old" } });
      await client.setModelVersionAlias({ modelId: model!.id, alias: "production", version: 2 });
    }
    const key = (r: { model?: { name: string }; modelVersion?: { version: number } }) => `${r.model!.name}@${r.modelVersion!.version}`;
    const production = await client.searchModelVersions({ projectName: "search", alias: "production" });
    expect(production.results.map(key)).toEqual(["churn@2", "churn_v2@2", "fraud@2"]);
    expect(production.results.every((r) => r.modelVersion!.aliases.includes("production"))).toBe(true);
    expect((await client.searchModelVersions({ projectName: "search", modelName: "churn", tagKey: "stage", tagValue: "candidate" })).results.map(key)).toEqual([
      "churn@3",
      "churn_v2@3",
    ]);
    expect((await client.searchModelVersions({ projectName: "search", tagKey: "stage" })).results).toHaveLength(9);
    expect((await client.searchModelVersions({ projectName: "nowhere" })).results).toEqual([]);
    // Pages of 4 over 9 results: no overlap, no gap.
    const seen: string[] = [];
    let pageToken = "";
    do {
      const page = await client.searchModelVersions({ projectName: "search", pageSize: 4, pageToken });
      seen.push(...page.results.map(key));
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    expect(seen).toEqual(["churn@1", "churn@2", "churn@3", "churn_v2@1", "churn_v2@2", "churn_v2@3", "fraud@1", "fraud@2", "fraud@3"]);
    expect((await client.getModelByName({ projectName: "search", name: "fraud" })).model!.id).toBe(ids[2]);
    expect((await failure(client.getModelByName({ projectName: "search", name: "nope" }))).rawMessage).toBe('project "search" has no model "nope"');
  });

  it("keeps an append-only alias history (who, when, from, to), paged, and rolls an alias back", async () => {
    const { project } = await client.createProject({ name: "history" });
    const { model } = await client.createModel({ projectId: project!.id, name: "m" });
    const modelId = model!.id;
    for (let v = 1; v <= 3; v++) await client.createModelVersion({ modelId, sourceUri: `s3://m/${v}` });
    const as = (actor: string) => ({ headers: { "x-mlmesh-actor": actor } });
    await client.setModelVersionAlias({ modelId, alias: "production", version: 1 }, as("alice@laptop"));
    await client.setModelVersionAlias({ modelId, alias: "production", version: 1 }, as("alice@laptop")); // no change, no entry
    await client.setModelVersionAlias({ modelId, alias: "staging", version: 3 }, as("bob@ci"));
    await client.setModelVersionAlias({ modelId, alias: "production", version: 2 }, as("bob@ci"));
    await client.deleteModelVersionAlias({ modelId, alias: "staging" });
    expect((await client.rollbackModelVersionAlias({ modelId, alias: "production" }, as("carol@ops"))).modelVersion!.version).toBe(1);

    const history = await client.listAliasHistory({ modelId });
    expect(history.changes.map((c) => [c.alias, c.previousVersion, c.version, c.actor])).toEqual([
      ["production", 2, 1, "carol@ops"],
      ["staging", 3, 0, "anonymous"],
      ["production", 1, 2, "bob@ci"],
      ["staging", 0, 3, "bob@ci"],
      ["production", 0, 1, "alice@laptop"],
    ]);
    const sequences = history.changes.map((c) => Number(c.sequence));
    expect([...sequences].sort((a, b) => b - a)).toEqual(sequences);
    expect(history.changes.every((c) => c.changeTime !== undefined)).toBe(true);
    const onlyProduction = await client.listAliasHistory({ modelId, alias: "production", pageSize: 2 });
    expect(onlyProduction.changes.map((c) => c.version)).toEqual([1, 2]);
    const rest = await client.listAliasHistory({ modelId, alias: "production", pageSize: 2, pageToken: onlyProduction.nextPageToken });
    expect(rest.changes.map((c) => c.version)).toEqual([1]);
    expect(rest.nextPageToken).toBe("");

    // A second rollback goes back to where the first came from; an alias never set cannot roll back.
    expect((await client.rollbackModelVersionAlias({ modelId, alias: "production" })).modelVersion!.version).toBe(2);
    const fresh = await client.createModel({ projectId: project!.id, name: "fresh" });
    await client.createModelVersion({ modelId: fresh.model!.id, sourceUri: "s3://f/1" });
    await client.setModelVersionAlias({ modelId: fresh.model!.id, alias: "production", version: 1 });
    const first = await failure(client.rollbackModelVersionAlias({ modelId: fresh.model!.id, alias: "production" }));
    expect(first.code).toBe(Code.FailedPrecondition);
    expect((await failure(client.rollbackModelVersionAlias({ modelId, alias: "canary" }))).code).toBe(Code.NotFound);
  });

  it("streams every version and alias change to watchers in order, and resumes after the last sequence seen", async () => {
    const { project } = await client.createProject({ name: "watched" });
    const { model } = await client.createModel({ projectId: project!.id, name: "w" });
    const modelId = model!.id;
    const stop = new AbortController();
    const events: { sequence: bigint; kind: number; version: number; alias: string; modelName: string }[] = [];
    const watching = (async () => {
      for await (const { event } of client.watchModelEvents({ projectName: "watched" }, { signal: stop.signal })) events.push(event!);
    })().catch(() => undefined);
    await expect.poll(() => events.length).toBe(1); // the opening heartbeat
    await client.createModelVersion({ modelId, sourceUri: "s3://w/1" });
    await client.createModelVersion({ modelId, sourceUri: "s3://w/2" });
    await client.setModelVersionAlias({ modelId, alias: "production", version: 2 });
    await expect.poll(() => events.length, { timeout: 5000 }).toBe(4);
    stop.abort();
    await watching;
    expect(events.slice(1).map((e) => [e.kind, e.version, e.alias, e.modelName])).toEqual([
      [1, 1, "", "w"], // VERSION_CREATED
      [1, 2, "", "w"],
      [2, 2, "production", "w"], // ALIAS_SET
    ]);
    // Resuming after the first change replays the two that followed.
    const resumed: number[] = [];
    const again = new AbortController();
    const replay = (async () => {
      for await (const { event } of client.watchModelEvents({ projectName: "watched", afterSequence: events[1].sequence }, { signal: again.signal })) {
        if (event!.kind !== 4) resumed.push(event!.version);
      }
    })().catch(() => undefined);
    await expect.poll(() => resumed).toEqual([2, 2]);
    again.abort();
    await replay;
  });

  it("answers alias lookups from memory yet never stale, across two registry processes on one database", async () => {
    const other = await startService("registry", { DATABASE_URL: database.url });
    try {
      const writer = clientFor(ModelRegistryService, other.baseUrl, "grpc");
      const { project } = await client.createProject({ name: `cache-${dialect}` });
      const { model } = await client.createModel({ projectId: project!.id, name: "cached" });
      const modelId = model!.id;
      for (let i = 0; i < 3; i++) await client.createModelVersion({ modelId, sourceUri: `file://v${i + 1}` });
      await client.setModelVersionAlias({ modelId, alias: "production", version: 1 });
      const lookup = async () => (await client.getModelVersionByAlias({ modelId, alias: "production" })).modelVersion!;
      // Warm this process's cache, then change things through the other process: every change
      // shows on the very next lookup here.
      for (let i = 0; i < 5; i++) expect((await lookup()).version).toBe(1);
      for (const version of [2, 3, 1, 3]) {
        await writer.setModelVersionAlias({ modelId, alias: "production", version });
        const seen = await Promise.all(Array.from({ length: 20 }, lookup)); // concurrent lookups share generation reads
        expect(seen.map((v) => v.version)).toEqual(Array(20).fill(version));
      }
      await writer.setModelVersionTag({ modelId, version: 3, key: "stage", value: "canary" });
      expect((await lookup()).tags).toEqual({ stage: "canary" });
      await writer.createModelVersion({ modelId, sourceUri: "file://v4" });
      expect((await client.getModelVersionByAlias({ modelId, alias: "latest" })).modelVersion!.version).toBe(4);
      await writer.deleteModelVersionAlias({ modelId, alias: "production" });
      expect((await failure(lookup())).code).toBe(Code.NotFound);
      // And this process's own writes show at once too.
      await client.setModelVersionAlias({ modelId, alias: "production", version: 2 });
      expect((await lookup()).aliases).toEqual(["production"]);
      expect((await lookup()).version).toBe(2);
    } finally {
      await other.stop();
    }
  });

  it("answers bad requests with precise statuses and writes nothing", async () => {
    const { project } = await client.createProject({ name: "errors" });
    await client.createModel({ projectId: project!.id, name: "taken" });
    const before = (await client.listModels({})).models.length;
    const cases: [string, () => Promise<unknown>, Code][] = [
      ["duplicate project", () => client.createProject({ name: "errors" }), Code.AlreadyExists],
      ["duplicate model in project", () => client.createModel({ projectId: project!.id, name: "taken" }), Code.AlreadyExists],
      ["model under unknown project", () => client.createModel({ projectId: "no-such-project", name: "orphan" }), Code.NotFound],
      ["unknown project id", () => client.getProject({ projectId: "nope" }), Code.NotFound],
      ["unknown project name", () => client.getProjectByName({ name: "nope" }), Code.NotFound],
      ["unknown model", () => client.getModel({ modelId: "nope" }), Code.NotFound],
      ["experiment of unknown model", () => client.createExperiment({ modelId: "nope" }), Code.NotFound],
      ["unknown experiment", () => client.updateExperimentEvaluations({ experimentId: "nope", evaluations: { a: 1 } }), Code.NotFound],
      ["models of unknown project", () => client.listModels({ project: { case: "projectName", value: "nope" } }), Code.NotFound],
      ["version of unknown model", () => client.createModelVersion({ modelId: "nope", sourceUri: "file://x" }), Code.NotFound],
      ["empty project name", () => client.createProject({ name: "" }), Code.InvalidArgument],
      ["bad project name", () => client.createProject({ name: "has space" }), Code.InvalidArgument],
      ["reserved alias", () => client.setModelVersionAlias({ modelId: "m", alias: "latest", version: 1 }), Code.InvalidArgument],
      ["evaluations missing", () => client.updateExperimentEvaluations({ experimentId: "x" }), Code.InvalidArgument],
      ["version 0", () => client.getModelVersion({ modelId: "m", version: 0 }), Code.InvalidArgument],
      ["source uri missing", () => client.createModelVersion({ modelId: "m" }), Code.InvalidArgument],
    ];
    for (const [name, call, code] of cases) expect((await failure(call())).code, name).toBe(code);
    expect((await client.listModels({})).models.length).toBe(before);
  });

  it("keeps 50 concurrent experiment creates, and lets exactly one of 20 same-name project creates win", async () => {
    const { project } = await client.createProject({ name: "concurrency" });
    const { model } = await client.createModel({ projectId: project!.id, name: "m" });
    const created = await Promise.all(
      Array.from({ length: 50 }, (_, i) => client.createExperiment({ modelId: model!.id, evaluations: { run: i } })),
    );
    const listed = await client.listExperiments({ filter: { case: "modelId", value: model!.id }, pageSize: 100 });
    expect(new Set(listed.experiments.map((e) => e.id))).toEqual(new Set(created.map((c) => c.experiment!.id)));

    const outcomes = await Promise.allSettled(Array.from({ length: 20 }, () => client.createProject({ name: "contended" })));
    expect(outcomes.filter((o) => o.status === "fulfilled")).toHaveLength(1);
    const codes = outcomes.flatMap((o) => (o.status === "rejected" ? [ConnectError.from(o.reason).code] : []));
    expect(codes).toEqual(Array(19).fill(Code.AlreadyExists));

    const versions = await Promise.all(Array.from({ length: 10 }, () => client.createModelVersion({ modelId: model!.id, sourceUri: "file://x" })));
    expect(versions.map((v) => v.modelVersion!.version).sort((a, b) => a - b)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  });

  it("answers grpcurl as the README shows", async () => {
    const result = await run(tools.grpcurl, ["-plaintext", "-d", '{"name":"from-grpcurl"}', registry.address, "mlmesh.registry.v1.ModelRegistryService/CreateProject"]);
    expect(result.code, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout)).toMatchObject({ project: { name: "from-grpcurl" } });
  });

  it("keeps every acknowledged write across a kill mid-write and a restart", async () => {
    const { project } = await client.createProject({ name: "durability" });
    const { model } = await client.createModel({ projectId: project!.id, name: "m" });
    const acknowledged: string[] = [];
    const writes = Array.from({ length: 200 }, (_, i) =>
      client
        .createExperiment({ modelId: model!.id, parameters: { i }, evaluations: { i }, artifactFilePaths: { i: String(i) } })
        .then((r) => acknowledged.push(r.experiment!.id))
        .catch(() => undefined),
    );
    await new Promise((resolve) => setTimeout(resolve, 30));
    await registry.stop("SIGKILL");
    await Promise.all(writes);
    registry = await startService("registry", { DATABASE_URL: database.url });
    client = clientFor(ModelRegistryService, registry.baseUrl, "grpc");
    const listed = await client.listExperiments({ filter: { case: "modelId", value: model!.id }, pageSize: 1000 });
    const stored = new Set(listed.experiments.map((e) => e.id));
    for (const id of acknowledged) expect(stored.has(id), id).toBe(true);
    // No half-written experiment: every stored row has all of what its create carried.
    for (const e of listed.experiments) {
      const i = (e.parameters as { i: number }).i;
      expect(e.evaluations).toEqual({ i });
      expect(e.artifactFilePaths).toEqual({ i: String(i) });
    }
    expect((await client.getProjectByName({ name: "durability" })).project!.id).toBe(project!.id);
  });
});

describe("ModelRegistry and an unreachable PostgreSQL", () => {
  it("answers UNAVAILABLE while the database is unreachable and recovers when it returns", async () => {
    const database = await freshDatabase("postgresql");
    const target = new URL(database.url);
    // A TCP relay in front of PostgreSQL that the test can cut and restore.
    const sockets = new Set<net.Socket>();
    const relay = net.createServer((socket) => {
      const upstream = net.connect(Number(target.port || 5432), target.hostname);
      sockets.add(socket).add(upstream);
      socket.pipe(upstream).pipe(socket);
      const close = () => [socket, upstream].forEach((s) => s.destroy());
      socket.on("error", close).on("close", close);
      upstream.on("error", close).on("close", close);
    });
    await new Promise<void>((resolve) => relay.listen(0, "127.0.0.1", resolve));
    const relayPort = (relay.address() as net.AddressInfo).port;
    const viaRelay = new URL(database.url);
    viaRelay.host = `127.0.0.1:${relayPort}`;
    const registry = await startService("registry", { DATABASE_URL: viaRelay.toString() });
    try {
      const client = clientFor(ModelRegistryService, registry.baseUrl, "grpc");
      await client.createProject({ name: "before-outage" });

      // Stop accepting, then cut the open connections (close() alone waits for them to end,
      // which a registry polling its database never lets happen).
      const closed = new Promise<void>((resolve) => relay.close(() => resolve()));
      sockets.forEach((s) => s.destroy());
      await closed;
      const outage = await failure(client.getProjectByName({ name: "before-outage" }, { timeoutMs: 10_000 }));
      expect(outage.code).toBe(Code.Unavailable);
      expect(outage.rawMessage).toBe("the registry database is unavailable; retry later");

      await new Promise<void>((resolve) => relay.listen(relayPort, "127.0.0.1", resolve));
      await expect
        .poll(async () => (await client.getProjectByName({ name: "before-outage" }).catch(() => undefined))?.project?.name, { timeout: 15_000 })
        .toBe("before-outage");
    } finally {
      await registry.stop();
      relay.close();
      sockets.forEach((s) => s.destroy());
      await database.drop();
    }
  });
});
