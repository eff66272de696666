import { createContextKey, type HandlerContext } from "@connectrpc/connect";
import { Role } from "../../../gen/mlmesh/policy/v1/policy_pb.js";
import { authorize, type Authenticator, type Principal } from "./credentials.js";
import type { ClientLimits } from "./limits.js";
import type { MethodPolicy } from "./policy.js";

/** What the transport knows of a call before its handler runs (set by both serving stacks). */
export interface RequestFacts {
  /** Size of the request message (gRPC) or body (gRPC-web, Connect); 0 when unknown. */
  readonly requestBytes: number;
  /** The caller's IP address. */
  peer(): string;
}

export const requestFactsKey = createContextKey<RequestFacts | undefined>(undefined, { description: "the call's size and peer" });

/** What the gate reads of a call: its headers and context values. */
type CallFacts = Pick<HandlerContext, "requestHeader" | "values">;

/** Where the gate leaves the authenticated caller: the call's identity (serve/pipeline.ts). */
export interface Admittee {
  principal: Principal | undefined;
}

/** Ends an admitted call's claim on its client's limits. */
export type Release = () => void;

/**
 * The checks every call passes before its handler runs, on every path (serve/pipeline.ts):
 * the caller's credential (UNAUTHENTICATED), its role against the method's policy
 * (PERMISSION_DENIED), and, for expensive calls, its client's limits (RESOURCE_EXHAUSTED).
 */
export class Gatekeeper {
  constructor(
    readonly authenticator: Authenticator | undefined,
    readonly limits: ClientLimits,
  ) {}

  /** The checks of one route (an RPC or a plain HTTP route) under its policy. */
  forRoute(name: string, policy: MethodPolicy): MethodGate {
    return new MethodGate(this, name, policy);
  }
}

export class MethodGate {
  private readonly role: Role;
  private readonly limited: boolean;
  private readonly name: string;

  constructor(
    private readonly gatekeeper: Gatekeeper,
    name: string,
    policy: MethodPolicy,
  ) {
    this.role = policy.role;
    this.limited = policy.limited;
    this.name = name;
  }

  /**
   * Throws the status that refuses the call, or admits it (with a Release when it counts against
   * a limit), leaving the authenticated caller in `admittee`.
   */
  admit(ctx: CallFacts, admittee: Admittee): Release | undefined | Promise<Release | undefined> {
    const { authenticator } = this.gatekeeper;
    if (authenticator === undefined || this.role === Role.ANYONE) return this.limit(ctx, undefined);
    const principal = authenticator.authenticate(ctx.requestHeader.get("authorization"));
    if (principal instanceof Promise) return principal.then((p) => this.admitPrincipal(ctx, admittee, p));
    return this.admitPrincipal(ctx, admittee, principal);
  }

  private admitPrincipal(ctx: CallFacts, admittee: Admittee, principal: Principal): Release | undefined {
    // Named before the role is checked: a refusal's log line says whom it refused.
    admittee.principal = principal;
    authorize(principal, this.role, this.name);
    return this.limit(ctx, principal);
  }

  private limit(ctx: CallFacts, principal: Principal | undefined): Release | undefined {
    const facts = ctx.values.get(requestFactsKey);
    const large = facts !== undefined && facts.requestBytes > this.gatekeeper.limits.settings.largeRequestBytes;
    if (!this.limited && !large) return undefined;
    const client = principal?.name ?? facts?.peer() ?? "unknown";
    return this.gatekeeper.limits.acquire(client, this.name);
  }
}
