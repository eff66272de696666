import { CircuitState } from "../../gen/mlmesh/proxy/v1/proxy_pb.js";

export { CircuitState };

/**
 * A per-backend circuit breaker. After `failureThreshold` consecutive failures the circuit
 * opens and calls skip the backend (failing fast) for `cooldownMs`; then it half-opens and lets
 * one probe call through: success closes it, failure opens it for another cool-down.
 */
export class CircuitBreaker {
  private consecutive = 0;
  private openedAt = 0;
  private probing = false;

  constructor(
    private readonly failureThreshold: number,
    private readonly cooldownMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  get state(): CircuitState {
    if (this.consecutive < this.failureThreshold) return CircuitState.CLOSED;
    return this.now() - this.openedAt >= this.cooldownMs ? CircuitState.HALF_OPEN : CircuitState.OPEN;
  }

  get consecutiveFailures(): number {
    return this.consecutive;
  }

  /** Whether a call may go to the backend now; in half-open state only one probe at a time. */
  tryAcquire(): boolean {
    const state = this.state;
    if (state === CircuitState.CLOSED) return true;
    if (state === CircuitState.OPEN || this.probing) return false;
    this.probing = true;
    return true;
  }

  onSuccess(): void {
    this.consecutive = 0;
    this.probing = false;
  }

  /** The call ended without saying anything about the backend (the caller cancelled). */
  release(): void {
    this.probing = false;
  }

  onFailure(): void {
    this.consecutive++;
    this.probing = false;
    if (this.consecutive >= this.failureThreshold) this.openedAt = this.now();
  }
}
