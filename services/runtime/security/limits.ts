import { Code, ConnectError } from "@connectrpc/connect";
import type { LimitSettings } from "../env/settings.js";

/*
 * Per-client limits on expensive calls (the RPCs whose policy says `limited`, and any call whose
 * request is larger than LIMIT_LARGE_REQUEST_BYTES): at most LIMIT_CONCURRENCY such calls in
 * flight per client, and LIMIT_RATE per second on average (bursts up to LIMIT_BURST). A client is
 * its credential's name when authentication is on, else its IP address. Over the limit: the
 * call fails at once with RESOURCE_EXHAUSTED, saying when to retry (also as the retry-after-ms
 * trailer), and costs nothing more — one client's flood does not slow the others.
 */

/** How long an idle client's bucket is kept. */
const idleMs = 60_000;

interface ClientState {
  inFlight: number;
  tokens: number;
  refilledAt: number;
}

export class ClientLimits {
  readonly #clients = new Map<string, ClientState>();
  #sweptAt = Date.now();

  constructor(readonly settings: LimitSettings) {}

  /** Takes a slot for one expensive call, or throws RESOURCE_EXHAUSTED; call the returned release when it ends. */
  acquire(client: string, method: string): () => void {
    const now = Date.now();
    if (now - this.#sweptAt > idleMs) this.sweep(now);
    let state = this.#clients.get(client);
    if (state === undefined) this.#clients.set(client, (state = { inFlight: 0, tokens: this.settings.burst, refilledAt: now }));
    state.tokens = Math.min(this.settings.burst, state.tokens + ((now - state.refilledAt) * this.settings.ratePerSecond) / 1000);
    state.refilledAt = now;
    if (state.inFlight >= this.settings.concurrency) {
      throw exhausted(`${client} already has ${state.inFlight} expensive calls in flight (at most ${this.settings.concurrency} per client)`, method, 100);
    }
    if (state.tokens < 1) {
      const waitMs = Math.ceil(((1 - state.tokens) * 1000) / this.settings.ratePerSecond);
      throw exhausted(`${client} is over ${this.settings.ratePerSecond} expensive calls per second`, method, waitMs);
    }
    state.tokens -= 1;
    state.inFlight++;
    const taken = state;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      taken.inFlight--;
    };
  }

  private sweep(now: number): void {
    this.#sweptAt = now;
    for (const [client, state] of this.#clients) {
      if (state.inFlight === 0 && now - state.refilledAt > idleMs) this.#clients.delete(client);
    }
  }
}

function exhausted(why: string, method: string, retryAfterMs: number): ConnectError {
  const error = new ConnectError(`${method} refused: ${why}; retry in ${retryAfterMs} ms`, Code.ResourceExhausted);
  error.metadata.set("retry-after-ms", String(retryAfterMs));
  return error;
}
