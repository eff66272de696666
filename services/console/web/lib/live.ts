import { fetchJson } from "./errors";
import { authorization } from "./settings";

/** GET /live.json: each service's last minutes, and each model version's latest requests/s. */
export interface LiveBody {
  readonly services: { service: string; points: { t: number; rps: number; errorRate: number; p99Ms: number | null }[] }[];
  readonly models: { service: string; model: string; version: string; rps: number }[];
}

export function fetchLive(token: string, signal: AbortSignal): Promise<LiveBody> {
  return fetchJson<LiveBody>("/live.json", { headers: authorization(token), signal, what: "the console's server" });
}
