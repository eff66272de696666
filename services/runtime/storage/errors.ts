import { Code, ConnectError } from "@connectrpc/connect";

/** Why a database cannot do a call right now; the caller may retry it later. */
export type UnavailableReason = "busy" | "unreachable";

/**
 * Whether a Prisma or driver error means the database cannot serve the call now — "busy"
 * (SQLite: another writer held the lock past the busy timeout; Prisma could not start or
 * finish a transaction in time) or "unreachable" (connection refused, dropped or timed out) —
 * as opposed to a bug or a refused statement. Such a call wrote nothing.
 */
export function unavailableReason(err: unknown): UnavailableReason | undefined {
  const e = err as { code?: string; message?: string; cause?: unknown };
  const text = `${e.code ?? ""} ${e.message ?? ""} ${String(e.cause ?? "")}`;
  if (/P1008|P2028|SQLITE_BUSY|SocketTimeout|Transaction API error|Unable to start a transaction/i.test(text)) return "busy";
  if (
    /P1001|P1002|P1017|P2024|ECONNREFUSED|ECONNRESET|ETIMEDOUT|DatabaseNotReachable|ConnectionClosed|terminating connection|Connection terminated|timeout exceeded when trying to connect|TooManyConnections/i.test(
      text,
    )
  ) {
    return "unreachable";
  }
  return undefined;
}

/**
 * The UNAVAILABLE error a service answers when its database (named for the message, e.g.
 * "batch") cannot serve a call now, with the original error as cause for the log; undefined
 * for any other error.
 */
export function databaseUnavailableError(database: string, err: unknown): ConnectError | undefined {
  switch (unavailableReason(err)) {
    case "busy":
      return new ConnectError(`the ${database} database is busy (locked by another writer); retry later`, Code.Unavailable, undefined, undefined, err);
    case "unreachable":
      return new ConnectError(`the ${database} database is unavailable; retry later`, Code.Unavailable, undefined, undefined, err);
    default:
      return undefined;
  }
}
