import { createHmac, randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { toJson } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { TrafficPolicySchema } from "../../gen/mlmesh/registry/v1/traffic_pb.js";
import { WebhookDeliveryState, type Webhook, type WebhookDelivery } from "../../gen/mlmesh/registry/v1/webhook_pb.js";
import type { Logger } from "../runtime/observability/logger.js";
import { newId } from "../runtime/storage/ids.js";
import type { RegistryDatabase } from "./database.js";
import type { ModelEvent, Webhook as WebhookRow, WebhookDelivery as DeliveryRow } from "./prisma/generated/postgresql/client.js";
import type { RegistryStore } from "./store.js";
import { policyFromJson } from "./traffic-policies.js";

/*
 * Webhooks (webhook.proto). The registry's event log (model_events, written in each change's
 * transaction) is the outbox: each webhook follows it from a cursor, and the events it wants
 * become delivery rows in the same transaction that moves the cursor. Deliveries are POSTed,
 * signed, and retried with backoff until a 2xx or REGISTRY_WEBHOOK_MAX_ATTEMPTS; a delivery is
 * claimed by moving next_attempt_at forward with a conditional update, so two registry
 * processes never send one at once, and a restart resends what was not acknowledged (a
 * receiver acts once per x-mlmesh-delivery).
 */

/** Every event type a webhook can ask for. */
const webhookEventTypes = [
  "version.created",
  "alias.moved",
  "alias.deleted",
  "policy.set",
  "policy.deleted",
  "rollout.started",
  "rollout.step",
  "rollout.paused",
  "rollout.resumed",
  "rollout.succeeded",
  "rollout.rolled_back",
  "rollout.aborted",
] as const;

export interface WebhookSettings {
  /** REGISTRY_WEBHOOK_TICK: how often due deliveries and new events are looked for. */
  readonly tickMs: number;
  /** REGISTRY_WEBHOOK_MAX_ATTEMPTS: attempts before a delivery is FAILED. */
  readonly maxAttempts: number;
  /** REGISTRY_WEBHOOK_RETRY_BASE: the first retry's delay, doubled each time up to 10 minutes. */
  readonly retryBaseMs: number;
  /** REGISTRY_WEBHOOK_TIMEOUT: how long a receiver has to answer. */
  readonly timeoutMs: number;
}

const maxRetryMs = 600_000;
/** How often webhooks are looked for while there is none (or the database fails). */
const idlePollMs = 10_000;

/** The webhook type of a logged event. */
function eventType(event: Pick<ModelEvent, "kind" | "rolloutState" | "reason">): string {
  switch (event.kind) {
    case "VERSION_CREATED":
      return "version.created";
    case "ALIAS_SET":
      return "alias.moved";
    case "ALIAS_DELETED":
      return "alias.deleted";
    case "POLICY_SET":
      return "policy.set";
    case "POLICY_DELETED":
      return "policy.deleted";
    case "ROLLOUT":
      if (event.rolloutState !== "RUNNING") return `rollout.${event.rolloutState.toLowerCase()}`;
      return event.reason.startsWith("started") ? "rollout.started" : event.reason.startsWith("resumed") ? "rollout.resumed" : "rollout.step";
    default:
      return `unknown.${event.kind.toLowerCase()}`;
  }
}

/** The JSON body of a delivery. */
function payloadOf(deliveryId: string, event: ModelEvent): string {
  const policy = (json: string | null) => {
    const parsed = policyFromJson(json);
    return parsed === undefined ? null : toJson(TrafficPolicySchema, parsed);
  };
  return JSON.stringify({
    id: deliveryId,
    type: eventType(event),
    sequence: event.sequence,
    time: event.createdAt.toISOString(),
    project: { id: event.projectId, name: event.projectName },
    model: { id: event.modelId, name: event.modelName },
    version: event.version,
    alias: event.alias,
    previous_version: event.previousVersion,
    actor: event.actor,
    reason: event.reason,
    policy: policy(event.policy),
    previous_policy: policy(event.previousPolicy),
    rollout: event.rolloutId === "" ? null : { id: event.rolloutId, state: event.rolloutState },
  });
}

/** x-mlmesh-signature of a body: "t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">". */
function webhookSignature(secret: string, body: string, unixSeconds: number): string {
  return `t=${unixSeconds},v1=${createHmac("sha256", secret).update(`${unixSeconds}.${body}`).digest("hex")}`;
}

export class WebhookDispatcher {
  #wake = new AbortController();

  constructor(
    private readonly db: RegistryDatabase,
    private readonly store: RegistryStore,
    private readonly settings: WebhookSettings,
    private readonly logger: Logger,
  ) {}

  async create(url: string, secret: string, events: readonly string[], description: string): Promise<Webhook> {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new ConnectError(`url "${url}" is not a URL`, Code.InvalidArgument);
    }
    if (parsed.protocol !== "http:" && parsed.protocol !== "https:") throw new ConnectError(`url must be http or https, got ${parsed.protocol}`, Code.InvalidArgument);
    const unknown = events.filter((e) => !(webhookEventTypes as readonly string[]).includes(e));
    if (unknown.length > 0) throw new ConnectError(`unknown event types: ${unknown.join(", ")}; known: ${webhookEventTypes.join(", ")}`, Code.InvalidArgument);
    if (secret !== "" && secret.length < 16) throw new ConnectError("secret must be at least 16 characters (or empty: the registry generates one)", Code.InvalidArgument);
    const key = secret === "" ? randomBytes(32).toString("base64url") : secret;
    // From the next event on.
    const row = await this.db.webhook.create({ data: { id: newId(), url, secret: key, events: JSON.stringify(events), description, cursor: await this.store.latestSequence() } });
    this.logger.info({ webhook: row.id, url, events }, "webhook created");
    this.#wake.abort();
    return { ...webhookOut(row), secret: key };
  }

  async list(): Promise<Webhook[]> {
    return (await this.db.webhook.findMany({ orderBy: { id: "asc" } })).map(webhookOut);
  }

  async delete(id: string): Promise<void> {
    const deleted = await this.db.webhook.deleteMany({ where: { id } });
    if (deleted.count === 0) throw new ConnectError(`webhook ${id} not found`, Code.NotFound);
  }

  async deliveries(webhookId: string, size: number, before: string | undefined): Promise<{ deliveries: WebhookDelivery[]; last: string | undefined }> {
    if ((await this.db.webhook.findUnique({ where: { id: webhookId } })) === null) throw new ConnectError(`webhook ${webhookId} not found`, Code.NotFound);
    const rows = await this.db.webhookDelivery.findMany({ where: { webhookId, ...(before ? { id: { lt: before } } : {}) }, orderBy: { id: "desc" }, take: size + 1 });
    const page = rows.slice(0, size);
    return { deliveries: page.map(deliveryOut), last: rows.length > size ? page[page.length - 1].id : undefined };
  }

  /** The delivery's event again, as a new delivery. */
  async redeliver(deliveryId: string): Promise<WebhookDelivery> {
    const first = await this.db.webhookDelivery.findUnique({ where: { id: deliveryId } });
    if (first === null) throw new ConnectError(`webhook delivery ${deliveryId} not found`, Code.NotFound);
    const id = newId();
    const payload = JSON.stringify({ ...(JSON.parse(first.payload) as object), id });
    const row = await this.db.webhookDelivery.create({
      data: { id, webhookId: first.webhookId, eventSequence: first.eventSequence, eventType: first.eventType, payload, state: "PENDING", nextAttemptAt: new Date(), redeliveryOf: first.id },
    });
    this.#wake.abort();
    return deliveryOut(row);
  }

  /** Follows the event log and sends deliveries until `stop`. */
  async run(stop: AbortSignal): Promise<void> {
    let waitMs = this.settings.tickMs;
    while (!stop.aborted) {
      try {
        // No webhook: nothing to read until one is created here, or (another registry's) in 10 s.
        waitMs = (await this.fanOut()) === 0 ? idlePollMs : this.settings.tickMs;
        if (waitMs !== idlePollMs) await this.deliverDue(stop);
      } catch (err) {
        waitMs = Math.min(Math.max(waitMs * 2, this.settings.tickMs), idlePollMs);
        this.logger.warn({ reason: (err as Error).message, retryMs: waitMs }, "webhooks: a pass failed; trying again");
      }
      this.#wake = new AbortController();
      await sleep(waitMs, undefined, { signal: AbortSignal.any([stop, this.#wake.signal]) }).catch(() => undefined);
    }
  }

  /** An event was committed here: look at once. */
  notify(): void {
    this.#wake.abort();
  }

  /** Turns each webhook's new events into deliveries, moving its cursor in the same transaction; returns the number of webhooks. */
  async fanOut(): Promise<number> {
    const webhooks = await this.db.webhook.findMany();
    for (const webhook of webhooks) {
      const events = await this.store.eventsAfter(webhook.cursor, "", 500);
      if (events.length === 0) continue;
      const wanted = JSON.parse(webhook.events) as string[];
      const now = new Date();
      const deliveries = events
        .filter((e) => wanted.length === 0 || wanted.includes(eventType(e)))
        .map((e) => {
          const id = newId();
          return { id, webhookId: webhook.id, eventSequence: e.sequence, eventType: eventType(e), payload: payloadOf(id, e), state: "PENDING", nextAttemptAt: now };
        });
      await this.db.$transaction(async (tx) => {
        const moved = await tx.webhook.updateMany({ where: { id: webhook.id, cursor: webhook.cursor }, data: { cursor: events[events.length - 1].sequence } });
        if (moved.count !== 1) return; // another registry moved it
        if (deliveries.length > 0) await tx.webhookDelivery.createMany({ data: deliveries });
      });
    }
    return webhooks.length;
  }

  /** Sends the deliveries that are due, each once claimed. */
  async deliverDue(stop: AbortSignal): Promise<void> {
    const now = new Date();
    const due = await this.db.webhookDelivery.findMany({ where: { state: "PENDING", nextAttemptAt: { lte: now } }, orderBy: [{ eventSequence: "asc" }, { id: "asc" }], take: 50, include: { webhook: true } });
    for (const delivery of due) {
      if (stop.aborted) return;
      // The claim: no other registry sends it while this attempt may still be running.
      const lease = new Date(now.getTime() + this.settings.timeoutMs + 5000);
      const claimed = await this.db.webhookDelivery.updateMany({ where: { id: delivery.id, state: "PENDING", nextAttemptAt: delivery.nextAttemptAt }, data: { nextAttemptAt: lease } });
      if (claimed.count !== 1) continue;
      await this.#attempt(delivery, delivery.webhook);
    }
  }

  async #attempt(delivery: DeliveryRow, webhook: WebhookRow): Promise<void> {
    const unixSeconds = Math.floor(Date.now() / 1000);
    let status = 0;
    let error = "";
    try {
      const response = await fetch(webhook.url, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          "user-agent": "mlmesh-registry",
          "x-mlmesh-delivery": delivery.id,
          "x-mlmesh-event": delivery.eventType,
          "x-mlmesh-signature": webhookSignature(webhook.secret, delivery.payload, unixSeconds),
        },
        body: delivery.payload,
        signal: AbortSignal.timeout(this.settings.timeoutMs),
        redirect: "manual",
      });
      status = response.status;
      await response.body?.cancel();
      if (status < 200 || status > 299) error = `the receiver answered HTTP ${status}`;
    } catch (err) {
      error = (err as Error).name === "TimeoutError" ? `no answer within ${this.settings.timeoutMs} ms` : `unreachable: ${((err as Error).cause as Error | undefined)?.message ?? (err as Error).message}`;
    }
    const attempts = delivery.attempts + 1;
    if (error === "") {
      await this.db.webhookDelivery.update({ where: { id: delivery.id }, data: { state: "DELIVERED", attempts, lastStatus: status, lastError: "", deliveredAt: new Date() } });
      return;
    }
    const failed = attempts >= this.settings.maxAttempts;
    const retryMs = Math.min(this.settings.retryBaseMs * 2 ** (attempts - 1), maxRetryMs);
    await this.db.webhookDelivery.update({
      where: { id: delivery.id },
      data: { state: failed ? "FAILED" : "PENDING", attempts, lastStatus: status, lastError: error, nextAttemptAt: new Date(Date.now() + (failed ? 0 : retryMs)) },
    });
    this.logger.warn({ webhook: webhook.id, delivery: delivery.id, attempts, reason: error, ...(failed ? {} : { retryMs }) }, failed ? "webhook delivery failed for good" : "webhook delivery failed; retrying");
  }
}

function webhookOut(row: WebhookRow): Webhook {
  return {
    $typeName: "mlmesh.registry.v1.Webhook",
    id: row.id,
    url: row.url,
    events: JSON.parse(row.events) as string[],
    description: row.description,
    secret: "",
    createTime: timestampFromDate(row.createdAt),
  };
}

const deliveryStates: Readonly<Record<string, WebhookDeliveryState>> = {
  PENDING: WebhookDeliveryState.PENDING,
  DELIVERED: WebhookDeliveryState.DELIVERED,
  FAILED: WebhookDeliveryState.FAILED,
};

function deliveryOut(row: DeliveryRow): WebhookDelivery {
  return {
    $typeName: "mlmesh.registry.v1.WebhookDelivery",
    id: row.id,
    webhookId: row.webhookId,
    eventSequence: BigInt(row.eventSequence),
    eventType: row.eventType,
    state: deliveryStates[row.state] ?? WebhookDeliveryState.UNSPECIFIED,
    attempts: row.attempts,
    lastStatusCode: row.lastStatus,
    lastError: row.lastError,
    nextAttemptTime: row.state === "PENDING" ? timestampFromDate(row.nextAttemptAt) : undefined,
    deliveredTime: row.deliveredAt === null ? undefined : timestampFromDate(row.deliveredAt),
    createTime: timestampFromDate(row.createdAt),
    redeliveryOf: row.redeliveryOf,
  };
}
