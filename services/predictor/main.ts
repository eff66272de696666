import { PredictorService } from "../../gen/mlmesh/predictor/v1/predictor_pb.js";
import { ConfigError, type Env } from "../runtime/config.js";
import { ServingStatus } from "../runtime/health.js";
import { serve } from "../runtime/instrument.js";
import { runService } from "../runtime/run-service.js";
import { startServer } from "../runtime/server.js";
import { loadPredictorConfig } from "./config.js";
import { loadModelRepository, type ModelRepository } from "./model-repository.js";
import { createPredictorService } from "./service.js";

/**
 * Runs the Predictor: loads every model of MODEL_DIR, then serves them. Its health is SERVING
 * only when every model version loaded; versions that failed are logged by name, listed by
 * ListModels, and answer FAILED_PRECONDITION, while the others serve.
 */
export function main(env: Env): Promise<void> {
  return runService("predictor", env, async ({ config, logger }) => {
    const predictorConfig = loadPredictorConfig(env);
    const repository = await openRepository(predictorConfig.modelDir, predictorConfig.intraOpThreads);
    for (const failure of repository.failures) logger.error(failure, "model failed to load");
    const loaded = [...repository.models].flatMap(([name, versions]) => [...versions.keys()].map((v) => `${name}@${v}`)).sort();
    logger.info({ modelDir: predictorConfig.modelDir, loaded }, "models loaded");

    const server = await startServer({ config, logger, services: [serve(PredictorService, createPredictorService(repository))] });
    server.health.set("", ServingStatus.SERVING);
    const allLoaded = repository.failures.length === 0;
    server.health.set(PredictorService.typeName, allLoaded ? ServingStatus.SERVING : ServingStatus.NOT_SERVING);
    return { server, close: () => repository.close() };
  });
}

async function openRepository(modelDir: string, intraOpThreads: number): Promise<ModelRepository> {
  let repository: ModelRepository;
  try {
    repository = await loadModelRepository(modelDir, { intraOpThreads });
  } catch (err) {
    throw new ConfigError("MODEL_DIR", `cannot read model repository ${modelDir}: ${(err as Error).message}`);
  }
  if (repository.models.size === 0 && repository.failures.length === 0) {
    throw new ConfigError("MODEL_DIR", `${modelDir} holds no models (expected <name>/<version>/model.onnx)`);
  }
  return repository;
}
