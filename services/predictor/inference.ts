import type { LoadedVersion, ServingTable } from "./serving-table.js";

/*
 * The one path of every inference request, whatever carried it (native Predict and
 * PredictSample, the Open Inference Protocol's ModelInfer over gRPC and REST, and whatever comes
 * next): resolve the model a request names (name, name@alias, a version) in the serving table
 * -> check the input against that version -> run it (cross-request batching) -> answer -> tell
 * the observers. A protocol only says how its input is read and its answer written
 * (an InferenceKind); statistics, metrics and observers are the same for all.
 */

/** The rows to run, packed row-major: [rowCount, the version's feature count]. */
export interface ModelInput {
  readonly features: Float32Array;
  readonly rowCount: number;
}

/** How one protocol reads its input and writes its answer (Prepared: what prepare hands to answer). */
export interface InferenceKind<Input, Answer, Prepared extends ModelInput = ModelInput> {
  /** The protocol's name in observers' events ("predict", "oip"). */
  readonly name: string;
  /**
   * Checks the input against the version that will answer and packs what the model runs on;
   * throws INVALID_ARGUMENT naming what is wrong. Runs before any inference.
   */
  prepare(loaded: LoadedVersion, input: Input): Prepared;
  /** The answer, from the model's probabilities ([rowCount, labels], packed). */
  answer(loaded: LoadedVersion, input: Input, prepared: Prepared, probabilities: Float32Array): Answer;
}

/**
 * What observers learn of each inference, once its answer is computed (and before it is sent):
 * the hook of the prediction log and of shadow comparisons. Observers must return at once
 * (queue their work); one that throws is ignored, never failing the call.
 */
export interface InferenceEvent {
  readonly kind: string;
  readonly model: string;
  readonly version: number;
  /** The rows the model ran on (unset when the request failed before they were read). */
  readonly input?: ModelInput;
  /** [rowCount, labels] probabilities (unset when the request failed). */
  readonly probabilities?: Float32Array;
  /** Milliseconds from resolving the version to the answer. */
  readonly ms: number;
  /** Why the request failed; unset when it was answered. */
  readonly error?: unknown;
}

export type InferenceObserver = (event: InferenceEvent) => void;

/** The Predictor's inference path over its serving table. */
export class Inference {
  readonly #observers: InferenceObserver[] = [];

  constructor(readonly table: ServingTable) {}

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
  run<Input, Answer, Prepared extends ModelInput>(model: string, version: number, kind: InferenceKind<Input, Answer, Prepared>, input: Input): Promise<Answer> {
    return this.table.use(model, version, (loaded) => this.#runOn(loaded, kind, input));
  }

  async #runOn<Input, Answer, Prepared extends ModelInput>(loaded: LoadedVersion, kind: InferenceKind<Input, Answer, Prepared>, input: Input): Promise<Answer> {
    const started = performance.now();
    let prepared: Prepared | undefined;
    let preparedAt: number | undefined;
    try {
      prepared = kind.prepare(loaded, input);
      preparedAt = performance.now();
      // No rows left (every row skipped as invalid): nothing to run.
      const probabilities = prepared.rowCount === 0 ? new Float32Array(0) : await loaded.classify(prepared.features, prepared.rowCount);
      const inferredAt = performance.now();
      const answer = kind.answer(loaded, input, prepared, probabilities);
      const done = performance.now();
      loaded.stats.recordRequest({ ok: true, rows: prepared.rowCount, totalMs: done - started, inputMs: preparedAt - started, outputMs: done - inferredAt });
      if (this.#observers.length > 0) this.#notify({ kind: kind.name, model: loaded.name, version: loaded.version, input: prepared, probabilities, ms: done - started });
      return answer;
    } catch (err) {
      const ms = performance.now() - started;
      loaded.stats.recordRequest({ ok: false, rows: prepared?.rowCount ?? 0, totalMs: ms, inputMs: (preparedAt ?? started + ms) - started });
      if (this.#observers.length > 0) this.#notify({ kind: kind.name, model: loaded.name, version: loaded.version, input: prepared, ms, error: err });
      throw err;
    }
  }

  #notify(event: InferenceEvent): void {
    for (const observer of this.#observers) {
      try {
        observer(event);
      } catch {
        // An observer's failure is its own: the call it watched is answered regardless.
      }
    }
  }
}
