// Registry webhooks (issue 22) with real processes: a real HTTP receiver in the test verifies
// each delivery's HMAC-SHA256 signature and acts once per delivery id; the registry retries
// with backoff, and a registry killed with deliveries outstanding sends them after its restart.
import { createHmac, timingSafeEqual } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RolloutChange } from "../gen/mlmesh/registry/v1/registry_pb.js";
import { WebhookDeliveryState } from "../gen/mlmesh/registry/v1/webhook_pb.js";
import { pushModelFolder, registryClient, resolveModel, type RegistryClient } from "../services/cli/model-push.js";
import { failure } from "./support/clients.js";
import { freshDatabase, type TestDatabase } from "./support/databases.js";
import { repoRoot, startService, type ServiceProcess } from "./support/service-process.js";

const secret = "a-test-secret-of-enough-length";

/** A webhook receiver: checks signatures, keeps each delivery id's first body, answers `status`. */
class Receiver {
  status = 503;
  /** Every POST, in order. */
  readonly received: { delivery: string; event: string; body: Record<string, unknown>; signatureOk: boolean }[] = [];
  readonly server = http.createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on("data", (c: Buffer) => chunks.push(c)).on("end", () => {
      const body = Buffer.concat(chunks).toString("utf8");
      const match = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(String(request.headers["x-mlmesh-signature"] ?? ""));
      const expected = match && createHmac("sha256", secret).update(`${match[1]}.${body}`).digest();
      const signatureOk = match !== null && timingSafeEqual(expected!, Buffer.from(match[2], "hex")) && Math.abs(Date.now() / 1000 - Number(match[1])) < 300;
      this.received.push({ delivery: String(request.headers["x-mlmesh-delivery"]), event: String(request.headers["x-mlmesh-event"]), body: JSON.parse(body) as Record<string, unknown>, signatureOk });
      response.writeHead(this.status).end();
    });
  });
  url = "";

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/hooks`;
  }

  /** Each delivery id seen with a correct signature, and its first body: what a receiver acts on once. */
  accepted(): Map<string, { event: string; body: Record<string, unknown> }> {
    const once = new Map<string, { event: string; body: Record<string, unknown> }>();
    for (const r of this.received) if (r.signatureOk && !once.has(r.delivery)) once.set(r.delivery, r);
    return once;
  }
}

describe.each(["sqlite", "postgresql"] as const)("webhooks on %s", (dialect) => {
  let database: TestDatabase;
  let artifactDir: string;
  let registry: ServiceProcess;
  let client: RegistryClient;
  const receiver = new Receiver();
  const registryEnv = () => ({
    DATABASE_URL: database.url,
    ARTIFACT_DIR: artifactDir,
    REGISTRY_WEBHOOK_TICK: "100ms",
    REGISTRY_WEBHOOK_RETRY_BASE: "100ms",
    REGISTRY_WEBHOOK_TIMEOUT: "2s",
    // Rollouts need a monitor to start; this one is never read (the rollout is aborted at once).
    MONITOR_ADDRESS: "127.0.0.1:9",
  });

  beforeAll(async () => {
    database = await freshDatabase(dialect);
    artifactDir = await mkdtemp(join(tmpdir(), "mlmesh-artifacts-"));
    await receiver.start();
    registry = await startService("registry", registryEnv());
    client = registryClient(registry.address, "webhook-test");
  });
  afterAll(async () => {
    await registry?.stop();
    receiver.server.close();
    await database?.drop();
    if (artifactDir) await rm(artifactDir, { recursive: true, force: true });
  });

  it("refuses a webhook it could not send, naming why", async () => {
    expect((await failure(client.createWebhook({ url: "ftp://example.com/x" }))).rawMessage).toMatch(/http or https/);
    expect((await failure(client.createWebhook({ url: "not a url" }))).code).toBe(Code.InvalidArgument);
    expect((await failure(client.createWebhook({ url: receiver.url, events: ["version.made"] }))).rawMessage).toMatch(/unknown event types: version.made/);
    expect((await failure(client.createWebhook({ url: receiver.url, secret: "short" }))).rawMessage).toMatch(/at least 16 characters/);
  });

  it("delivers every event, signed, once per delivery id, across a registry killed with deliveries outstanding", async () => {
    const { webhook } = await client.createWebhook({ url: receiver.url, secret, description: "the test's receiver" });
    expect(webhook?.secret).toBe(secret);
    expect((await client.listWebhooks({})).webhooks.map((w) => [w.id, w.secret])).toEqual([[webhook!.id, ""]]);
    const { generated } = { generated: (await client.createWebhook({ url: `${receiver.url}?other`, events: ["alias.moved"] })).webhook! };
    expect(generated.secret.length).toBeGreaterThanOrEqual(32);
    await client.deleteWebhook({ webhookId: generated.id });

    // The receiver refuses (503): deliveries pile up, retried with backoff.
    const modelId = (await resolveModel(client, { project: "hooks", name: "iris_svc" }, true)).id;
    await pushModelFolder(client, join(repoRoot, "models/iris_svc/1"), { modelId, modelName: "iris_svc", alias: "production" });
    await pushModelFolder(client, join(repoRoot, "test/fixtures/models/iris_svc/2"), { modelId, modelName: "iris_svc" });
    await client.setTrafficPolicy({ modelId, alias: "production", policy: { arms: [{ version: 1, weight: 90 }, { version: 2, weight: 10 }] } });
    await client.deleteTrafficPolicy({ modelId, alias: "production" });
    const rollout = (await client.startRollout({ modelId, alias: "production", toVersion: 2, interval: { seconds: 3600n } })).rollout!;
    await client.changeRollout({ rolloutId: rollout.id, change: RolloutChange.ABORT });
    const expected = [
      "version.created", "alias.moved", "version.created", "policy.set", "policy.deleted",
      "policy.set", "rollout.started", "policy.deleted", "rollout.aborted",
    ];
    const log = async () => (await client.listWebhookDeliveries({ webhookId: webhook!.id })).deliveries;
    await expect.poll(async () => (await log()).filter((d) => d.attempts >= 2).length, { timeout: 10_000 }).toBe(expected.length);
    const deliveries = await log();
    expect(deliveries.every((d) => d.state === WebhookDeliveryState.PENDING && d.lastStatusCode === 503 && d.lastError === "the receiver answered HTTP 503")).toBe(true);
    expect(receiver.accepted().size).toBe(expected.length); // seen (and refused), each id once or more

    // Killed (no graceful stop) with every delivery outstanding; the receiver comes back meanwhile.
    await registry.stop("SIGKILL");
    receiver.status = 204;
    registry = await startService("registry", { ...registryEnv(), REGISTRY_PORT: registry.address.split(":")[1] });
    client = registryClient(registry.address, "webhook-test");
    await expect
      .poll(async () => (await client.listWebhookDeliveries({ webhookId: webhook!.id })).deliveries.every((d) => d.state === WebhookDeliveryState.DELIVERED), { timeout: 10_000 })
      .toBe(true);

    expect(receiver.received.every((r) => r.signatureOk)).toBe(true);
    const accepted = [...receiver.accepted().values()].sort((a, b) => Number(a.body.sequence) - Number(b.body.sequence));
    expect(accepted.map((a) => a.event)).toEqual(expected);
    expect(accepted.every((a) => a.body.type === a.event && (a.body.model as { id: string }).id === modelId)).toBe(true);
    expect(accepted.find((a) => a.event === "policy.set")?.body.policy).toEqual({ arms: [{ version: 1, weight: 90 }, { version: 2, weight: 10 }] });
    expect(accepted.find((a) => a.event === "rollout.aborted")?.body.rollout).toEqual({ id: rollout.id, state: "ABORTED" });
    // Each delivery id carried one event: the sequences are distinct.
    expect(new Set(accepted.map((a) => a.body.sequence)).size).toBe(expected.length);

    // Redelivery: the same event under a new delivery id.
    const first = (await client.listWebhookDeliveries({ webhookId: webhook!.id })).deliveries.at(-1)!;
    const { delivery } = await client.redeliverWebhookDelivery({ deliveryId: first.id });
    expect(delivery).toMatchObject({ redeliveryOf: first.id, eventSequence: first.eventSequence, state: WebhookDeliveryState.PENDING });
    await expect.poll(() => receiver.accepted().has(delivery!.id), { timeout: 10_000 }).toBe(true);
    expect(receiver.accepted().get(delivery!.id)?.body.sequence).toBe(Number(first.eventSequence));
    expect((await failure(client.redeliverWebhookDelivery({ deliveryId: "nope" }))).code).toBe(Code.NotFound);
  });
});
