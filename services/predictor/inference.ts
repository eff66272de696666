import type { HostTensor } from "../model/tensors.js";
import type { CallContext } from "../runtime/serve/pipeline.js";
import type { CacheCodec, PredictionCache } from "./prediction-cache.js";
import type { LoadedVersion, Routed, ServingTable } from "./serving-table.js";
import { trafficCalls } from "./metrics.js";
import type { RequestFacts } from "./traffic-router.js";

/** The response header naming the arm of an alias's traffic policy that answered. */
export const armHeader = "x-mlmesh-arm";

/*
 * The one path of every inference request, whatever carried it (native Predict and
 * PredictSample, the Open Inference Protocol's ModelInfer over gRPC and REST, and whatever comes
 * next): resolve the model a request names (name, name@alias, a version) in the serving table
 * -> check the input against that version -> run it (cross-request batching) -> answer -> tell
 * the observers. A protocol only says how its input is read and its answer written
 * (an InferenceKind); statistics, metrics and observers are the same for all.
 */

/** A classifier's rows to run, packed row-major: [rowCount, the version's feature count]. */
export interface ModelInput {
  readonly features: Float32Array;
  readonly rowCount: number;
}

/** Tensors to run through any graph: every input by name, and the outputs to fetch. */
export interface TensorInput {
  readonly feeds: Readonly<Record<string, HostTensor>>;
  readonly fetches: readonly string[];
}

/** What a model computes from what was prepared: probabilities from rows, outputs from tensors. */
export type Computed<P> = P extends TensorInput ? Record<string, HostTensor> : Float32Array;

/** How one protocol reads its input and writes its answer (Prepared: what prepare hands to answer). */
export interface InferenceKind<Input, Answer, Prepared extends ModelInput | TensorInput = ModelInput> {
  /** The protocol's name in observers' events ("predict", "oip"). */
  readonly name: string;
  /**
   * Checks the input against the version that will answer and packs what the model runs on;
   * throws INVALID_ARGUMENT naming what is wrong. Runs before any inference; asynchronous only
   * where the input needs work off the event loop first (decoding images).
   */
  prepare(loaded: LoadedVersion, input: Input): Prepared | Promise<Prepared>;
  /**
   * The answer, from the model's probabilities ([rowCount, labels], packed) or output tensors,
   * and for a classifier's rows the outlier scores (one per row) when the version is scored.
   */
  answer(loaded: LoadedVersion, input: Input, prepared: Prepared, computed: Computed<Prepared>, outlierScores: Float32Array | undefined): Answer;
  /** The encoded images of the input, for the prediction log (image calls). */
  imagesOf?(input: Input): readonly Uint8Array[];
  /** A request parameter by name, as text (traffic policies' keys); kinds without parameters leave it out. */
  parameter?(input: Input, name: string): string | undefined;
  /** The model's position in a call that asks several (PredictModels): its records are told apart by it. */
  part?(input: Input): number | undefined;
  /** How answers of this kind are cached, for the models the prediction cache is on for; none: never. */
  readonly cache?: CacheCodec<Input, Answer>;
}

/**
 * What observers learn of each inference, once its answer is computed (and before it is sent):
 * the hook of the prediction log and of shadow comparisons. Observers must return at once
 * (queue their work); one that throws is ignored, never failing the call.
 */
export interface InferenceEvent {
  readonly kind: string;
  /** The version that answered (its name, number, labels). */
  readonly loaded: LoadedVersion;
  readonly model: string;
  readonly version: number;
  /** The model as the request named it ("iris_svc@production"): its alias, when it named one. */
  readonly requested: string;
  /** The model's position in a call that asked several (PredictModels); unset for one model. */
  readonly part?: number;
  /** The call (its request id, trace, caller); unset for calls made inside the Predictor. */
  readonly call?: CallContext;
  /** A classifier's rows the model ran on (unset for tensors, or when the request failed before they were read). */
  readonly input?: ModelInput;
  /** A classifier's [rowCount, labels] probabilities (unset for tensors, or when the request failed). */
  readonly probabilities?: Float32Array;
  /** Per row, the outlier model's scores, when the version is scored. */
  readonly outlierScores?: Float32Array;
  /** A tensor call's inputs and outputs by name (unset for a classifier's rows). */
  readonly feeds?: Readonly<Record<string, HostTensor>>;
  readonly outputs?: Readonly<Record<string, HostTensor>>;
  /** The encoded images of an image call. */
  readonly images?: readonly Uint8Array[];
  /** The arm of the alias's traffic policy that answered (unset: no policy applied). */
  readonly arm?: string;
  /** The alias's shadows loaded here, for the shadow runner to draw from. */
  readonly shadows?: Routed["shadows"];
  /** Rows (batch entries) the call ran. */
  readonly rows: number;
  /** Milliseconds from resolving the version to the answer. */
  readonly ms: number;
  /** Why the request failed; unset when it was answered. */
  readonly error?: unknown;
}

export type InferenceObserver = (event: InferenceEvent) => void;

/** The Predictor's inference path over its serving table. */
export class Inference {
  readonly #observers: InferenceObserver[] = [];

  constructor(
    readonly table: ServingTable,
    /** The prediction cache (PREDICTOR_CACHE_MODELS); undefined: off. */
    private readonly cache?: PredictionCache,
  ) {}

  /** Adds an observer of every inference; returns the function that removes it. */
  observe(observer: InferenceObserver): () => void {
    this.#observers.push(observer);
    return () => {
      const at = this.#observers.indexOf(observer);
      if (at !== -1) this.#observers.splice(at, 1);
    };
  }

  /**
   * Answers `input` with the version `model` and `version` name (ServingTable.use: NOT_FOUND,
   * FAILED_PRECONDITION or INVALID_ARGUMENT when they name none), which stays loaded until the
   * answer is ready.
   */
  run<Input, Answer, Prepared extends ModelInput | TensorInput>(
    model: string,
    version: number,
    kind: InferenceKind<Input, Answer, Prepared>,
    input: Input,
    /** The call asking (for observers: the prediction log). */
    call?: CallContext,
  ): Promise<Answer> {
    // Only a call naming an alias can meet a traffic policy: the others skip building facts.
    const facts: RequestFacts | undefined = model.includes("@")
      ? { header: (name) => call?.requestHeader.get(name) ?? undefined, parameter: (name) => kind.parameter?.(input, name) }
      : undefined;
    return this.table.use(
      model,
      version,
      (loaded, routed) => {
        if (routed.arm !== undefined) {
          call?.responseHeader.set(armHeader, routed.arm);
          trafficCalls.labels(loaded.name, model.slice(model.indexOf("@") + 1), routed.arm).inc();
        }
        const { cache } = this;
        if (cache !== undefined && kind.cache !== undefined && cache.enabledFor(loaded.name)) {
          return cache.through(loaded, kind.name, kind.cache, input, () => this.#runOn(loaded, kind, input, model, call, routed));
        }
        return this.#runOn(loaded, kind, input, model, call, routed);
      },
      facts,
    );
  }

  async #runOn<Input, Answer, Prepared extends ModelInput | TensorInput>(
    loaded: LoadedVersion,
    kind: InferenceKind<Input, Answer, Prepared>,
    input: Input,
    requested: string,
    call: CallContext | undefined,
    routed: Routed,
  ): Promise<Answer> {
    const started = performance.now();
    let prepared: Prepared | undefined;
    let preparedAt: number | undefined;
    try {
      const preparing = kind.prepare(loaded, input);
      prepared = preparing instanceof Promise ? await preparing : preparing;
      preparedAt = performance.now();
      const rows = rowsOf(prepared);
      let computed: Computed<Prepared>;
      let outlierScores: Float32Array | undefined;
      if ("feeds" in prepared) computed = (await loaded.runTensors(prepared.feeds, prepared.fetches)) as Computed<Prepared>;
      // No rows left (every row skipped as invalid): nothing to run.
      else if (prepared.rowCount === 0) computed = new Float32Array(0) as Computed<Prepared>;
      else {
        // The outlier model runs beside the classifier (each batched across requests).
        const scoring = loaded.scoreOutliers(prepared.features, prepared.rowCount);
        computed = (await loaded.classify(prepared.features, prepared.rowCount)) as Computed<Prepared>;
        if (scoring !== undefined) outlierScores = await scoring;
      }
      const inferredAt = performance.now();
      const answer = kind.answer(loaded, input, prepared, computed, outlierScores);
      const done = performance.now();
      loaded.stats.recordRequest({ ok: true, rows, totalMs: done - started, inputMs: preparedAt - started, outputMs: done - inferredAt });
      if (this.#observers.length > 0) this.#notify(loaded, kind, input, requested, call, routed, prepared, computed, outlierScores, rows, done - started, undefined);
      return answer;
    } catch (err) {
      const ms = performance.now() - started;
      const rows = prepared === undefined ? 0 : rowsOf(prepared);
      loaded.stats.recordRequest({ ok: false, rows, totalMs: ms, inputMs: (preparedAt ?? started + ms) - started });
      if (this.#observers.length > 0) this.#notify(loaded, kind, input, requested, call, routed, prepared, undefined, undefined, rows, ms, err);
      throw err;
    }
  }

  /**
   * Tells the observers of one inference. The event is built here alone, every field always
   * set, so that every event has one shape: the observers' reads of it stay monomorphic.
   */
  #notify<Input, Answer, Prepared extends ModelInput | TensorInput>(
    loaded: LoadedVersion,
    kind: InferenceKind<Input, Answer, Prepared>,
    input: Input,
    requested: string,
    call: CallContext | undefined,
    routed: Routed,
    prepared: Prepared | undefined,
    computed: Computed<Prepared> | undefined,
    outlierScores: Float32Array | undefined,
    rows: number,
    ms: number,
    error: unknown,
  ): void {
    const tensors = prepared !== undefined && "feeds" in prepared ? (prepared as TensorInput) : undefined;
    const classified = prepared !== undefined && !("feeds" in prepared) ? (prepared as ModelInput) : undefined;
    const event: InferenceEvent = {
      kind: kind.name,
      loaded,
      model: loaded.name,
      version: loaded.version,
      requested,
      part: kind.part?.(input),
      call,
      input: classified,
      probabilities: classified && (computed as Float32Array | undefined),
      outlierScores,
      feeds: tensors?.feeds,
      outputs: tensors && (computed as Record<string, HostTensor> | undefined),
      images: kind.imagesOf?.(input),
      arm: routed.arm,
      // A failed call has no answer to compare a shadow's with.
      shadows: error === undefined ? routed.shadows : undefined,
      rows,
      ms,
      error,
    };
    for (const observer of this.#observers) {
      try {
        observer(event);
      } catch {
        // An observer's failure is its own: the call it watched is answered regardless.
      }
    }
  }
}

/** The rows (batch entries) a request ran: a classifier's rows, or the first input's first dimension. */
function rowsOf(prepared: ModelInput | TensorInput): number {
  if (!("feeds" in prepared)) return prepared.rowCount;
  return Object.values(prepared.feeds)[0]?.dims[0] ?? 1;
}
