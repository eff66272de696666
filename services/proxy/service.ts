import { randomUUID } from "node:crypto";
import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type {
  BackendPredictionSchema,
  BackendStatusSchema,
  PredictLabelResponseSchema,
  ProxyService,
} from "../../gen/mlmesh/proxy/v1/proxy_pb.js";
import { HealthCheckResponse_ServingStatus as ServingStatus } from "../../gen/grpc/health/v1/health_pb.js";
import type { PartialServiceImpl } from "../runtime/serve/registration.js";
import { RecordSource, type PredictionLog } from "../runtime/prediction-log/prediction-log.js";
import { callIdentityOf } from "../runtime/serve/pipeline.js";
import { PackedPredictResponse, packedRowsOf, packRows, type PackedRows } from "../model/wire/predict-wire.js";
import type { BackendAnswer, Outcome, ProxyBackend } from "./backends.js";
import type { ProxyConfig } from "./config.js";
import { partialAnswers } from "./metrics.js";

type BackendPredictionInit = MessageInitShape<typeof BackendPredictionSchema>;
type PredictLabelResponseInit = MessageInitShape<typeof PredictLabelResponseSchema>;

/**
 * The ProxyService handlers: every request goes to all backends in parallel, each call bounded
 * by the caller's deadline (or PROXY_BACKEND_TIMEOUT when the caller sets none), so a slow or
 * dead backend costs at most that long and never fails the whole request.
 */
export function createProxyService(
  backends: readonly ProxyBackend[],
  config: Pick<ProxyConfig, "backendTimeoutMs" | "healthTimeoutMs">,
  /** Where PredictLabel's aggregated answers are recorded (MONITOR_ADDRESS); undefined: not recorded. */
  predictionLog?: PredictionLog,
): PartialServiceImpl<typeof ProxyService> {
  const deadlineOf = (ctx: HandlerContext) => Date.now() + backendBudgetMs(ctx.timeoutMs(), config.backendTimeoutMs);

  const fanOut = async (rows: PackedRows, ctx: HandlerContext): Promise<BackendPredictionInit[]> => {
    const deadlineMs = deadlineOf(ctx);
    const call = callIdentityOf(ctx);
    const outcomes = await Promise.all(backends.map((b) => b.predict(rows, deadlineMs, ctx.signal, call?.span, call?.requestId)));
    return outcomes.map((outcome, i) => ({
      backend: backends[i].backend.name,
      status: statusOf(outcome),
      response: outcome.ok ? outcome.value : undefined,
    }));
  };

  const predictLabel = async (rows: PackedRows, ctx: HandlerContext): Promise<PredictLabelResponseInit> => {
    const started = performance.now();
    const answers = await fanOut(rows, ctx);
    let response: PredictLabelResponseInit;
    try {
      response = aggregate(answers, rows.rowCount);
    } catch (err) {
      if (predictionLog?.sampled(recordModel)) predictionLog.append(proxyRecord(rows, answers, ctx, performance.now() - started, ConnectError.from(err)));
      throw err;
    }
    if (response.failedBackends!.length > 0) partialAnswers.inc();
    if (predictionLog?.sampled(recordModel)) predictionLog.append(proxyRecord(rows, answers, ctx, performance.now() - started));
    return response;
  };

  return {
    async predict(request, ctx) {
      return { backends: await fanOut(packedRowsOf(request), ctx) };
    },

    predictLabel: (request, ctx) => predictLabel(packedRowsOf(request), ctx),

    async checkBackends() {
      const deadlineMs = Date.now() + config.healthTimeoutMs;
      const checks = await Promise.all(backends.map((b) => b.health(deadlineMs)));
      return {
        backends: checks.map((outcome, i) => {
          const { backend, breaker } = backends[i];
          return {
            backend: backend.name,
            address: backend.address,
            model: backend.model,
            serving: outcome.ok && outcome.value === ServingStatus.SERVING,
            status: statusOf(outcome),
            circuit: breaker.state,
            consecutiveFailures: breaker.consecutiveFailures,
          };
        }),
      };
    },

    async getMetadata(_request, ctx) {
      const deadlineMs = deadlineOf(ctx);
      const span = callIdentityOf(ctx)?.span;
      const outcomes = await Promise.all(backends.map((b) => b.metadata(deadlineMs, ctx.signal, span)));
      return {
        backends: outcomes.map((outcome, i) => ({
          backend: backends[i].backend.name,
          status: statusOf(outcome),
          metadata: outcome.ok ? outcome.value : undefined,
        })),
      };
    },

    async predictSample(_request, ctx) {
      const deadlineMs = deadlineOf(ctx);
      const span = callIdentityOf(ctx)?.span;
      const outcomes = await Promise.all(backends.map((b) => b.metadata(deadlineMs, ctx.signal, span)));
      const sample = outcomes.find((o) => o.ok && o.value !== undefined && o.value.sampleInput.length > 0);
      if (sample === undefined || !sample.ok) {
        throw new ConnectError(`no backend answered for its sample input: ${failureSummary(outcomes, backends)}`, Code.Unavailable);
      }
      const rows = sample.value!.sampleInput;
      return { rows, response: await predictLabel(packRows(rows), ctx) };
    },
  };
}

/** The model name the Proxy's records go under (its ensemble of one-vs-rest backends). */
const recordModel = "proxy";

/**
 * PredictLabel's record: the rows, and per row each backend's P(target) under its target label
 * (0 for a backend that failed), so that the label answered is the row's most probable.
 */
function proxyRecord(rows: PackedRows, answers: readonly BackendPredictionInit[], ctx: HandlerContext, latencyMs: number, error?: ConnectError) {
  const call = callIdentityOf(ctx);
  const labels = answers.map((a) => (a.response as BackendAnswer | undefined)?.labels[0] ?? String(a.backend));
  const probabilities = new Float32Array(rows.rowCount * labels.length);
  answers.forEach((answer, b) => {
    const response = answer.response as BackendAnswer | undefined;
    if (response === undefined) return;
    for (let r = 0; r < rows.rowCount; r++) probabilities[r * labels.length + b] = targetProbability(response, r);
  });
  const width = rows.rowCount > 0 ? rows.offsets[1] - rows.offsets[0] : 0;
  const uniform = rows.features.length === width * rows.rowCount;
  return {
    requestId: call?.requestId ?? randomUUID(),
    traceId: call?.span.traceId,
    caller: call?.principal?.name,
    source: RecordSource.proxy,
    api: "predict_label",
    model: recordModel,
    version: 0,
    timeMs: Date.now(),
    latencyMs,
    status: error?.code ?? 0,
    error: error?.rawMessage,
    rowCount: rows.rowCount,
    rows: uniform ? { width, values: rows.features } : undefined,
    classification: error === undefined ? { labels, probabilities } : undefined,
  };
}

/**
 * How long backend calls may take: the caller's remaining time less a margin to aggregate and
 * answer before the caller gives up (a tenth of it, at most 50 ms), or the configured per-backend
 * timeout when the caller set no deadline.
 */
function backendBudgetMs(callerTimeoutMs: number | undefined, backendTimeoutMs: number): number {
  if (callerTimeoutMs === undefined) return backendTimeoutMs;
  return Math.max(1, callerTimeoutMs - Math.min(50, callerTimeoutMs / 10));
}

/**
 * Per row, the target label of the backend with the highest P(target) among those that
 * answered. UNAVAILABLE when none answered; INVALID_ARGUMENT when every backend refused the
 * request as invalid (then it is the request, not the backends).
 */
function aggregate(answers: readonly BackendPredictionInit[], rowCount: number): PredictLabelResponseInit {
  const answered = answers.filter((a) => a.response !== undefined);
  const failed = answers.filter((a) => a.response === undefined);
  if (answered.length === 0) {
    const codes = new Set(failed.map((f) => Number(f.status!.code) as Code));
    const summary = failed.map((f) => `${f.backend}: ${Code[Number(f.status!.code) as Code]} ${f.status!.message}`).join("; ");
    const allInvalid = codes.size === 1 && codes.has(Code.InvalidArgument);
    throw new ConnectError(`no backend answered: ${summary}`, allInvalid ? Code.InvalidArgument : Code.Unavailable);
  }
  const predictions = Array.from({ length: rowCount }, (_, row) => {
    let best = { label: "", probability: -1 };
    for (const answer of answered) {
      const response = answer.response as BackendAnswer;
      const probability = targetProbability(response, row);
      if (probability > best.probability) best = { label: response.labels[0], probability };
    }
    return best;
  });
  return { predictions, answeredBackends: answered.map((a) => a.backend!), failedBackends: failed };
}

/** A one-vs-rest backend's P(target) for a row: the first of its probabilities. */
function targetProbability(response: BackendAnswer, row: number): number {
  return response instanceof PackedPredictResponse ? response.probabilities[row * response.labels.length] : response.predictions[row].probabilities[0];
}

function statusOf(outcome: Outcome<unknown>): MessageInitShape<typeof BackendStatusSchema> {
  const latency = durationOf(outcome.latencyMs);
  return outcome.ok ? { code: 0, message: "", latency } : { code: outcome.code as number, message: outcome.message, latency };
}

function durationOf(ms: number) {
  const seconds = Math.floor(ms / 1000);
  return { seconds: BigInt(seconds), nanos: Math.round((ms - seconds * 1000) * 1e6) };
}

function failureSummary(outcomes: readonly Outcome<unknown>[], backends: readonly ProxyBackend[]): string {
  return outcomes
    .map((o, i) => `${backends[i].backend.name}: ${o.ok ? "no sample input" : `${Code[o.code]} ${o.message}`}`)
    .join("; ");
}
