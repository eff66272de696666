import { create, fromBinary, toBinary, type DescMethodUnary, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";

/**
 * A native-gRPC client of another mesh service over one long-lived HTTP/2 connection
 * (@grpc/grpc-js, with protobuf-es messages): the fast path for service-to-service calls.
 */
export class GrpcClient {
  private readonly client: grpc.Client;

  constructor(readonly address: string) {
    this.client = new grpc.Client(address, grpc.credentials.createInsecure(), {
      // Reconnect quickly when a backend comes back (defaults back off up to 120 s).
      "grpc.initial_reconnect_backoff_ms": 200,
      "grpc.max_reconnect_backoff_ms": 2000,
      "grpc.enable_channelz": 0,
    });
  }

  /**
   * Calls a unary method. Rejects with a ConnectError carrying the gRPC status; the call is
   * cancelled when `signal` aborts and ends with DEADLINE_EXCEEDED at `deadlineMs` (epoch ms).
   */
  unary<I extends DescMethodUnary>(
    method: I,
    request: MessageInitShape<I["input"]>,
    options: { deadlineMs: number; signal?: AbortSignal },
  ): Promise<MessageShape<I["output"]>> {
    return new Promise((resolve, reject) => {
      if (options.signal?.aborted) {
        reject(new ConnectError("cancelled before the call", Code.Canceled));
        return;
      }
      const call = this.client.makeUnaryRequest(
        `/${method.parent.typeName}/${method.name}`,
        (message: MessageInitShape<I["input"]>) => Buffer.from(toBinary(method.input, create(method.input, message))),
        (bytes: Buffer) => fromBinary(method.output, bytes) as MessageShape<I["output"]>,
        request,
        { deadline: options.deadlineMs },
        (err, response) => {
          options.signal?.removeEventListener("abort", cancel);
          if (err) reject(new ConnectError(err.details || err.message, err.code as number as Code));
          else resolve(response as MessageShape<I["output"]>);
        },
      );
      const cancel = () => call.cancel();
      options.signal?.addEventListener("abort", cancel, { once: true });
    });
  }

  close(): void {
    this.client.close();
  }
}
