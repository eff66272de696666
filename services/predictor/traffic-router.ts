import type { RequestKey, TrafficCondition, TrafficPolicy } from "../../gen/mlmesh/registry/v1/traffic_pb.js";

/*
 * An alias's traffic policy (registry traffic.proto) as the Predictor applies it to each call,
 * in process: the first route whose conditions all hold, else an arm by weight (sticky by a
 * key's hash when the policy names one), else the alias's own version. Shadows are drawn per
 * call. Nothing here allocates per call beyond the choice.
 */

/** What a call offers the policy: its headers and, for Open Inference Protocol calls, its parameters. */
export interface RequestFacts {
  header(name: string): string | undefined;
  parameter(name: string): string | undefined;
}

/** The facts of a call that carries nothing (internal calls, tests). */
export const noRequestFacts: RequestFacts = { header: () => undefined, parameter: () => undefined };

/** Where a call goes. */
export interface TrafficChoice {
  readonly version: number;
  /** How it was chosen, as the response header and the prediction log name it: "v3", "route:beta". */
  readonly arm: string;
}

/** One shadow drawn for a call. */
export interface ShadowDraw {
  readonly version: number;
  readonly samplePercent: number;
}

/** Arm buckets: weights are whole percents, sticky keys hash to one of 10,000 buckets. */
const buckets = 10_000;

export class TrafficRouter {
  /** Cumulative upper bounds (in buckets) of the arms with a weight above 0. */
  readonly #arms: { version: number; arm: string; upTo: number }[] = [];
  readonly #routes: { choice: TrafficChoice; conditions: ((facts: RequestFacts, minuteOfDay: number) => boolean)[]; timed: boolean }[];
  readonly #anyTimed: boolean;
  /** The shadows, for the Predictor to draw after each answer. */
  readonly shadows: readonly ShadowDraw[];

  constructor(
    readonly policy: TrafficPolicy,
    /** The version the alias points at: the answer when no route holds and there are no arms. */
    private readonly aliasVersion: number,
  ) {
    let upTo = 0;
    for (const arm of policy.arms) {
      if (arm.weight === 0) continue; // an arm of weight 0 receives nothing, ever
      upTo += arm.weight * (buckets / 100);
      this.#arms.push({ version: arm.version, arm: `v${arm.version}`, upTo });
    }
    this.#routes = policy.routes.map((route) => ({
      choice: { version: route.version, arm: `route:${route.name}` },
      conditions: route.conditions.map(conditionTest),
      timed: route.conditions.some((c) => c.test.case === "timeWindow"),
    }));
    this.#anyTimed = this.#routes.some((r) => r.timed);
    this.shadows = policy.shadows.map((s) => ({ version: s.version, samplePercent: s.samplePercent }));
  }

  /** The versions the policy can send calls to or copy calls to (to be loaded). */
  get versions(): Set<number> {
    return new Set([this.aliasVersion, ...this.#arms.map((a) => a.version), ...this.#routes.map((r) => r.choice.version), ...this.shadows.map((s) => s.version)]);
  }

  /** Where a call with these facts goes, at `nowMs`. */
  choose(facts: RequestFacts, nowMs = Date.now()): TrafficChoice {
    const minute = this.#anyTimed ? Math.floor(nowMs / 60_000) % 1440 : 0;
    for (const route of this.#routes) {
      if (route.conditions.every((holds) => holds(facts, minute))) return route.choice;
    }
    if (this.#arms.length === 0) return { version: this.aliasVersion, arm: `v${this.aliasVersion}` };
    const sticky = this.policy.stickyKey && valueOf(this.policy.stickyKey, facts);
    const bucket = sticky ? hashBucket(sticky) : Math.floor(Math.random() * buckets);
    for (const arm of this.#arms) if (bucket < arm.upTo) return arm;
    return this.#arms[this.#arms.length - 1];
  }
}

function valueOf(key: RequestKey, facts: RequestFacts): string | undefined {
  switch (key.source.case) {
    case "header":
      return facts.header(key.source.value);
    case "parameter":
      return facts.parameter(key.source.value);
    default:
      return undefined;
  }
}

function conditionTest(condition: TrafficCondition): (facts: RequestFacts, minuteOfDay: number) => boolean {
  const test = condition.test;
  switch (test.case) {
    case "value": {
      const key = test.value.key!;
      const values = new Set(test.value.values);
      return (facts) => {
        const value = valueOf(key, facts);
        return value !== undefined && values.has(value);
      };
    }
    case "timeWindow": {
      const start = minutes(test.value.start);
      const end = minutes(test.value.end);
      // A window whose end is before its start runs over midnight.
      return start < end ? (_, m) => m >= start && m < end : (_, m) => m >= start || m < end;
    }
    default:
      return () => false;
  }
}

function minutes(hhmm: string): number {
  const [h, m] = hhmm.split(":").map(Number);
  return h * 60 + m;
}

/**
 * A key's bucket: FNV-1a over its UTF-16 code units, then MurmurHash3's finalizer (keys that
 * differ in their last character alone spread over all buckets); stable across processes.
 */
export function hashBucket(key: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) hash = Math.imul(hash ^ key.charCodeAt(i), 0x01000193);
  hash ^= hash >>> 16;
  hash = Math.imul(hash, 0x85ebca6b);
  hash ^= hash >>> 13;
  hash = Math.imul(hash, 0xc2b2ae35);
  hash ^= hash >>> 16;
  return (hash >>> 0) % buckets;
}
