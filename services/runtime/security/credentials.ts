import { createHash } from "node:crypto";
import { readFileSync, statSync, unwatchFile, watchFile } from "node:fs";
import { Code, ConnectError } from "@connectrpc/connect";
import { createLocalJWKSet, createRemoteJWKSet, jwtVerify, type JWTVerifyGetKey } from "jose";
import { Role } from "../../../gen/mlmesh/policy/v1/policy_pb.js";
import type { AuthSettings } from "../env/settings.js";
import { ConfigError } from "../env/variables.js";
import type { Logger } from "../observability/logger.js";

/*
 * Who is calling: bearer tokens checked in the shared runtime, for both serving stacks.
 *  - Static tokens (AUTH_TOKENS_FILE): one line per token, "sha256:<hex of the token's SHA-256>
 *    <reader|writer|admin> <name>" (`mlmesh token new` prints a token and its line). The file
 *    holds no token, only hashes; it is re-read when it changes (rotation needs no restart).
 *  - JWTs (AUTH_JWKS: a JWKS file or https URL): signatures checked with jose against the key
 *    set, with AUTH_JWT_ISSUER and AUTH_JWT_AUDIENCE when set; the role comes from the claim
 *    AUTH_JWT_ROLE_CLAIM (default "roles": a string or a list; the highest mlmesh role in it).
 * Neither set: authentication is off (the loopback default of `npm start`).
 * Messages never contain the token; the Authorization header is never logged.
 */

/** An authenticated caller. */
export interface Principal {
  /** The token's name, or the JWT's subject: for logs, the registry's actor and per-client limits. */
  readonly name: string;
  readonly role: Role;
}

export const roleNames: Record<Role, string> = {
  [Role.UNSPECIFIED]: "none",
  [Role.ANYONE]: "anyone",
  [Role.READER]: "reader",
  [Role.WRITER]: "writer",
  [Role.ADMIN]: "admin",
};
const rolesByName = new Map<string, Role>([
  ["reader", Role.READER],
  ["writer", Role.WRITER],
  ["admin", Role.ADMIN],
]);

/** Checks credentials; authentication is on when it exists. */
export interface Authenticator {
  /** What the start-up log says about it. */
  readonly description: string;
  /** The caller behind an Authorization header value; UNAUTHENTICATED when there is none or it is not valid. */
  authenticate(authorization: string | null | undefined): Principal | Promise<Principal>;
  close(): void;
}

/** The authenticator the environment asks for, or undefined (authentication off). */
export function loadAuthenticator(settings: AuthSettings, logger: Logger): Authenticator | undefined {
  const { tokensFile, jwks } = settings;
  if (tokensFile === "" && jwks === "") return undefined;
  const tokens = tokensFile === "" ? undefined : new StaticTokens(tokensFile, logger);
  const jwt = jwks === "" ? undefined : new JwtVerifier(settings);
  const description = [tokens && `tokens from ${tokensFile}`, jwt && `JWTs signed by ${jwks}`].filter(Boolean).join(", ");
  return {
    description,
    authenticate(authorization) {
      const token = bearerToken(authorization);
      const known = tokens?.lookup(token);
      if (known !== undefined) return known; // static tokens: no promise on the hot path
      if (jwt === undefined || !looksLikeJwt(token)) throw invalidToken();
      return jwt.verify(token).then((principal) => principal ?? Promise.reject(invalidToken()));
    },
    close() {
      tokens?.close();
    },
  };
}

/** PERMISSION_DENIED unless the caller's role includes `required`. */
export function authorize(principal: Principal, required: Role, method: string): void {
  if (principal.role >= required) return;
  throw new ConnectError(
    `"${principal.name}" (${roleNames[principal.role]}) may not call ${method}: it needs the ${roleNames[required]} role`,
    Code.PermissionDenied,
  );
}

function invalidToken(): ConnectError {
  return new ConnectError("the bearer token is not valid (unknown, revoked or expired)", Code.Unauthenticated);
}

function bearerToken(authorization: string | null | undefined): string {
  if (authorization === undefined || authorization === null || authorization === "") {
    throw new ConnectError('this call needs a credential: send the header "authorization: Bearer <token>"', Code.Unauthenticated);
  }
  const match = /^Bearer +(\S+)\s*$/i.exec(authorization);
  if (!match) throw new ConnectError('the authorization header must be "Bearer <token>"', Code.Unauthenticated);
  return match[1];
}

function looksLikeJwt(token: string): boolean {
  return /^[\w-]+\.[\w-]+\.[\w-]+$/.test(token);
}

/** The hash a tokens file stores for a token. */
export function tokenHash(token: string): string {
  return `sha256:${createHash("sha256").update(token).digest("hex")}`;
}

/** AUTH_TOKENS_FILE: hashes of static tokens with their role and name, re-read when the file changes. */
class StaticTokens {
  #byHash: Map<string, Principal>;

  constructor(
    private readonly path: string,
    private readonly logger: Logger,
  ) {
    try {
      this.#byHash = parseTokens(readFileSync(path, "utf8"));
    } catch (err) {
      throw new ConfigError("AUTH_TOKENS_FILE", (err as Error).message);
    }
    // Polling (not fs.watch): it sees a file replaced by a rename and works on every volume.
    watchFile(path, { interval: 500, persistent: false }, () => this.reload());
  }

  lookup(token: string): Principal | undefined {
    return this.#byHash.get(tokenHash(token));
  }

  close(): void {
    unwatchFile(this.path);
  }

  private reload(): void {
    try {
      statSync(this.path);
      this.#byHash = parseTokens(readFileSync(this.path, "utf8"));
      this.logger.info({ path: this.path, tokens: this.#byHash.size }, "tokens reloaded");
    } catch (err) {
      this.logger.error({ path: this.path, problem: (err as Error).message }, "tokens file not reloaded: keeping the previous tokens");
    }
  }
}

function parseTokens(text: string): Map<string, Principal> {
  const byHash = new Map<string, Principal>();
  for (const [i, raw] of text.split("\n").entries()) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const match = /^(sha256:[0-9a-f]{64})\s+(\S+)\s+(\S+)$/.exec(line);
    const role = match ? rolesByName.get(match[2]) : undefined;
    if (!match || role === undefined) throw new Error(`line ${i + 1} is not "sha256:<64 hex digits> <reader|writer|admin> <name>"`);
    byHash.set(match[1], { name: match[3], role });
  }
  return byHash;
}

/** AUTH_JWKS: JWTs verified with jose; verified tokens are remembered until they expire. */
class JwtVerifier {
  private readonly keys: JWTVerifyGetKey;
  private readonly issuer: string | undefined;
  private readonly audience: string | undefined;
  private readonly roleClaim: string;
  private readonly verified = new Map<string, { principal: Principal; expiresAtMs: number }>();

  constructor(settings: AuthSettings) {
    const { jwks } = settings;
    if (/^https?:\/\//.test(jwks)) {
      this.keys = createRemoteJWKSet(new URL(jwks));
    } else {
      try {
        this.keys = createLocalJWKSet(JSON.parse(readFileSync(jwks, "utf8")));
      } catch (err) {
        throw new ConfigError("AUTH_JWKS", `cannot read the key set ${jwks}: ${(err as Error).message}`);
      }
    }
    this.issuer = settings.jwtIssuer;
    this.audience = settings.jwtAudience;
    this.roleClaim = settings.jwtRoleClaim;
  }

  async verify(token: string): Promise<Principal | undefined> {
    const cached = this.verified.get(token);
    if (cached !== undefined && cached.expiresAtMs > Date.now()) return cached.principal;
    try {
      const { payload } = await jwtVerify(token, this.keys, { issuer: this.issuer, audience: this.audience });
      const claimed = payload[this.roleClaim];
      const names = Array.isArray(claimed) ? claimed : [claimed];
      const role = Math.max(Role.UNSPECIFIED, ...names.map((n) => (typeof n === "string" ? (rolesByName.get(n) ?? Role.UNSPECIFIED) : Role.UNSPECIFIED))) as Role;
      const principal = { name: payload.sub ?? "jwt", role };
      if (this.verified.size > 10_000) this.verified.clear();
      this.verified.set(token, { principal, expiresAtMs: (payload.exp ?? Date.now() / 1000 + 60) * 1000 });
      return principal;
    } catch {
      return undefined;
    }
  }
}
