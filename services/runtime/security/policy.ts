import { getOption, hasOption, type DescMethod } from "@bufbuild/protobuf";
import { policy as policyOption, Role } from "../../../gen/mlmesh/policy/v1/policy_pb.js";

/** Who may call a method, and whether it counts against the per-client limits. */
export interface MethodPolicy {
  readonly role: Role;
  readonly limited: boolean;
}

/** Services every server adds for operators and tools: they need no credential. */
const openServices = new Set(["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"]);

/**
 * A method's policy, from its (mlmesh.policy.v1.policy) option in the .proto. Health and
 * reflection are open; a method of ours without the option is admin-only (deny by default; the
 * contract test requires the option on every RPC).
 */
export function methodPolicy(method: DescMethod): MethodPolicy {
  if (openServices.has(method.parent.typeName)) return { role: Role.ANYONE, limited: false };
  if (!hasOption(method, policyOption)) return { role: Role.ADMIN, limited: false };
  const declared = getOption(method, policyOption);
  return { role: declared.role === Role.UNSPECIFIED ? Role.ADMIN : declared.role, limited: declared.limited };
}
