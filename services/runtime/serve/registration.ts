import { fromBinary, type DescMessage, type DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";

/** Handlers of a service as written by its author; methods left out answer UNIMPLEMENTED. */
export type PartialServiceImpl<S extends DescService> = Partial<ServiceImpl<S>>;

/** A service descriptor with its (possibly partial) implementation. */
export interface ServiceRegistration<S extends DescService = DescService> {
  readonly service: S;
  readonly impl: PartialServiceImpl<S>;
  /** Hand-written codecs of some methods, for the native gRPC path (by method local name). */
  readonly wire?: Readonly<Record<string, MethodWire>>;
}

/**
 * A method's hand-written wire codec (services/model/wire/), used by the native gRPC path where
 * protobuf-es reflection and protovalidate cost more than the work (per-row messages).
 */
export interface MethodWire {
  /**
   * The request, decoded and checked against every rule of its .proto (marked as such with
   * markValidated), or undefined to leave the bytes to protobuf-es and protovalidate, whose
   * answer (errors included) then stands.
   */
  decodeRequest(bytes: Buffer): object | undefined;
  /** The response's bytes, exactly as protobuf-es writes them; undefined to leave it to protobuf-es. */
  encodeResponse(response: unknown): Uint8Array | undefined;
}

/** Builds a registration; the generic keeps the handler types checked against the descriptor. */
export function serve<S extends DescService>(service: S, impl: PartialServiceImpl<S>, wire?: ServiceRegistration["wire"]): ServiceRegistration {
  return { service, impl, wire } as unknown as ServiceRegistration;
}

/** Requests a MethodWire decoder has already checked against their rules. */
const validatedRequests = new WeakSet<object>();

/** Marks a request as checked against its contract's rules while decoded (MethodWire). */
export function markValidated(request: object): void {
  validatedRequests.add(request);
}

/** Whether a MethodWire decoder already checked this request. */
export function isValidated(request: object): boolean {
  return validatedRequests.has(request);
}

/** Requests whose bytes could not be decoded, and why: the pipeline answers them after its checks. */
const undecodableRequests = new WeakMap<object, Error>();

/**
 * A stand-in for a request whose bytes are not a valid message: handed to the pipeline like any
 * request, so the call still gets its request id, trace, metrics, authentication and log line,
 * and fails with `error` (INVALID_ARGUMENT) where validation would run.
 */
export function undecodableRequest(error: Error): object {
  const request = {};
  undecodableRequests.set(request, error);
  return request;
}

/** Why a request could not be decoded; undefined for a decoded one. */
export function decodeFailureOf(request: object): Error | undefined {
  return undecodableRequests.get(request);
}

/** A request message from its bytes (the native gRPC paths); bytes that are no valid message are INVALID_ARGUMENT. */
export function decodeRequest(schema: DescMessage, bytes: Uint8Array): unknown {
  try {
    return fromBinary(schema, bytes);
  } catch (err) {
    throw new ConnectError(`request is not a valid ${schema.typeName}: ${(err as Error).message}`, Code.InvalidArgument);
  }
}
