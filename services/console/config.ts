import { ConfigError, envDurationMs, envInt, envString, type Env } from "../runtime/env/variables.js";
import { servicePorts } from "../runtime/env/service-ports.js";

/** Where the console page sends its calls: base URLs as the browser reaches them. */
export interface ConsoleConfig {
  readonly predictorUrl: string;
  readonly proxyUrl: string;
  readonly batchUrl: string;
  readonly registryUrl: string;
  readonly monitorUrl: string;
  /** Where the console's server reads each service's GET /metrics for the live panel. */
  readonly metricsTargets: ReadonlyMap<string, string>;
  /** How long the history keeps each poll (CONSOLE_HISTORY_FINE) and minutes beyond (CONSOLE_HISTORY_COARSE). */
  readonly history: { readonly fineMs: number; readonly coarseMs: number };
  /** A Prometheus to read the history charts from instead (PROMETHEUS_URL); undefined: the console's own. */
  readonly prometheusUrl: string | undefined;
}

/**
 * CONSOLE_PREDICTOR_URL, CONSOLE_PROXY_URL, CONSOLE_BATCH_URL, CONSOLE_REGISTRY_URL and CONSOLE_MONITOR_URL, by
 * default this machine's service ports on 127.0.0.1. They are the browser's view: behind Envoy
 * they would be its address.
 */
export function loadConsoleConfig(env: Env): ConsoleConfig {
  const local = (service: "predictor" | "proxy" | "batch" | "registry" | "monitor") =>
    `http://127.0.0.1:${envInt(env, servicePorts[service].variable, servicePorts[service].port, 1, 65535)}`;
  const urls = {
    predictorUrl: baseUrl(env, "CONSOLE_PREDICTOR_URL", local("predictor")),
    proxyUrl: baseUrl(env, "CONSOLE_PROXY_URL", local("proxy")),
    batchUrl: baseUrl(env, "CONSOLE_BATCH_URL", local("batch")),
    registryUrl: baseUrl(env, "CONSOLE_REGISTRY_URL", local("registry")),
    monitorUrl: baseUrl(env, "CONSOLE_MONITOR_URL", local("monitor")),
  };
  const byDefault = `registry=${urls.registryUrl},predictor=${urls.predictorUrl},batch=${urls.batchUrl},proxy=${urls.proxyUrl},monitor=${urls.monitorUrl}`;
  const prometheus = envString(env, "PROMETHEUS_URL", "");
  return Object.freeze({
    ...urls,
    metricsTargets: metricsTargets(envString(env, "CONSOLE_METRICS_URLS", byDefault)),
    history: {
      fineMs: envDurationMs(env, "CONSOLE_HISTORY_FINE", 3_600_000, 60_000, 86_400_000),
      coarseMs: envDurationMs(env, "CONSOLE_HISTORY_COARSE", 86_400_000, 0, 30 * 86_400_000),
    },
    prometheusUrl: prometheus === "" ? undefined : baseUrl(env, "PROMETHEUS_URL", prometheus),
  });
}

/** CONSOLE_METRICS_URLS: comma-separated name=url (the service's base URL as the console's server reaches it). */
function metricsTargets(raw: string): Map<string, string> {
  const targets = new Map<string, string>();
  for (const entry of raw.split(",").map((e) => e.trim()).filter((e) => e !== "")) {
    const match = /^([a-z][a-z0-9_-]*)=(https?:\/\/\S+)$/.exec(entry);
    if (!match) throw new ConfigError("CONSOLE_METRICS_URLS", `"${entry}" is not name=http://host:port`);
    targets.set(match[1], match[2].replace(/\/+$/, ""));
  }
  return targets;
}

function baseUrl(env: Env, name: string, fallback: string): string {
  const raw = envString(env, name, fallback);
  let url: URL | undefined;
  try {
    url = new URL(raw);
  } catch {
    url = undefined;
  }
  if (url === undefined || (url.protocol !== "http:" && url.protocol !== "https:")) {
    throw new ConfigError(name, `must be an http:// or https:// URL, got "${raw}"`);
  }
  return raw.replace(/\/+$/, "");
}
