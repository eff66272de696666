import { ConfigError, envInt, envString, servicePorts, type Env } from "../runtime/config.js";

/** Where the console page sends its calls: base URLs as the browser reaches them. */
export interface ConsoleConfig {
  readonly predictorUrl: string;
  readonly proxyUrl: string;
  readonly batchUrl: string;
  readonly registryUrl: string;
}

/**
 * CONSOLE_PREDICTOR_URL, CONSOLE_PROXY_URL, CONSOLE_BATCH_URL and CONSOLE_REGISTRY_URL, by
 * default this machine's service ports on 127.0.0.1. They are the browser's view: behind Envoy
 * they would be its address.
 */
export function loadConsoleConfig(env: Env): ConsoleConfig {
  const local = (service: "predictor" | "proxy" | "batch" | "registry") =>
    `http://127.0.0.1:${envInt(env, servicePorts[service].variable, servicePorts[service].port, 1, 65535)}`;
  return Object.freeze({
    predictorUrl: baseUrl(env, "CONSOLE_PREDICTOR_URL", local("predictor")),
    proxyUrl: baseUrl(env, "CONSOLE_PROXY_URL", local("proxy")),
    batchUrl: baseUrl(env, "CONSOLE_BATCH_URL", local("batch")),
    registryUrl: baseUrl(env, "CONSOLE_REGISTRY_URL", local("registry")),
  });
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
