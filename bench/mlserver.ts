// Seldon MLServer 1.7.1 (the .tools/venv-mlserver of scripts/install-bench-tools.sh --mlserver)
// started for a benchmark: one model served by one of bench/mlserver/'s runtimes, the server
// pinned to core 0 with inference in its own process (parallel_workers 0).
import { spawn, type ChildProcess } from "node:child_process";
import { cpSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readProcessEnvironment } from "../services/runtime/env/variables.js";
import { repoRoot } from "./support.js";

const environment = readProcessEnvironment();

export interface MlserverOptions {
  /** The model's name as requests give it. */
  readonly model: string;
  /** A runtime file of bench/mlserver/ and its class, e.g. "onnx_runtime.py", "OnnxClassifier". */
  readonly runtime: string;
  readonly runtimeClass: string;
  readonly modelUri: string;
  readonly httpPort: number;
  readonly grpcPort: number;
  /** Adaptive batching (max_batch_size, max_batch_time in s); none: off. */
  readonly batching?: { readonly maxBatchSize: number; readonly maxBatchTime: number };
  /** Largest gRPC message, in bytes (MLServer's own default otherwise). */
  readonly grpcMaxMessageBytes?: number;
}

/** Starts MLServer and resolves once the model is ready (at most 90 s). */
export async function startMlserver(options: MlserverOptions): Promise<{ stop(): Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), "mlmesh-mlserver-"));
  cpSync(join(repoRoot, "bench/mlserver", options.runtime), join(dir, options.runtime));
  const settings = {
    parallel_workers: 0,
    metrics_endpoint: null,
    http_port: options.httpPort,
    grpc_port: options.grpcPort,
    debug: false,
    ...(options.grpcMaxMessageBytes === undefined ? {} : { grpc_max_message_length: options.grpcMaxMessageBytes }),
  };
  writeFileSync(join(dir, "settings.json"), JSON.stringify(settings));
  writeFileSync(
    join(dir, "model-settings.json"),
    JSON.stringify({
      name: options.model,
      implementation: `${options.runtime.replace(/\.py$/, "")}.${options.runtimeClass}`,
      parameters: { uri: options.modelUri },
      ...(options.batching ? { max_batch_size: options.batching.maxBatchSize, max_batch_time: options.batching.maxBatchTime } : {}),
    }),
  );
  const child: ChildProcess = spawn("taskset", ["-c", "0", join(repoRoot, ".tools/venv-mlserver/bin/mlserver"), "start", dir], {
    cwd: dir,
    env: { ...environment, PYTHONPATH: dir },
    stdio: ["ignore", "ignore", "pipe"],
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const deadline = Date.now() + 90_000;
  for (;;) {
    if (await fetch(`http://127.0.0.1:${options.httpPort}/v2/models/${options.model}/ready`).then((r) => r.ok, () => false)) break;
    if (child.exitCode !== null || Date.now() > deadline) throw new Error("MLServer did not become ready");
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  return {
    async stop() {
      child.kill("SIGTERM");
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
