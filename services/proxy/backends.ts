import { Code, ConnectError } from "@connectrpc/connect";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Health, HealthCheckResponse_ServingStatus as ServingStatus } from "../../gen/grpc/health/v1/health_pb.js";
import {
  PredictorService,
  type ModelMetadata,
  type PredictResponse,
  type Row,
} from "../../gen/mlmesh/predictor/v1/predictor_pb.js";
import { GrpcClient } from "../runtime/grpc-client.js";
import { CircuitBreaker, CircuitState } from "./circuit-breaker.js";
import type { Backend, ProxyConfig } from "./config.js";

/** The outcome of one backend call: its value, or the status it failed with. */
export type Outcome<T> =
  | { readonly ok: true; readonly value: T; readonly latencyMs: number }
  | { readonly ok: false; readonly code: Code; readonly message: string; readonly latencyMs: number };

/** Codes that say the backend (not the request) is in trouble: they count against its circuit. */
const backendFailureCodes = new Set([
  Code.Unavailable,
  Code.DeadlineExceeded,
  Code.Internal,
  Code.Unknown,
  Code.ResourceExhausted,
  Code.Unimplemented,
]);

/** What the Proxy's handlers need of a backend (tests give them fakes). */
export type ProxyBackend = Pick<BackendClient, "backend" | "breaker" | "predict" | "metadata" | "health">;

/** One backend: a long-lived connection to its Predictor, and its circuit breaker. */
export class BackendClient {
  private readonly client: GrpcClient;
  readonly breaker: CircuitBreaker;

  constructor(
    readonly backend: Backend,
    config: Pick<ProxyConfig, "breakerFailures" | "breakerCooldownMs">,
  ) {
    this.client = new GrpcClient(backend.address);
    this.breaker = new CircuitBreaker(config.breakerFailures, config.breakerCooldownMs);
  }

  predict(rows: readonly Row[], deadlineMs: number, signal: AbortSignal): Promise<Outcome<PredictResponse>> {
    const { model, version } = this.backend;
    return this.guarded((s) => this.client.unary(PredictorService.method.predict, { model, version, rows: rows as MessageInitShape<never>[] }, { deadlineMs, signal: s }), signal);
  }

  metadata(deadlineMs: number, signal: AbortSignal): Promise<Outcome<ModelMetadata | undefined>> {
    const { model, version } = this.backend;
    return this.guarded(
      async (s) => (await this.client.unary(PredictorService.method.getModelMetadata, { model, version }, { deadlineMs, signal: s })).metadata,
      signal,
    );
  }

  /** The Predictor's health for PredictorService; not counted against the circuit. */
  async health(deadlineMs: number): Promise<Outcome<ServingStatus>> {
    const started = performance.now();
    try {
      const response = await this.client.unary(Health.method.check, { service: PredictorService.typeName }, { deadlineMs });
      return { ok: true, value: response.status, latencyMs: performance.now() - started };
    } catch (err) {
      const error = ConnectError.from(err);
      return { ok: false, code: error.code, message: this.describe(error), latencyMs: performance.now() - started };
    }
  }

  close(): void {
    this.client.close();
  }

  /** Runs a call through the circuit breaker; an open circuit fails fast with UNAVAILABLE. */
  private async guarded<T>(call: (signal: AbortSignal) => Promise<T>, signal: AbortSignal): Promise<Outcome<T>> {
    if (!this.breaker.tryAcquire()) {
      const state = this.breaker.state === CircuitState.OPEN ? "open" : "half-open, probe in flight";
      return { ok: false, code: Code.Unavailable, message: `circuit ${state}: skipped after ${this.breaker.consecutiveFailures} consecutive failures`, latencyMs: 0 };
    }
    const started = performance.now();
    try {
      const value = await call(signal);
      this.breaker.onSuccess();
      return { ok: true, value, latencyMs: performance.now() - started };
    } catch (err) {
      const error = ConnectError.from(err);
      const message = this.describe(error);
      // A call the proxy's own caller cancelled says nothing about the backend.
      if (signal.aborted) this.breaker.release();
      else if (backendFailureCodes.has(error.code)) this.breaker.onFailure();
      else this.breaker.onSuccess(); // it answered: alive, even if it refused the request
      return { ok: false, code: error.code, message, latencyMs: performance.now() - started };
    }
  }

  /**
   * What to tell the proxy's caller about a failed call: the Predictor's own message when it
   * answered, a plain description when the transport failed (grpc-js's text is internal).
   */
  private describe(error: ConnectError): string {
    switch (error.code) {
      case Code.Unavailable:
        return `backend unavailable at ${this.backend.address}`;
      case Code.DeadlineExceeded:
        return "no answer within the deadline";
      case Code.Canceled:
        return "cancelled by the caller";
      default:
        return error.rawMessage;
    }
  }
}
