import { ConfigError, loadServerConfig, type Env, type ServerConfig, type ServiceName } from "./config.js";
import { createLogger, type Logger } from "./logger.js";
import type { RunningServer } from "./server.js";

/** What a service's start function gets: its environment, shared settings and logger. */
export interface ServiceStartContext {
  readonly env: Env;
  readonly config: ServerConfig;
  readonly logger: Logger;
}

/** A started service: its server, and the resources to release after the server stopped. */
export interface StartedService {
  readonly server: RunningServer;
  close?(): Promise<void>;
}

/**
 * Runs one service as a process: parses configuration (a bad variable exits 2 naming it),
 * starts it (a start-up failure exits 1), and on SIGTERM or SIGINT drains in-flight calls,
 * releases resources and exits 0. A second signal exits at once with 1.
 */
export async function runService(
  name: ServiceName,
  env: Env,
  start: (context: ServiceStartContext) => Promise<StartedService>,
): Promise<void> {
  let config: ServerConfig;
  try {
    config = loadServerConfig(env, name);
  } catch (err) {
    exitOnConfigError(name, err);
  }
  const logger = createLogger(name, config.logLevel);
  let started: StartedService;
  try {
    started = await start({ env, config, logger });
  } catch (err) {
    if (err instanceof ConfigError) exitOnConfigError(name, err);
    logger.fatal({ err }, "start-up failed");
    logger.flush(() => process.exit(1));
    return;
  }

  let stopping = false;
  const stop = async (signal: NodeJS.Signals) => {
    if (stopping) {
      logger.warn({ signal }, "second signal: exiting now");
      logger.flush(() => process.exit(1));
      return;
    }
    stopping = true;
    logger.info({ signal }, "draining");
    await started.server.shutdown();
    await started.close?.();
    logger.info("stopped");
    logger.flush(() => process.exit(0));
  };
  process.on("SIGTERM", (signal) => void stop(signal));
  process.on("SIGINT", (signal) => void stop(signal));
  // Started by `mlmesh up` with an IPC channel: stop when that parent goes away.
  if (process.send !== undefined) process.once("disconnect", () => void stop("SIGTERM"));
}

function exitOnConfigError(name: string, err: unknown): never {
  if (!(err instanceof ConfigError)) throw err;
  process.stderr.write(`mlmesh ${name}: configuration error: ${err.message}\n`);
  process.exit(2);
}
