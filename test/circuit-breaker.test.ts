// CircuitBreaker with a fake clock.
import { describe, expect, it } from "vitest";
import { CircuitBreaker, CircuitState } from "../services/proxy/circuit-breaker.js";

describe("CircuitBreaker", () => {
  it("opens after N consecutive failures, half-opens after the cool-down, closes on a good probe", () => {
    let now = 0;
    const breaker = new CircuitBreaker(3, 1000, () => now);
    breaker.onFailure();
    breaker.onFailure();
    expect(breaker.state).toBe(CircuitState.CLOSED);
    breaker.onSuccess(); // a success resets the count
    for (let i = 0; i < 3; i++) {
      expect(breaker.tryAcquire()).toBe(true);
      breaker.onFailure();
    }
    expect(breaker.state).toBe(CircuitState.OPEN);
    expect(breaker.tryAcquire()).toBe(false);
    now = 999;
    expect(breaker.tryAcquire()).toBe(false);
    now = 1000;
    expect(breaker.state).toBe(CircuitState.HALF_OPEN);
    expect(breaker.tryAcquire()).toBe(true); // the probe
    expect(breaker.tryAcquire()).toBe(false); // one probe at a time
    breaker.onSuccess();
    expect(breaker.state).toBe(CircuitState.CLOSED);
    expect(breaker.consecutiveFailures).toBe(0);
  });

  it("re-opens for a full cool-down when the probe fails, and frees the probe when it is cancelled", () => {
    let now = 0;
    const breaker = new CircuitBreaker(1, 1000, () => now);
    breaker.onFailure();
    now = 1000;
    expect(breaker.tryAcquire()).toBe(true);
    breaker.onFailure();
    expect(breaker.state).toBe(CircuitState.OPEN);
    now = 1999;
    expect(breaker.tryAcquire()).toBe(false);
    now = 2000;
    expect(breaker.tryAcquire()).toBe(true);
    breaker.release(); // the caller cancelled: nothing learnt, another probe may go
    expect(breaker.tryAcquire()).toBe(true);
  });
});
