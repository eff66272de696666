import { fromJsonString, toJsonString } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { TrafficPolicySchema, type TrafficPolicy } from "../../gen/mlmesh/registry/v1/traffic_pb.js";

/*
 * What the contract's field rules cannot say about a traffic policy (traffic.proto): the
 * weights sum to 100, a version is named once among the arms and once among the shadows, a
 * time window is not empty. The versions' existence is checked by the store, in the write's
 * transaction. Policies are stored as protobuf JSON.
 */

/** INVALID_ARGUMENT naming the first problem of `policy`; the versions it names otherwise. */
export function checkTrafficPolicy(policy: TrafficPolicy): Set<number> {
  const problem = (message: string) => new ConnectError(`traffic policy: ${message}`, Code.InvalidArgument);
  if (policy.arms.length > 0) {
    const total = policy.arms.reduce((sum, arm) => sum + arm.weight, 0);
    if (total !== 100) throw problem(`the arms' weights sum to ${total}; they must sum to 100 (${policy.arms.map((a) => `v${a.version}: ${a.weight}`).join(", ")})`);
    const seen = new Set<number>();
    for (const arm of policy.arms) {
      if (seen.has(arm.version)) throw problem(`version ${arm.version} is named by two arms; give it one arm with their summed weight`);
      seen.add(arm.version);
    }
  }
  if (policy.stickyKey !== undefined && policy.arms.length === 0) throw problem("a sticky key keeps a caller on one arm: it needs arms");
  const routeNames = new Set<string>();
  for (const route of policy.routes) {
    if (routeNames.has(route.name)) throw problem(`two routes are named "${route.name}"`);
    routeNames.add(route.name);
    for (const condition of route.conditions) {
      if (condition.test.case === "timeWindow" && condition.test.value.start === condition.test.value.end) {
        throw problem(`route "${route.name}": the time window starts and ends at ${condition.test.value.start} (empty); a window of the whole day needs no condition`);
      }
    }
  }
  const shadows = new Set<number>();
  for (const shadow of policy.shadows) {
    if (shadows.has(shadow.version)) throw problem(`version ${shadow.version} is named by two shadows`);
    shadows.add(shadow.version);
  }
  if (policy.arms.length === 0 && policy.routes.length === 0 && policy.shadows.length === 0) {
    throw problem("it has no arms, routes or shadows (to send every call to the alias's version, delete the policy)");
  }
  return new Set([...policy.arms.map((a) => a.version), ...policy.routes.map((r) => r.version), ...shadows]);
}

/** A policy as the registry stores it. */
export function policyToJson(policy: TrafficPolicy): string {
  return toJsonString(TrafficPolicySchema, policy);
}

/** A stored policy; undefined for none. */
export function policyFromJson(json: string | null | undefined): TrafficPolicy | undefined {
  if (json === null || json === undefined) return undefined;
  return fromJsonString(TrafficPolicySchema, json);
}
