import { fileURLToPath } from "node:url";
import { ConfigError, envInt, envString, type Env } from "../runtime/config.js";

/** Settings of the Predictor, beyond the shared server settings. */
export interface PredictorConfig {
  /** The model repository: <name>/<version>/{model.onnx,metadata.json}. */
  readonly modelDir: string;
  /** Threads onnxruntime may use inside one inference call. */
  readonly intraOpThreads: number;
}

const bundledModels = fileURLToPath(new URL("../../models", import.meta.url));

export function loadPredictorConfig(env: Env): PredictorConfig {
  const modelDir = envString(env, "MODEL_DIR", bundledModels);
  if (modelDir.trim() === "") throw new ConfigError("MODEL_DIR", "must name a directory");
  return Object.freeze({
    modelDir,
    intraOpThreads: envInt(env, "ORT_INTRA_OP_THREADS", 1, 1, 64),
  });
}
