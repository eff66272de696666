import { setTimeout as sleep } from "node:timers/promises";
import { create, fromJsonString, toJsonString } from "@bufbuild/protobuf";
import { durationFromMs, durationMs, timestampFromDate, timestampFromMs, type Duration } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { MonitorService } from "../../gen/mlmesh/monitor/v1/monitor_pb.js";
import {
  RollbackRule,
  RolloutGatesSchema,
  RolloutObservationSchema,
  RolloutState,
  type Rollout,
  type RolloutGates,
  type RolloutObservation,
} from "../../gen/mlmesh/registry/v1/rollout_pb.js";
import { RolloutChange, type StartRolloutRequest } from "../../gen/mlmesh/registry/v1/registry_pb.js";
import { TrafficPolicySchema, type TrafficPolicy } from "../../gen/mlmesh/registry/v1/traffic_pb.js";
import type { MeshCredentials } from "../runtime/client/mesh-credentials.js";
import { meshTransport } from "../runtime/client/mesh-transport.js";
import type { Logger } from "../runtime/observability/logger.js";
import { newId } from "../runtime/storage/ids.js";
import type { RegistryDatabase } from "./database.js";
import type { Rollout as RolloutRow } from "./prisma/generated/postgresql/client.js";
import type { RegistryStore, Tx } from "./store.js";
import { policyFromJson, policyToJson } from "./traffic-policies.js";

/*
 * Canary rollouts (rollout.proto): a row per rollout holds all its state; a controller loop
 * judges each RUNNING rollout when its next check is due. A check is claimed by moving
 * next_check_at forward with a conditional update, so two registry processes never judge one
 * rollout at once, and a registry restarted in the middle picks up where the row says. The
 * figures come from the monitor (GetTrafficStats) for the time since the step started; every
 * weight change, the promotion and a rollback are written with the alias history's reason in
 * the same transaction as the row.
 */

const defaultSteps = [10, 50, 100];
const defaultIntervalMs = 60_000;
/** How often the controller looks for rollouts while none runs (or the database fails). */
const idlePollMs = 10_000;
const defaultGates = { minRequests: 100, maxErrorRate: 0.01 };

/** What a check decided. */
type Decision = { kind: "wait" | "advance" | "fail"; reason: string };

/** Where a rollout's figures come from: the monitor, for one model and a time range. */
export type TrafficReader = (
  model: string,
  sinceMs: number,
) => Promise<{
  versions: { version: number; requests: number; errors: number; p99Ms: number }[];
  shadows: { primaryVersion: number; shadowVersion: number; calls: number; failed: number; rows: number; agreeingRows: number }[];
}>;

/** The monitor's GetTrafficStats as a TrafficReader. */
export function monitorTrafficReader(address: string, credentials: MeshCredentials | undefined): TrafficReader {
  const client: Client<typeof MonitorService> = createClient(MonitorService, meshTransport(address, { credentials }));
  return async (model, sinceMs) => {
    const stats = await client.getTrafficStats({ model, startTime: timestampFromMs(sinceMs) }, { timeoutMs: 5000 });
    return {
      versions: stats.versions.map((v) => ({ version: v.version, requests: Number(v.requests), errors: Number(v.errors), p99Ms: v.p99Latency ? durationMs(v.p99Latency) : 0 })),
      shadows: stats.shadows.map((s) => ({
        primaryVersion: s.primaryVersion,
        shadowVersion: s.shadowVersion,
        calls: Number(s.calls),
        failed: Number(s.failed),
        rows: Number(s.rows),
        agreeingRows: Number(s.agreeingRows),
      })),
    };
  };
}

export class RolloutController {
  /** Ends the controller's idle wait (a rollout started or resumed here). */
  #wake = new AbortController();

  constructor(
    private readonly db: RegistryDatabase,
    private readonly store: RegistryStore,
    /** Undefined: no monitor configured; StartRollout answers FAILED_PRECONDITION. */
    private readonly traffic: TrafficReader | undefined,
    private readonly logger: Logger,
    /** Wakes watch streams after a change (EventFeed.notify). */
    private readonly notify: () => void,
  ) {}

  async start(request: StartRolloutRequest, actor: string): Promise<Rollout> {
    if (this.traffic === undefined) {
      throw new ConnectError("canary rollouts read their gates from the monitor: start the registry with MONITOR_ADDRESS", Code.FailedPrecondition);
    }
    const steps = request.steps.length === 0 ? defaultSteps : [...request.steps];
    if (steps[0] === 0 && !(request.gates && request.gates.minShadowAgreement > 0)) {
      throw new ConnectError("a shadow step (0 %) is judged on the candidate's agreement: set gates.min_shadow_agreement", Code.InvalidArgument);
    }
    for (let i = 1; i < steps.length; i++) {
      if (steps[i] <= steps[i - 1]) throw new ConnectError(`steps must increase: ${steps.join(", ")}`, Code.InvalidArgument);
    }
    if (steps[steps.length - 1] !== 100) throw new ConnectError(`the last step must be 100 (the candidate takes every call): ${steps.join(", ")}`, Code.InvalidArgument);
    const intervalMs = request.interval === undefined ? defaultIntervalMs : durationMs(request.interval);
    const gates = request.gates ?? create(RolloutGatesSchema, defaultGates);
    const rule = request.rollbackRule === RollbackRule.PAUSE ? "PAUSE" : "ROLL_BACK";
    const { modelId, alias, toVersion } = request;
    const row = await this.store.transact(async (tx) => {
      const current = await this.store.aliasOf(tx, modelId, alias);
      const fromVersion = current.version.version;
      if (fromVersion === toVersion) throw new ConnectError(`alias "${alias}" points at version ${toVersion} already: nothing to roll out`, Code.InvalidArgument);
      await this.store.checkServable(tx, modelId, new Set([toVersion]), "rollout");
      const active = await tx.rollout.findFirst({ where: { modelId, alias, state: { in: ["RUNNING", "PAUSED"] } } });
      if (active !== null) throw new ConnectError(`alias "${alias}" has a rollout under way (${active.id}, to version ${active.toVersion}, ${active.state.toLowerCase()}): promote or abort it first`, Code.AlreadyExists);
      const now = new Date();
      const created = await tx.rollout.create({
        data: {
          id: newId(),
          modelId,
          alias,
          fromVersion,
          toVersion,
          steps: JSON.stringify(steps),
          intervalMs,
          gates: toJsonString(RolloutGatesSchema, gates),
          rollbackRule: rule,
          state: "RUNNING",
          lastDecision: `started: step 1 of ${steps.length} (${steps[0]} %)`,
          previousPolicy: current.policy,
          actor,
          stepStartedAt: now,
          nextCheckAt: new Date(now.getTime() + checkEveryMs(intervalMs)),
        },
      });
      const reason = `rollout ${created.id} to version ${toVersion}: step 1 of ${steps.length} (${steps[0]} %)`;
      await this.store.writePolicy(tx, modelId, alias, policyToJson(stepPolicy(created, 0)), actor, reason);
      await this.#event(tx, created, actor, `started: ${reason}`);
      return created;
    });
    this.notify();
    this.#wake.abort();
    this.logger.info({ rollout: row.id, modelId, alias, from: row.fromVersion, to: toVersion, steps }, "rollout started");
    return rolloutOut(row);
  }

  async get(id: string): Promise<Rollout> {
    const row = await this.db.rollout.findUnique({ where: { id } });
    if (row === null) throw new ConnectError(`rollout ${id} not found`, Code.NotFound);
    return rolloutOut(row);
  }

  async list(modelId: string, size: number, before: string | undefined): Promise<{ rollouts: Rollout[]; last: string | undefined }> {
    await this.store.getModel(modelId);
    const rows = await this.db.rollout.findMany({ where: { modelId, ...(before ? { id: { lt: before } } : {}) }, orderBy: { id: "desc" }, take: size + 1 });
    const page = rows.slice(0, size);
    return { rollouts: page.map(rolloutOut), last: rows.length > size ? page[page.length - 1].id : undefined };
  }

  /** A person's change: pause, resume, promote or abort. */
  async change(id: string, change: RolloutChange, actor: string): Promise<Rollout> {
    const row = await this.store.transact(async (tx) => {
      const current = await tx.rollout.findUnique({ where: { id } });
      if (current === null) throw new ConnectError(`rollout ${id} not found`, Code.NotFound);
      const ended = current.state !== "RUNNING" && current.state !== "PAUSED";
      if (ended) throw new ConnectError(`rollout ${id} has ended (${current.state.toLowerCase().replace("_", " ")})`, Code.FailedPrecondition);
      const by = `by ${actor}`;
      switch (change) {
        case RolloutChange.PAUSE: {
          if (current.state === "PAUSED") throw new ConnectError(`rollout ${id} is paused already`, Code.FailedPrecondition);
          const paused = await tx.rollout.update({ where: { id }, data: { state: "PAUSED", lastDecision: `paused ${by}` } });
          await this.#event(tx, paused, actor, paused.lastDecision);
          return paused;
        }
        case RolloutChange.RESUME: {
          if (current.state === "RUNNING") throw new ConnectError(`rollout ${id} is running already`, Code.FailedPrecondition);
          const now = new Date();
          const resumed = await tx.rollout.update({ where: { id }, data: { state: "RUNNING", lastDecision: `resumed ${by}`, stepStartedAt: now, nextCheckAt: new Date(now.getTime() + checkEveryMs(current.intervalMs)) } });
          await this.#event(tx, resumed, actor, resumed.lastDecision);
          return resumed;
        }
        case RolloutChange.PROMOTE:
          return this.#promote(tx, current, actor, `promoted ${by}`);
        case RolloutChange.ABORT:
          return this.#revert(tx, current, "ABORTED", actor, `aborted ${by}`);
        default:
          throw new ConnectError("change must be PAUSE, RESUME, PROMOTE or ABORT", Code.InvalidArgument);
      }
    });
    this.notify();
    this.#wake.abort();
    this.logger.info({ rollout: id, state: row.state, actor }, row.lastDecision);
    return rolloutOut(row);
  }

  /**
   * Runs the controller until `stop`: every `tickMs` while rollouts run, every 10 s while none
   * does (one started elsewhere, by another registry process, is found then), backing off to
   * 10 s while the database fails.
   */
  async run(stop: AbortSignal, tickMs: number): Promise<void> {
    let waitMs = tickMs;
    while (!stop.aborted) {
      try {
        waitMs = (await this.tick(new Date())) ? tickMs : idlePollMs;
      } catch (err) {
        waitMs = Math.min(Math.max(waitMs * 2, tickMs), idlePollMs);
        this.logger.warn({ reason: (err as Error).message, retryMs: waitMs }, "rollout controller: a check failed; trying again");
      }
      this.#wake = new AbortController();
      await sleep(waitMs, undefined, { signal: AbortSignal.any([stop, this.#wake.signal]) }).catch(() => undefined);
    }
  }

  /** Judges each RUNNING rollout whose check is due, once claimed; true when any runs. */
  async tick(now: Date): Promise<boolean> {
    const running = await this.db.rollout.findMany({ where: { state: "RUNNING" }, orderBy: { nextCheckAt: "asc" }, take: 100 });
    for (const row of running) {
      if (row.nextCheckAt > now) continue;
      const next = new Date(now.getTime() + checkEveryMs(row.intervalMs));
      const claimed = await this.db.rollout.updateMany({ where: { id: row.id, state: "RUNNING", nextCheckAt: row.nextCheckAt }, data: { nextCheckAt: next } });
      if (claimed.count !== 1) continue; // another registry took it
      await this.#check({ ...row, nextCheckAt: next }, now);
    }
    return running.length > 0;
  }

  async #check(row: RolloutRow, now: Date): Promise<void> {
    const steps = JSON.parse(row.steps) as number[];
    const gates = fromJsonString(RolloutGatesSchema, row.gates);
    const where = `step ${row.step + 1} of ${steps.length} (${steps[row.step]} %)`;
    let decision: Decision;
    let observation: RolloutObservation | undefined;
    try {
      const model = await this.store.getModel(row.modelId);
      const stats = await this.traffic!(model.name, row.stepStartedAt.getTime());
      const pair = stats.shadows.find((s) => s.primaryVersion === row.fromVersion && s.shadowVersion === row.toVersion);
      // A shadow step: the candidate's copies stand for its calls.
      const candidate =
        steps[row.step] === 0
          ? { requests: pair?.calls ?? 0, errors: pair?.failed ?? 0, p99Ms: 0 }
          : (stats.versions.find((v) => v.version === row.toVersion) ?? { requests: 0, errors: 0, p99Ms: 0 });
      observation = create(RolloutObservationSchema, {
        requests: BigInt(candidate.requests),
        errors: BigInt(candidate.errors),
        p99Latency: durationFromMs(candidate.p99Ms),
        shadowRows: BigInt(pair?.rows ?? 0),
        shadowAgreement: pair !== undefined && pair.rows > 0 ? pair.agreeingRows / pair.rows : undefined,
      });
      decision = judge(gates, observation, now.getTime() - row.stepStartedAt.getTime() >= row.intervalMs);
    } catch (err) {
      decision = { kind: "wait", reason: `the monitor could not be read (${ConnectError.from(err).rawMessage}); no decision` };
    }
    const reason = `${where}: ${decision.reason}`;
    const observed = observation === undefined ? row.observation : toJsonString(RolloutObservationSchema, observation);
    const changed = await this.store.transact(async (tx) => {
      // Still ours and still running (a person may have paused or aborted it meanwhile).
      const current = await tx.rollout.findUnique({ where: { id: row.id } });
      if (current === null || current.state !== "RUNNING" || current.nextCheckAt.getTime() !== row.nextCheckAt.getTime()) return undefined;
      if (decision.kind === "wait") return tx.rollout.update({ where: { id: row.id }, data: { lastDecision: reason, observation: observed } });
      if (decision.kind === "fail") {
        if (row.rollbackRule === "PAUSE") {
          const paused = await tx.rollout.update({ where: { id: row.id }, data: { state: "PAUSED", lastDecision: `${reason}; paused (rollback rule)`, observation: observed } });
          await this.#event(tx, paused, "rollout-controller", paused.lastDecision);
          return paused;
        }
        return this.#revert(tx, { ...current, observation: observed }, "ROLLED_BACK", "rollout-controller", `${reason}; rolled back`);
      }
      const nextStep = row.step + 1;
      if (steps[nextStep] === undefined || steps[nextStep] === 100) return this.#promote(tx, { ...current, observation: observed }, "rollout-controller", `${reason}; promoted`);
      await this.store.writePolicy(tx, row.modelId, row.alias, policyToJson(stepPolicy(current, nextStep)), "rollout-controller", `rollout ${row.id}: ${reason}; step ${nextStep + 1} of ${steps.length} (${steps[nextStep]} %)`);
      const advanced = await tx.rollout.update({
        where: { id: row.id },
        data: { step: nextStep, stepStartedAt: now, lastDecision: `${reason}; advanced to step ${nextStep + 1} (${steps[nextStep]} %)`, observation: observed },
      });
      await this.#event(tx, advanced, "rollout-controller", advanced.lastDecision);
      return advanced;
    });
    if (changed === undefined) return;
    if (decision.kind !== "wait") {
      this.notify();
      this.logger.info({ rollout: row.id, state: changed.state, step: changed.step }, changed.lastDecision);
    }
  }

  /** The alias moves to the candidate and its policy is removed; SUCCEEDED. */
  async #promote(tx: Tx, row: RolloutRow, actor: string, decision: string): Promise<RolloutRow> {
    const reason = `rollout ${row.id}: ${decision}`;
    await this.store.moveAliasTo(tx, row.modelId, row.alias, row.toVersion, actor, reason);
    await this.store.writePolicy(tx, row.modelId, row.alias, null, actor, reason);
    const promoted = await tx.rollout.update({ where: { id: row.id }, data: { state: "SUCCEEDED", lastDecision: decision, observation: row.observation } });
    await this.#event(tx, promoted, actor, decision);
    return promoted;
  }

  /** Every call goes back to the version the alias points at (its policy before the rollout). */
  async #revert(tx: Tx, row: RolloutRow, state: "ROLLED_BACK" | "ABORTED", actor: string, decision: string): Promise<RolloutRow> {
    await this.store.writePolicy(tx, row.modelId, row.alias, row.previousPolicy, actor, `rollout ${row.id}: ${decision}`);
    const reverted = await tx.rollout.update({ where: { id: row.id }, data: { state, lastDecision: decision, observation: row.observation } });
    await this.#event(tx, reverted, actor, decision);
    return reverted;
  }

  /** The rollout's change in the event log (watchers, webhooks). */
  #event(tx: Tx, row: RolloutRow, actor: string, reason: string): Promise<void> {
    return this.store.recordRolloutEvent(tx, { modelId: row.modelId, alias: row.alias, rolloutId: row.id, state: row.state, version: row.toVersion, previousVersion: row.fromVersion, actor, reason });
  }
}

/** The gates against a step's figures; `intervalDone`: the step has lasted its interval. */
function judge(gates: RolloutGates, seen: RolloutObservation, intervalDone: boolean): Decision {
  const requests = Number(seen.requests);
  const minRequests = Math.max(1, gates.minRequests);
  const figures = `${requests} calls, ${requests === 0 ? 0 : ((Number(seen.errors) / requests) * 100).toFixed(1)} % errors, p99 ${seen.p99Latency ? durationMs(seen.p99Latency).toFixed(1) : "-"} ms${seen.shadowAgreement === undefined ? "" : `, agreement ${(seen.shadowAgreement * 100).toFixed(1)} % of ${seen.shadowRows} rows`}`;
  if (requests < minRequests) return { kind: "wait", reason: `${figures}; waiting for at least ${minRequests} calls` };
  const errorRate = Number(seen.errors) / requests;
  if (gates.maxErrorRate > 0 && errorRate > gates.maxErrorRate) return { kind: "fail", reason: `${figures}: error rate above ${(gates.maxErrorRate * 100).toFixed(1)} %` };
  const maxP99 = gates.maxP99Latency && durationMs(gates.maxP99Latency);
  if (maxP99 && seen.p99Latency && durationMs(seen.p99Latency) > maxP99) return { kind: "fail", reason: `${figures}: p99 above ${maxP99} ms` };
  if (gates.minShadowAgreement > 0) {
    if (seen.shadowAgreement === undefined) return { kind: "wait", reason: `${figures}; waiting for shadow comparisons` };
    if (seen.shadowAgreement < gates.minShadowAgreement) return { kind: "fail", reason: `${figures}: agreement below ${(gates.minShadowAgreement * 100).toFixed(1)} %` };
  }
  return intervalDone ? { kind: "advance", reason: `${figures}; gates hold` } : { kind: "wait", reason: `${figures}; gates hold, the step's interval runs on` };
}

/** How often a running rollout is judged: a fifth of its interval, from 0.5 s to 10 s. */
function checkEveryMs(intervalMs: number): number {
  return Math.min(10_000, Math.max(500, Math.floor(intervalMs / 5)));
}

/**
 * The policy of a step: two arms (none at a shadow step); the candidate also shadows the rest
 * when an agreement gate is set.
 */
function stepPolicy(row: RolloutRow, step: number): TrafficPolicy {
  const weight = (JSON.parse(row.steps) as number[])[step];
  const gates = fromJsonString(RolloutGatesSchema, row.gates);
  return create(TrafficPolicySchema, {
    arms:
      weight === 0
        ? []
        : [
            { version: row.fromVersion, weight: 100 - weight },
            { version: row.toVersion, weight },
          ],
    shadows: gates.minShadowAgreement > 0 ? [{ version: row.toVersion, samplePercent: 100 }] : [],
  });
}

const states: Readonly<Record<string, RolloutState>> = {
  RUNNING: RolloutState.RUNNING,
  PAUSED: RolloutState.PAUSED,
  SUCCEEDED: RolloutState.SUCCEEDED,
  ROLLED_BACK: RolloutState.ROLLED_BACK,
  ABORTED: RolloutState.ABORTED,
};

function rolloutOut(row: RolloutRow): Rollout {
  return {
    $typeName: "mlmesh.registry.v1.Rollout",
    id: row.id,
    modelId: row.modelId,
    alias: row.alias,
    fromVersion: row.fromVersion,
    toVersion: row.toVersion,
    steps: JSON.parse(row.steps) as number[],
    step: row.step,
    interval: durationFromMs(row.intervalMs) as Duration,
    gates: fromJsonString(RolloutGatesSchema, row.gates),
    rollbackRule: row.rollbackRule === "PAUSE" ? RollbackRule.PAUSE : RollbackRule.ROLL_BACK,
    state: states[row.state] ?? RolloutState.UNSPECIFIED,
    lastDecision: row.lastDecision,
    observation: row.observation === null ? undefined : fromJsonString(RolloutObservationSchema, row.observation),
    actor: row.actor,
    createTime: timestampFromDate(row.createdAt),
    updateTime: timestampFromDate(row.updatedAt),
    stepStartTime: timestampFromDate(row.stepStartedAt),
    previousPolicy: policyFromJson(row.previousPolicy),
  };
}
