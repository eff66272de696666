import { Code, ConnectError } from "@connectrpc/connect";
import { Health, HealthCheckResponse_ServingStatus as ServingStatus } from "../../gen/grpc/health/v1/health_pb.js";
import { PredictorService, type ModelMetadata, type PredictResponse } from "../../gen/mlmesh/predictor/v1/predictor_pb.js";
import type { GrpcClient } from "../runtime/client/grpc-client.js";
import type { PackedPredictResponse, PackedRows } from "../model/wire/predict-wire.js";
import { codeName } from "../runtime/serve/errors.js";
import type { TraceSpan } from "../runtime/observability/tracing.js";
import { CircuitBreaker, CircuitState } from "./circuit-breaker.js";
import type { Backend, ProxyConfig } from "./config.js";
import { backendCalls, backendLatency } from "./metrics.js";
import type { PredictorConnection } from "./predictor-connection.js";

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

/** A backend's answer: its probabilities per row, packed (or, from a test's fake, a PredictResponse). */
export type BackendAnswer = PackedPredictResponse | PredictResponse;

/**
 * One backend: a model on a Predictor, reached through the connection it shares with the
 * other backends on that Predictor (predictor-connection.ts), and its own circuit breaker.
 */
export class BackendClient {
  readonly breaker: CircuitBreaker;
  private readonly client: GrpcClient;
  private readonly position: number;
  private readonly latency: ReturnType<typeof backendLatency.labels>;
  private readonly okCalls: ReturnType<typeof backendCalls.labels>;

  constructor(
    readonly backend: Backend,
    config: Pick<ProxyConfig, "breakerFailures" | "breakerCooldownMs">,
    private readonly connection: PredictorConnection,
  ) {
    this.client = connection.client;
    this.position = connection.add(backend);
    this.breaker = new CircuitBreaker(config.breakerFailures, config.breakerCooldownMs);
    this.latency = backendLatency.labels(backend.name);
    this.okCalls = backendCalls.labels(backend.name, "ok");
  }

  /**
   * Predict on this backend; `trace` is the caller's span (the call is a child of it), and
   * `requestId` the caller's request (the backend's prediction record links to it).
   */
  predict(rows: PackedRows, deadlineMs: number, signal: AbortSignal, trace?: TraceSpan, requestId?: string): Promise<Outcome<BackendAnswer>> {
    // The span is the connection's: one call to the Predictor asks this backend's model and its neighbours'.
    return this.guarded("Predict", (s) => this.connection.predict(this.position, rows, { deadlineMs, signal: s, trace, parentRequestId: requestId }), signal, undefined);
  }

  metadata(deadlineMs: number, signal: AbortSignal, trace?: TraceSpan): Promise<Outcome<ModelMetadata | undefined>> {
    const { model, version } = this.backend;
    return this.guarded(
      "GetModelMetadata",
      async (s, traceparent) => (await this.client.unary(PredictorService.method.getModelMetadata, { model, version }, { deadlineMs, signal: s, traceparent })).metadata,
      signal,
      trace,
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

  /**
   * Runs a call through the circuit breaker (an open circuit fails fast with UNAVAILABLE), as
   * a child span of `trace`, counted in the backend's metrics.
   */
  private async guarded<T>(
    method: string,
    call: (signal: AbortSignal, traceparent: string | undefined) => Promise<T>,
    signal: AbortSignal,
    trace: TraceSpan | undefined,
  ): Promise<Outcome<T>> {
    const name = this.backend.name;
    if (!this.breaker.tryAcquire()) {
      backendCalls.labels(name, "circuit_open").inc();
      const state = this.breaker.state === CircuitState.OPEN ? "open" : "half-open, probe in flight";
      return { ok: false, code: Code.Unavailable, message: `circuit ${state}: skipped after ${this.breaker.consecutiveFailures} consecutive failures`, latencyMs: 0 };
    }
    const span = trace?.child(`${name} ${method}`);
    const started = performance.now();
    try {
      const value = await call(signal, span?.traceparent);
      this.breaker.onSuccess();
      const latencyMs = performance.now() - started;
      this.#record(latencyMs, "ok");
      span?.end();
      return { ok: true, value, latencyMs };
    } catch (err) {
      const error = ConnectError.from(err);
      const message = this.describe(error);
      // A call the proxy's own caller cancelled says nothing about the backend.
      if (signal.aborted) this.breaker.release();
      else if (backendFailureCodes.has(error.code)) this.breaker.onFailure();
      else this.breaker.onSuccess(); // it answered: alive, even if it refused the request
      const latencyMs = performance.now() - started;
      this.#record(latencyMs, codeName(error.code));
      span?.end({ code: codeName(error.code), message });
      return { ok: false, code: error.code, message, latencyMs };
    }
  }

  #record(latencyMs: number, outcome: string): void {
    (outcome === "ok" ? this.okCalls : backendCalls.labels(this.backend.name, outcome)).inc();
    this.latency.observe(latencyMs / 1000);
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
