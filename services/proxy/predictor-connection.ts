import { fromBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { PredictorService, PredictModelsResponseSchema, PredictResponseSchema, type PredictResponse } from "../../gen/mlmesh/predictor/v1/predictor_pb.js";
import { GrpcClient, type CallOptions } from "../runtime/client/grpc-client.js";
import { codeName } from "../runtime/serve/errors.js";
import type { MeshCredentials } from "../runtime/client/mesh-credentials.js";
import { encodePredictModelsRequest, encodePredictRequest, PackedPredictResponse, type PackedRows } from "../model/wire/predict-wire.js";
import { Coalescer, type SendOptions } from "./coalescer.js";
import type { Backend } from "./config.js";
import { coalescedRequests } from "./metrics.js";

/** The most rows in one backend call (PredictModelsRequest takes up to 10,000). */
const maxRowsPerCall = 10_000;

/** One model's answer to a call: its response, or the error it alone failed with. */
type ModelAnswer = PackedPredictResponse | ConnectError;

/** A request's ask of one model, waiting for the other asks of the same request. */
interface Ask {
  readonly model: number;
  readonly rows: PackedRows;
  readonly options: SendOptions;
  readonly resolve: (answer: PackedPredictResponse) => void;
  readonly reject: (error: ConnectError) => void;
}

/**
 * The Proxy's connection to one backend Predictor (one address), shared by the backends it
 * serves. A request's asks of those models — made in one go by the Proxy's fan-out — become
 * one PredictModels call: one round trip per Predictor, not one per model. Under load the
 * coalescer (coalescer.ts) merges further requests asking the same models into shared calls.
 *
 * A Predictor without PredictModels (older than the Proxy) answers UNIMPLEMENTED: the connection
 * then asks it one Predict per model, as the Proxy did before.
 */
export class PredictorConnection {
  readonly client: GrpcClient;
  /** The models asked of this Predictor, by position (an ask names its model's position). */
  private readonly models: Backend[] = [];
  private readonly calls: Coalescer<ModelAnswer[]>;
  private asks: Ask[] = [];
  private predictModels = true;

  constructor(
    readonly address: string,
    credentials: MeshCredentials,
    backendConcurrency: number,
  ) {
    this.client = new GrpcClient(address, credentials);
    this.calls = new Coalescer<ModelAnswer[]>(
      (parts, options, key) => this.send(parts, options, key),
      (answers, firstRow, rowCount) => answers.map((answer) => (answer instanceof ConnectError ? answer : answer.slice(firstRow, rowCount))),
      backendConcurrency,
      maxRowsPerCall,
    );
  }

  /** Adds a backend's model; returns its position, which predict() takes. */
  add(backend: Backend): number {
    return this.models.push(backend) - 1;
  }

  /**
   * Asks model `model` (a position from add) about `rows`. Asks of the same rows made in the
   * same turn of the event loop (one request's fan-out) go as one call.
   */
  predict(model: number, rows: PackedRows, options: SendOptions): Promise<PackedPredictResponse> {
    return new Promise((resolve, reject) => {
      if (this.asks.push({ model, rows, options, resolve, reject }) === 1) queueMicrotask(() => this.flush());
    });
  }

  close(): void {
    this.client.close();
  }

  /** Sends this turn's asks: one call per request (its rows), asking every model it wants. */
  private flush(): void {
    let asks = this.asks;
    this.asks = [];
    while (asks.length > 0) {
      const { rows, options } = asks[0];
      const same = asks.filter((a) => a.rows === rows && a.options.signal === options.signal);
      asks = asks.filter((a) => !same.includes(a));
      this.calls.call(rows, options, same.map((a) => a.model).join(",")).then(
        (answers) =>
          same.forEach((ask, i) => {
            const answer = answers[i];
            if (answer instanceof ConnectError) ask.reject(answer);
            else ask.resolve(answer);
          }),
        (error: unknown) => same.forEach((ask) => ask.reject(ConnectError.from(error))),
      );
    }
  }

  /** One call for the rows of `parts`, asking the models `key` lists; an answer per model, in order. */
  private async send(parts: readonly PackedRows[], options: SendOptions, key: string): Promise<ModelAnswer[]> {
    const models = key.split(",").map((i) => this.models[Number(i)]);
    for (const model of models) coalescedRequests.labels(model.name).observe(parts.length);
    const rowCount = parts.reduce((sum, part) => sum + part.rowCount, 0);
    if (this.predictModels) {
      try {
        return await this.traced(`${this.address} PredictModels`, options, (call) => this.sendPredictModels(models, parts, rowCount, call));
      } catch (err) {
        if (ConnectError.from(err).code !== Code.Unimplemented) throw err;
        this.predictModels = false;
      }
    }
    return Promise.all(
      models.map((m) =>
        this.traced(`${this.address} Predict ${m.name}`, options, (call) => this.sendPredict(m, parts, rowCount, call)).catch((err: unknown) => ConnectError.from(err)),
      ),
    );
  }

  /** Runs a call as a CLIENT span, child of the asking request's span, carrying its traceparent. */
  private async traced<T>(name: string, options: SendOptions, call: (options: CallOptions) => Promise<T>): Promise<T> {
    const span = options.trace?.child(name);
    try {
      const value = await call({ deadlineMs: options.deadlineMs, signal: options.signal, traceparent: span?.traceparent, parentRequestId: options.parentRequestId });
      span?.end();
      return value;
    } catch (err) {
      const error = ConnectError.from(err);
      span?.end({ code: codeName(error.code), message: error.rawMessage });
      throw err;
    }
  }

  private async sendPredictModels(models: readonly Backend[], parts: readonly PackedRows[], rowCount: number, options: CallOptions): Promise<ModelAnswer[]> {
    const bytes = await this.client.unaryBytes(PredictorService.method.predictModels, encodePredictModelsRequest(models, parts), options);
    const { predictions } = this.decode(() => fromBinary(PredictModelsResponseSchema, bytes));
    if (predictions.length !== models.length) throw this.malformed(`${predictions.length} answers for ${models.length} models`);
    return predictions.map(({ status, response }) => {
      const code = (status?.code ?? Code.Unknown) as number as Code;
      if (code !== (0 as Code)) return new ConnectError(status?.message ?? "no status", code);
      return this.packed(response, rowCount);
    });
  }

  private async sendPredict(model: Backend, parts: readonly PackedRows[], rowCount: number, options: CallOptions): Promise<PackedPredictResponse> {
    const bytes = await this.client.unaryBytes(PredictorService.method.predict, encodePredictRequest(model.model, model.version, parts), options);
    return this.packed(
      this.decode(() => fromBinary(PredictResponseSchema, bytes)),
      rowCount,
    );
  }

  /** A model's response as packed probabilities, checked to answer every row. */
  private packed(response: PredictResponse | undefined, rowCount: number): PackedPredictResponse {
    if (response === undefined) throw this.malformed("an OK model without a response");
    const classCount = response.labels.length;
    let probabilities: Float32Array;
    if (response.packedProbabilities.length > 0 || response.predictions.length === 0) {
      probabilities = Float32Array.from(response.packedProbabilities);
    } else {
      probabilities = new Float32Array(response.predictions.length * classCount);
      response.predictions.forEach((p, i) => probabilities.set(p.probabilities.slice(0, classCount), i * classCount));
    }
    if (classCount === 0 || probabilities.length !== rowCount * classCount) {
      throw this.malformed(`${response.model} answered ${probabilities.length} probabilities for ${rowCount} rows of ${classCount} labels`);
    }
    const outliers = response.packedOutlierScores.length > 0 ? Float32Array.from(response.packedOutlierScores) : undefined;
    return new PackedPredictResponse(response.model, response.version, response.labels, probabilities, rowCount, undefined, outliers);
  }

  private decode<T>(read: () => T): T {
    try {
      return read();
    } catch (err) {
      throw this.malformed(`undecodable response: ${(err as Error).message}`);
    }
  }

  private malformed(what: string): ConnectError {
    return new ConnectError(`${this.address}: ${what}`, Code.Internal);
  }
}
