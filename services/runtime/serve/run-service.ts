import { loadMeshCredentials, type MeshCredentials } from "../client/mesh-credentials.js";
import type { ServiceName } from "../env/service-ports.js";
import { loadPredictionLogSettings, loadSharedSettings, type ServerConfig, type SharedSettings } from "../env/settings.js";
import { ConfigError, type Env } from "../env/variables.js";
import { createLogger, type Logger } from "../observability/logger.js";
import { recordBuildInfo } from "../observability/build-info.js";
import { setMetricsEnabled } from "../observability/metrics.js";
import { createTracing, type Tracing } from "../observability/tracing.js";
import { PredictionLog } from "../prediction-log/prediction-log.js";
import { loadAuthenticator } from "../security/credentials.js";
import { Gatekeeper } from "../security/gatekeeper.js";
import { ClientLimits } from "../security/limits.js";
import type { RunningServer } from "./server.js";

/** What a service's start function gets: its environment, shared settings, logger and tracing. */
export interface ServiceStartContext {
  /** The environment, for the service's own config.ts. */
  readonly env: Env;
  readonly config: ServerConfig;
  /** Every shared setting (config is its server part), for work started beside the server. */
  readonly settings: SharedSettings;
  readonly logger: Logger;
  /** Pass to startServer; background work starts its own root spans with it. */
  readonly tracing: Tracing;
  /** Pass to startServer: credentials, roles and limits of incoming calls. */
  readonly gatekeeper: Gatekeeper;
  /** For the calls this service makes to other mesh services: TLS and its own token. */
  readonly meshCredentials: MeshCredentials;
  /** Where a service that predicts records its predictions (MONITOR_ADDRESS); undefined: not recorded. */
  readonly predictionLog: PredictionLog | undefined;
}

/** A started service: its server, and the resources to release after the server stopped. */
export interface StartedService {
  readonly server: RunningServer;
  close?(): Promise<void>;
}

/**
 * Runs one service as a process: parses configuration (a bad variable exits 2 naming it),
 * starts it (a start-up failure exits 1), and on SIGTERM or SIGINT drains in-flight calls,
 * releases resources and exits 0. Signals are handled from the first moment: a stop asked for
 * during start-up lets start-up finish (a migration is not cut in half) and then stops, but
 * never takes longer than the grace period (then it exits 1). A second signal exits at once
 * with 1.
 */
export async function runService(
  name: ServiceName,
  env: Env,
  start: (context: ServiceStartContext) => Promise<StartedService>,
): Promise<void> {
  let settings: SharedSettings;
  let meshCredentials: MeshCredentials;
  let predictionLogSettings: ReturnType<typeof loadPredictionLogSettings>;
  try {
    settings = loadSharedSettings(env, name);
    meshCredentials = loadMeshCredentials(settings.meshClient);
    predictionLogSettings = loadPredictionLogSettings(env);
  } catch (err) {
    exitOnConfigError(name, err);
  }
  const config = settings.server;
  setMetricsEnabled(settings.metricsEnabled);
  const logger = createLogger(name, config.logLevel);
  let gatekeeper: Gatekeeper;
  try {
    gatekeeper = new Gatekeeper(loadAuthenticator(settings.auth, logger), new ClientLimits(config.limits));
  } catch (err) {
    exitOnConfigError(name, err);
  }
  recordBuildInfo(name, { tls: config.tls !== undefined, auth: gatekeeper.authenticator !== undefined });
  const tracing = await createTracing(name, settings.tracing);
  const { monitorAddress } = predictionLogSettings;
  const predictionLog = monitorAddress === undefined || name === "monitor" ? undefined : new PredictionLog({ ...predictionLogSettings, monitorAddress }, logger, meshCredentials);
  const exit = (code: number) => logger.flush(() => process.exit(code));
  let started: StartedService | undefined;
  let stopping = false;

  const drain = async () => {
    await started!.server.shutdown();
    await started!.close?.();
    // The records of the last calls, within what is left of the grace period.
    await predictionLog?.close(Math.max(500, config.shutdownGraceMs / 2));
    gatekeeper.authenticator?.close();
    await tracing.shutdown().catch(() => undefined); // the last spans, if exporting
    logger.info("stopped");
    exit(0);
  };
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) {
      logger.warn({ signal }, "second signal: exiting now");
      exit(1);
      return;
    }
    stopping = true;
    if (started === undefined) {
      logger.info({ signal }, "stop requested during start-up: stopping once it ends");
      setTimeout(() => {
        logger.warn({ graceMs: config.shutdownGraceMs }, "start-up did not end within the grace period: exiting now");
        exit(1);
      }, config.shutdownGraceMs);
      return;
    }
    logger.info({ signal }, "draining");
    void drain();
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  // Started by `mlmesh up` with an IPC channel: stop when that parent goes away (also when it
  // went away while this process was still loading its modules).
  if (process.send !== undefined) {
    process.once("disconnect", () => stop("SIGTERM"));
    if (!process.connected) stop("SIGTERM");
  }

  try {
    started = await start({ env, config, settings, logger, tracing, gatekeeper, meshCredentials, predictionLog });
  } catch (err) {
    if (err instanceof ConfigError) exitOnConfigError(name, err);
    logger.fatal({ err }, "start-up failed");
    exit(1);
    return;
  }
  if (stopping) await drain();
}

function exitOnConfigError(name: string, err: unknown): never {
  if (!(err instanceof ConfigError)) throw err;
  process.stderr.write(`mlmesh ${name}: configuration error: ${err.message}\n`);
  process.exit(2);
}
