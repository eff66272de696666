import { fileURLToPath } from "node:url";
import type { ImageLimits } from "../model/preprocessing.js";
import type { CacheSettings } from "./prediction-cache.js";
import { ConfigError, envDurationMs, envInt, envString, type Env } from "../runtime/env/variables.js";

/** Which registry models a Predictor serves: every model of some projects, or named ones. */
export interface ModelSelection {
  /** "*": every model of every project. */
  readonly everything: boolean;
  /** Project name -> "*" (every model) or the model names. */
  readonly projects: ReadonlyMap<string, "*" | ReadonlySet<string>>;
}

/** Settings of the Predictor, beyond the shared server settings. */
export interface PredictorConfig {
  /** The model repository folder (no registry): <name>/<version>/{model.onnx,metadata.json}. */
  readonly modelDir: string;
  /** REGISTRY_ADDRESS: serve what the registry says instead of a folder; undefined: folder mode. */
  readonly registryAddress: string | undefined;
  /** PREDICTOR_MODELS: which registry models to serve. */
  readonly models: ModelSelection;
  /** PREDICTOR_LATEST_VERSIONS: besides the versions aliases point at, the newest N of each model. */
  readonly latestVersions: number;
  /** PREDICTOR_RESYNC_INTERVAL: full comparison with the registry, beside the watch stream. */
  readonly resyncMs: number;
  /** PREDICTOR_NAME: how the Predictor names itself to the registry; empty: its host:port. */
  readonly name: string;
  /** Threads onnxruntime may use inside one inference call. */
  readonly intraOpThreads: number;
  /** PREDICTOR_WORKER_MODEL_BYTES: a model.onnx this large or larger runs in a worker thread of its own. */
  readonly workerThresholdBytes: number;
  /** PREDICTOR_IMAGE_MAX_BYTES and PREDICTOR_IMAGE_MAX_PIXELS: what one image may be before it is decoded. */
  readonly imageLimits: ImageLimits;
  /** PREDICTOR_CACHE_*: the prediction cache (off unless PREDICTOR_CACHE_MODELS names models). */
  readonly cache: CacheSettings;
  /** PREDICTOR_OUTLIER_MODELS: the models whose rows their outlier model scores ("*": every model that has one). */
  readonly outlierModels: "*" | ReadonlySet<string>;
  /** PREDICTOR_SHADOW_CONCURRENCY and PREDICTOR_SHADOW_TIMEOUT: traffic policies' shadow runs at a time, and how long one is waited for. */
  readonly shadows: { readonly concurrency: number; readonly timeoutMs: number };
}

const bundledModels = fileURLToPath(new URL("../../models", import.meta.url));
const name = "[A-Za-z0-9][A-Za-z0-9._-]*";

export function loadPredictorConfig(env: Env): PredictorConfig {
  const modelDir = envString(env, "MODEL_DIR", bundledModels);
  if (modelDir.trim() === "") throw new ConfigError("MODEL_DIR", "must name a directory");
  const registryAddress = envString(env, "REGISTRY_ADDRESS", "");
  if (registryAddress !== "" && !/^[^\s:]+:\d+$/.test(registryAddress)) throw new ConfigError("REGISTRY_ADDRESS", `must be host:port, got "${registryAddress}"`);
  return Object.freeze({
    modelDir,
    registryAddress: registryAddress === "" ? undefined : registryAddress,
    models: parseSelection(envString(env, "PREDICTOR_MODELS", "*")),
    latestVersions: envInt(env, "PREDICTOR_LATEST_VERSIONS", 1, 0, 100),
    resyncMs: envDurationMs(env, "PREDICTOR_RESYNC_INTERVAL", 30_000, 1000, 86_400_000),
    name: envString(env, "PREDICTOR_NAME", ""),
    intraOpThreads: envInt(env, "ORT_INTRA_OP_THREADS", 1, 1, 64),
    workerThresholdBytes: envInt(env, "PREDICTOR_WORKER_MODEL_BYTES", 16 * 1024 * 1024, 0, Number.MAX_SAFE_INTEGER),
    imageLimits: {
      maxBytes: envInt(env, "PREDICTOR_IMAGE_MAX_BYTES", 16 * 1024 * 1024, 1024, 1024 * 1024 * 1024),
      maxPixels: envInt(env, "PREDICTOR_IMAGE_MAX_PIXELS", 40_000_000, 1, 1_000_000_000),
    },
    cache: loadCacheSettings(env),
    outlierModels: modelNames(env, "PREDICTOR_OUTLIER_MODELS", "*"),
    shadows: {
      concurrency: envInt(env, "PREDICTOR_SHADOW_CONCURRENCY", 4, 1, 1024),
      timeoutMs: envDurationMs(env, "PREDICTOR_SHADOW_TIMEOUT", 2000, 1, 600_000),
    },
  });
}

/** A comma-separated list of model names, "*" for every model, or "none" for no model. */
function modelNames(env: Env, variable: string, fallback: string): "*" | ReadonlySet<string> {
  const raw = envString(env, variable, fallback).trim();
  if (raw === "none") return new Set();
  const names = raw.split(",").map((n) => n.trim()).filter((n) => n !== "");
  for (const n of names) if (n !== "*" && !new RegExp(`^${name}$`).test(n)) throw new ConfigError(variable, `"${n}" is not a model name (or "*", or "none")`);
  return names.includes("*") ? "*" : new Set(names);
}

function loadCacheSettings(env: Env): CacheSettings {
  const models = modelNames(env, "PREDICTOR_CACHE_MODELS", "none");
  const redisUrl = envString(env, "PREDICTOR_CACHE_REDIS_URL", "");
  if (redisUrl !== "" && !/^rediss?:\/\/\S+$/.test(redisUrl)) throw new ConfigError("PREDICTOR_CACHE_REDIS_URL", `must be redis://host:port, got "${redisUrl}"`);
  return {
    models,
    maxBytes: envInt(env, "PREDICTOR_CACHE_MAX_BYTES", 64 * 1024 * 1024, 0, 64 * 1024 * 1024 * 1024),
    ttlMs: envDurationMs(env, "PREDICTOR_CACHE_TTL", 600_000, 1000, 30 * 86_400_000),
    redisUrl: redisUrl === "" ? undefined : redisUrl,
    redisTimeoutMs: envDurationMs(env, "PREDICTOR_CACHE_REDIS_TIMEOUT", 25, 1, 10_000),
  };
}

/** "*", or comma-separated "project/*" and "project/model" entries. */
function parseSelection(raw: string): ModelSelection {
  const entries = raw.split(",").map((e) => e.trim()).filter((e) => e !== "");
  if (entries.includes("*")) return { everything: true, projects: new Map() };
  const projects = new Map<string, "*" | Set<string>>();
  for (const entry of entries) {
    const match = new RegExp(`^(${name})/(\\*|${name})$`).exec(entry);
    if (!match) throw new ConfigError("PREDICTOR_MODELS", `"${entry}" is not "*", "project/*" or "project/model"`);
    const [, project, model] = match;
    const current = projects.get(project);
    if (model === "*" || current === "*") projects.set(project, "*");
    else projects.set(project, new Set([...(current ?? []), model]));
  }
  if (projects.size === 0) throw new ConfigError("PREDICTOR_MODELS", "names no model");
  return { everything: false, projects };
}

/** Whether a registry model is one the Predictor serves. */
export function selects(selection: ModelSelection, project: string, model: string): boolean {
  if (selection.everything) return true;
  const models = selection.projects.get(project);
  return models === "*" || (models !== undefined && models.has(model));
}
