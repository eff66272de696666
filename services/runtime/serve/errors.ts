import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema, type BadRequest_FieldViolation } from "../../../gen/google/rpc/error_details_pb.js";

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

/** One bad field of a request: its path ("rows[3].values[0]"), what is wrong, and a short reason code. */
export interface FieldViolation {
  readonly field: string;
  readonly description: string;
  readonly reason?: string;
}

/**
 * INVALID_ARGUMENT with a google.rpc.BadRequest detail listing every violation, so a client
 * can act on each bad field (the batch job fails exactly the bad items) without reading the
 * message; the message says the same in words.
 */
export function invalidArgument(message: string, violations: readonly FieldViolation[]): ConnectError {
  return new ConnectError(message, Code.InvalidArgument, undefined, [
    { desc: BadRequestSchema, value: { fieldViolations: violations.map((v) => ({ field: v.field, description: v.description, reason: v.reason ?? "" })) } },
  ]);
}

/** The field violations of an error's google.rpc.BadRequest details (none when it has none). */
export function fieldViolationsOf(error: ConnectError): BadRequest_FieldViolation[] {
  return error.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations);
}
