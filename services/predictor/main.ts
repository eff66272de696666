import { hostname } from "node:os";
import { GRPCInferenceService } from "../../gen/inference/open_inference_pb.js";
import { PredictorService } from "../../gen/mlmesh/predictor/v1/predictor_pb.js";
import { ConfigError, type Env } from "../runtime/env/variables.js";
import { ServingStatus } from "../runtime/serve/health.js";
import { serve } from "../runtime/serve/registration.js";
import type { Logger } from "../runtime/observability/logger.js";
import { runService } from "../runtime/serve/run-service.js";
import { predictModelsWire, predictWire } from "../model/wire/predict-wire.js";
import { startServer, type RunningServer, type StartServerOptions } from "../runtime/serve/server.js";
import { loadPredictorConfig, type PredictorConfig } from "./config.js";
import { readModelFolder } from "./folder-source.js";
import { watchServingTable } from "./metrics.js";
import { ModelLoader } from "./model-loader.js";
import { RegistrySource } from "./registry-source.js";
import { ServingTable, type Snapshot } from "./serving-table.js";
import { createInferenceService } from "./oip-service.js";
import { createInferenceRestRoutes } from "./oip-rest.js";
import { Inference } from "./inference.js";
import { PredictionCache } from "./prediction-cache.js";
import { recordPredictions, recordShadow } from "./prediction-recorder.js";
import { ShadowRunner } from "./shadow-runner.js";
import { createPredictorService } from "./service.js";

/**
 * Runs the Predictor. With REGISTRY_ADDRESS it serves what the registry says (aliased and
 * newest versions of the selected models), following its changes with no restart and no
 * failed call; without, every version of the MODEL_DIR folder. Health: the server is SERVING
 * once models are loaded (in registry mode: once the first comparison with the registry is
 * applied), PredictorService and the Open Inference Protocol's GRPCInferenceService (and its
 * REST binding under /v2) only while no wanted version failed to load; failures are
 * logged by name, listed by ListModels, and answer FAILED_PRECONDITION while the rest serves.
 */
export function main(env: Env): Promise<void> {
  return runService("predictor", env, async ({ config, logger, tracing, gatekeeper, meshCredentials, predictionLog }) => {
    const predictorConfig = loadPredictorConfig(env);
    const table = new ServingTable();
    const { cache: cacheSettings } = predictorConfig;
    const cache = cacheSettings.models === "*" || cacheSettings.models.size > 0 ? new PredictionCache(cacheSettings, logger) : undefined;
    const inference = new Inference(table, cache);
    if (predictionLog !== undefined) recordPredictions(inference, predictionLog);
    const shadows = new ShadowRunner({
      ...predictorConfig.shadows,
      logger,
      onCompared: predictionLog && ((comparison, event) => recordShadow(predictionLog, comparison, event)),
    });
    inference.observe((event) => shadows.observe(event));
    watchServingTable(table);
    const { intraOpThreads, workerThresholdBytes, imageLimits, outlierModels } = predictorConfig;
    const scoreOutliers = (model: string) => outlierModels === "*" || outlierModels.has(model);
    const loader = new ModelLoader(table, { session: { intraOpThreads, workerThresholdBytes }, imageLimits, logger, scoreOutliers });
    const stop = new AbortController();
    // Ready (ServerReady, /v2/health/ready): every wanted version loaded, as health says.
    let ready = false;
    const serving: StartServerOptions = {
      config,
      logger,
      tracing,
      gatekeeper,
      services: [serve(PredictorService, createPredictorService(inference), { predict: predictWire, predictModels: predictModelsWire }), serve(GRPCInferenceService, createInferenceService(inference, () => ready))],
      httpRoutes: createInferenceRestRoutes(inference, { ready: () => ready, maxBodyBytes: config.maxMessageBytes }),
    };
    const setHealth = (server: RunningServer, snapshot: Snapshot) => {
      ready = snapshot.failures.length === 0;
      server.health.set("", ServingStatus.SERVING);
      for (const service of [PredictorService, GRPCInferenceService]) {
        server.health.set(service.typeName, ready ? ServingStatus.SERVING : ServingStatus.NOT_SERVING);
      }
    };
    if (predictorConfig.registryAddress === undefined) {
      const snapshot = await loadFolder(predictorConfig.modelDir, loader, logger);
      const server = await startServer(serving);
      setHealth(server, snapshot);
      return {
        server,
        async close() {
          cache?.close();
          await table.close();
        },
      };
    }
    const server = await startServer(serving);
    server.health.setAll(ServingStatus.NOT_SERVING); // until the registry's models are loaded
    const source = new RegistrySource(loader, { ...registryOptions(predictorConfig, predictorConfig.registryAddress, server, logger, setHealth), tracing, credentials: meshCredentials }, logger);
    source.start(stop.signal);
    logger.info({ registry: predictorConfig.registryAddress, models: env.PREDICTOR_MODELS ?? "*", latestVersions: predictorConfig.latestVersions }, "serving models from the registry");
    return {
      server,
      async close() {
        stop.abort();
        cache?.close();
        await table.close();
      },
    };
  });
}

async function loadFolder(modelDir: string, loader: ModelLoader, logger: Logger): Promise<Snapshot> {
  let folder: Awaited<ReturnType<typeof readModelFolder>>;
  try {
    folder = await readModelFolder(modelDir);
  } catch (err) {
    throw new ConfigError("MODEL_DIR", `cannot read model repository ${modelDir}: ${(err as Error).message}`);
  }
  if (folder.models.length === 0 && folder.failures.length === 0) {
    throw new ConfigError("MODEL_DIR", `${modelDir} holds no models (expected <name>/<version>/model.onnx)`);
  }
  const snapshot = await loader.apply(folder.models, folder.failures);
  for (const failure of snapshot.failures) logger.error(failure, "model failed to load");
  const loaded = [...snapshot.models.values()].flatMap((m) => [...m.versions.keys()].map((v) => `${m.name}@${v}`)).sort();
  logger.info({ modelDir, loaded }, "models loaded");
  return snapshot;
}

function registryOptions(
  config: PredictorConfig,
  address: string,
  server: RunningServer,
  logger: Logger,
  setHealth: (server: RunningServer, snapshot: Snapshot) => void,
) {
  let firstSync = true;
  return {
    address,
    models: config.models,
    latestVersions: config.latestVersions,
    resyncMs: config.resyncMs,
    // Listening on every interface, the address says nothing: the host name does (containers).
    reportAs: () => config.name || (/^(0\.0\.0\.0|::)$/.test(serverHost(server)) ? `${hostname()}:${server.port}` : server.address),
    onApplied: (snapshot: Snapshot) => {
      setHealth(server, snapshot);
      if (firstSync) {
        firstSync = false;
        const loaded = [...snapshot.models.values()].flatMap((m) => [...m.versions.keys()].map((v) => `${m.name}@${v}`)).sort();
        logger.info({ loaded, failures: snapshot.failures.length }, "models loaded from the registry");
      }
    },
  };
}

/** The host part of "host:port" (IPv6 hosts come bracketed). */
function serverHost(server: RunningServer): string {
  return server.address.slice(0, server.address.lastIndexOf(":")).replace(/^\[|\]$/g, "");
}
