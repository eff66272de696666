import { randomBytes } from "node:crypto";
import { tokenHash } from "../runtime/security/credentials.js";

export const tokenUsage = `usage: mlmesh token new <reader|writer|admin> <name>
  prints a new random bearer token (give it to the caller; it is not stored anywhere) and the
  line to append to the AUTH_TOKENS_FILE of the services that should accept it (its SHA-256,
  role and name). Services re-read that file when it changes: no restart.`;

/** `mlmesh token ...`; resolves to the exit code. */
export function tokenCommand(args: readonly string[]): number {
  const [command, role, name] = args;
  if (command !== "new" || !["reader", "writer", "admin"].includes(role ?? "") || !/^[A-Za-z0-9][A-Za-z0-9._@-]*$/.test(name ?? "") || args.length !== 3) {
    process.stderr.write(`${tokenUsage}\n`);
    return 2;
  }
  const token = `mlm_${randomBytes(32).toString("base64url")}`;
  process.stdout.write(`token: ${token}\ntokens file line: ${tokenHash(token)} ${role} ${name}\n`);
  return 0;
}
