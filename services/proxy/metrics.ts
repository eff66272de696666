import { CircuitState } from "../../gen/mlmesh/proxy/v1/proxy_pb.js";
import { counter, gauge, hotCounter, hotHistogram, latencyBuckets } from "../runtime/observability/metrics.js";
import type { CircuitBreaker } from "./circuit-breaker.js";

/** Backend calls by outcome: "ok", the gRPC code the backend failed with, or "circuit_open" (skipped). */
export const backendCalls = hotCounter(
  "mlmesh_proxy_backend_calls_total",
  "Calls to each backend Predictor, by outcome: ok, a gRPC code, or circuit_open (not made).",
  ["backend", "outcome"],
);

export const backendLatency = hotHistogram("mlmesh_proxy_backend_call_duration_seconds", "Time of each call made to a backend Predictor.", ["backend"], latencyBuckets);

export const coalescedRequests = hotHistogram(
  "mlmesh_proxy_backend_coalesced_requests",
  "Requests served by each call made to a backend (concurrent requests share calls under load).",
  ["backend"],
  [1, 2, 4, 8, 16, 32, 64, 128, 256],
);

export const partialAnswers = counter({
  name: "mlmesh_proxy_partial_answers_total",
  help: "PredictLabel answers made without every backend (some failed or were skipped).",
});

const circuitValue: Record<CircuitState, number> = { [CircuitState.UNSPECIFIED]: 0, [CircuitState.CLOSED]: 0, [CircuitState.HALF_OPEN]: 1, [CircuitState.OPEN]: 2 };

/** Each backend's circuit state at scrape time: 0 closed, 1 half-open, 2 open. */
export function watchCircuits(breakers: ReadonlyMap<string, CircuitBreaker>): void {
  gauge({
    name: "mlmesh_proxy_circuit_state",
    help: "Each backend's circuit breaker: 0 closed, 1 half-open (one probe allowed), 2 open (calls skipped).",
    labelNames: ["backend"],
    collect() {
      for (const [backend, breaker] of breakers) this.set({ backend }, circuitValue[breaker.state]);
    },
  });
}
