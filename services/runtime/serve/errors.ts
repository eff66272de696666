import { Code, ConnectError } from "@connectrpc/connect";

/**
 * Turns anything a handler threw into the status the client sees. ConnectErrors were thrown on
 * purpose and pass through; an abort caused by the call's own signal becomes that signal's
 * reason (DEADLINE_EXCEEDED or CANCELLED); anything else is a bug: INTERNAL with a plain
 * message, the original kept in `cause` for the log and never sent to the client.
 */
export function toConnectError(err: unknown, signal?: AbortSignal): ConnectError {
  if (err instanceof ConnectError) return err;
  if (signal?.aborted) return ConnectError.from(signal.reason);
  return new ConnectError("internal error", Code.Internal, undefined, undefined, err);
}

/** The canonical gRPC name of a code, as grpcurl prints it (e.g. "InvalidArgument"). */
export function codeName(code: Code | 0): string {
  return code === 0 ? "OK" : Code[code];
}
