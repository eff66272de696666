/**
 * Whether a Prisma or driver error means the database cannot be reached right now (the caller
 * gets UNAVAILABLE and may retry), as opposed to a bug or a refused statement.
 */
export function isDatabaseUnreachable(err: unknown): boolean {
  const e = err as { code?: string; message?: string; cause?: unknown };
  const text = `${e.code ?? ""} ${e.message ?? ""} ${String(e.cause ?? "")}`;
  return /P1001|P1002|P1017|ECONNREFUSED|ECONNRESET|ETIMEDOUT|DatabaseNotReachable|ConnectionClosed|terminating connection|Connection terminated|timeout exceeded when trying to connect|SocketTimeout|TooManyConnections|SQLITE_BUSY/i.test(
    text,
  );
}
