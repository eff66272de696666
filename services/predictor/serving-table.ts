import { Code, ConnectError } from "@connectrpc/connect";
import type { ModelMetadataFile } from "../model/metadata.js";
import type { Classifier, ImageModel, OnnxModel } from "../model/onnx-model.js";
import type { OutlierModel } from "../model/outlier-model.js";
import { ImageError, type ImageLimits } from "../model/preprocessing.js";
import { shapeText, type HostTensor, type Signature } from "../model/tensors.js";
import { InferenceBatcher } from "./inference-batcher.js";
import { InferenceStats } from "./inference-stats.js";
import { batchable, TensorBatcher } from "./tensor-batcher.js";
import { noRequestFacts, type RequestFacts, type TrafficRouter } from "./traffic-router.js";

/** Rows per onnxruntime run when concurrent requests are coalesced (one request may be 10,000). */
const maxBatchRows = 10_000;

/** Images per run of an image model unless its metadata says (serving.max_batch). */
const maxBatchImages = 32;

/** A model version that could not be loaded, and why. */
export interface LoadFailure {
  readonly name: string;
  readonly version: number;
  readonly reason: string;
}

/**
 * One loaded model version: its ONNX model (a classifier's rows behind the cross-request
 * batcher), and a count of the calls using it, so that a version taken out of service is
 * released only after its last call finished.
 */
export class LoadedVersion {
  /** Cumulative statistics of this version (ModelStatistics, and its Prometheus metrics). */
  readonly stats: InferenceStats;
  readonly #batcher: InferenceBatcher | undefined;
  /** Cross-request batching of tensors, for a graph batched along its first dimension. */
  readonly #tensorBatcher: TensorBatcher | undefined;
  /** Cross-request batching of the outlier model's runs, when the version is scored. */
  readonly #outlierBatcher: InferenceBatcher | undefined;
  #inFlight = 0;
  #retired: (() => void) | undefined;

  constructor(
    /** The name requests use. */
    readonly name: string,
    /** The version number requests use (the registry's, or the folder's). */
    readonly version: number,
    /** The registry's id of the model; empty when served from a folder. */
    readonly modelId: string,
    private readonly model: OnnxModel,
    /** What one image may be before it is decoded (image models). */
    private readonly imageLimits: ImageLimits,
    /** The version's outlier model (outlier.onnx), when it has one and scoring is on for it. */
    private readonly outlier?: OutlierModel,
  ) {
    this.stats = new InferenceStats(name, version);
    const classifier = model.classifier;
    this.#batcher =
      classifier &&
      new InferenceBatcher(
        (features, rows) => classifier.run(features, rows),
        classifier.featureCount,
        classifier.classCount,
        maxBatchRows,
        (rows, computeMs, waitsMs) => this.stats.recordRun(rows, computeMs, waitsMs),
      );
    this.#outlierBatcher =
      classifier && outlier && new InferenceBatcher((features, rows) => outlier.score(features, rows), classifier.featureCount, 1, maxBatchRows);
    const serving = model.metadata?.serving;
    this.#tensorBatcher =
      classifier === undefined && batchable(model.signature)
        ? new TensorBatcher((feeds, fetches) => model.run(feeds, fetches), {
            maxRows: serving?.max_batch ?? (model.image ? maxBatchImages : maxBatchRows),
            delayMs: serving?.batch_delay_ms ?? 0,
            observe: (rows, computeMs, waitsMs) => this.stats.recordRun(rows, computeMs, waitsMs),
          })
        : undefined;
  }

  /** metadata.json, when the version has one. */
  get metadata(): ModelMetadataFile | undefined {
    return this.model.metadata;
  }

  /** SHA-256 of model.onnx. */
  get sha256(): string {
    return this.model.sha256;
  }

  /** The graph's inputs and outputs. */
  get signature(): Signature {
    return this.model.signature;
  }

  /** The classifier side, when the metadata describes one. */
  get classifier(): Classifier | undefined {
    return this.model.classifier;
  }

  /** The classifier side, or FAILED_PRECONDITION for a tensor model, which answers ModelInfer only. */
  requireClassifier(): Classifier {
    if (this.model.classifier !== undefined) return this.model.classifier;
    const inputs = this.signature.inputs.map((i) => `${i.name} ${i.dtype}${shapeText(i.shape)}`).join(", ");
    throw new ConnectError(
      `model "${this.name}" v${this.version} is a tensor model (inputs: ${inputs}), not a classifier of feature rows: call ModelInfer (the Open Inference Protocol) instead`,
      Code.FailedPrecondition,
    );
  }

  /** The image side, when the metadata declares preprocessing. */
  get image(): ImageModel | undefined {
    return this.model.image;
  }

  /** The image side, or FAILED_PRECONDITION for a model that takes no images. */
  requireImageModel(): ImageModel {
    if (this.model.image !== undefined) return this.model.image;
    throw new ConnectError(`model "${this.name}" v${this.version} is not an image model (its metadata.json declares no preprocessing)`, Code.FailedPrecondition);
  }

  /**
   * Encoded images as the image model's input tensor, through its preprocessing (sharp, off
   * the event loop): INVALID_ARGUMENT for an image it cannot take, RESOURCE_EXHAUSTED for one
   * above the limits.
   */
  async preprocessImages(images: readonly Uint8Array[]): Promise<HostTensor> {
    const { preprocessor } = this.requireImageModel();
    try {
      return { dtype: "float32", dims: preprocessor.shapeOf(images.length), data: await preprocessor.run(images, this.imageLimits) };
    } catch (err) {
      if (err instanceof ImageError) throw new ConnectError(err.message, err.tooLarge ? Code.ResourceExhausted : Code.InvalidArgument);
      throw err;
    }
  }

  /** The same artifact (a version's files never change, but a source may hand a new one). */
  sameAs(other: { name: string; version: number; sha256: string }): boolean {
    return this.name === other.name && this.version === other.version && this.model.sha256 === other.sha256;
  }

  /**
   * Classifies `rowCount` rows packed row-major in `features`; probabilities come back packed
   * the same way ([rowCount, labels]). Concurrent calls share one onnxruntime run.
   */
  classify(features: Float32Array, rowCount: number): Promise<Float32Array> {
    this.requireClassifier();
    return this.#batcher!.classify(features, rowCount);
  }

  /** Whether each row is scored by an outlier model (PREDICTOR_OUTLIER_MODELS, and outlier.onnx). */
  get outlierScoring(): boolean {
    return this.#outlierBatcher !== undefined;
  }

  /**
   * Per row, the outlier model's score (above 0: an outlier), for rows packed as classify()
   * takes them; undefined when the version is not scored. Concurrent calls share one run.
   */
  scoreOutliers(features: Float32Array, rowCount: number): Promise<Float32Array> | undefined {
    return this.#outlierBatcher?.classify(features, rowCount);
  }

  /**
   * Runs the graph on tensors (each input by name), answering the `fetches` outputs; concurrent
   * calls share runs when the graph batches along its first dimension.
   */
  async runTensors(feeds: Readonly<Record<string, HostTensor>>, fetches: readonly string[]): Promise<Record<string, HostTensor>> {
    try {
      if (this.#tensorBatcher !== undefined) return await this.#tensorBatcher.submit(feeds, fetches);
      const started = performance.now();
      const outputs = await this.model.run(feeds, fetches);
      this.stats.recordRun(Object.values(feeds)[0]?.dims[0] ?? 1, performance.now() - started, [0]);
      return outputs;
    } catch (err) {
      // The inputs passed every check of the signature; onnxruntime's own checks go further
      // (a symbolic dimension two inputs share, a value an operator refuses).
      throw new ConnectError(`model "${this.name}" v${this.version} could not run on this input: ${(err as Error).message}`, Code.InvalidArgument);
    }
  }

  enter(): void {
    this.#inFlight++;
  }

  leave(): void {
    this.#inFlight--;
    if (this.#inFlight === 0) this.#retired?.();
  }

  /** Releases the session once no call uses it any more; resolves when it is released. */
  retire(): Promise<void> {
    const released = new Promise<void>((resolve) => {
      this.#retired = resolve;
      if (this.#inFlight === 0) resolve();
    });
    return released.then(async () => {
      await this.model.release();
      await this.outlier?.release();
    });
  }
}

/** What the Predictor serves of one model. */
export interface ServedModel {
  readonly name: string;
  readonly modelId: string;
  readonly versions: ReadonlyMap<number, LoadedVersion>;
  /** Alias -> the version it resolves to here. */
  readonly aliases: ReadonlyMap<string, number>;
  /** Aliases this Predictor cannot resolve, and why (the version they point at failed to load). */
  readonly unresolvedAliases: ReadonlyMap<string, string>;
  /** Aliases with a traffic policy: how each call naming them is routed. */
  readonly routers: ReadonlyMap<string, TrafficRouter>;
}

/** The version a call is answered by, and, when an alias's traffic policy chose it, how. */
export interface Routed {
  readonly loaded: LoadedVersion;
  /** The arm that served ("v3", "route:beta"); undefined when no policy applied. */
  readonly arm?: string;
  /** The alias's shadows that are loaded here (each call draws its own). */
  readonly shadows?: readonly { readonly loaded: LoadedVersion; readonly samplePercent: number }[];
}

/** Everything served at one moment; replaced as a whole, never changed in place. */
export interface Snapshot {
  readonly models: ReadonlyMap<string, ServedModel>;
  readonly failures: readonly LoadFailure[];
}

const emptySnapshot: Snapshot = { models: new Map(), failures: [] };

/**
 * The versions a Predictor answers with, swapped atomically: a request resolves its model in
 * the current snapshot and holds that version until it is answered (use), so a swap never
 * fails a call or answers one with a half-loaded model; a version the new snapshot dropped is
 * released after its last call.
 */
export class ServingTable {
  #current: Snapshot = emptySnapshot;

  get snapshot(): Snapshot {
    return this.#current;
  }

  /**
   * Runs `work` with the version a request names ("name" or "name@alias", version 0 for the
   * highest), which stays loaded until `work` settles. NOT_FOUND, FAILED_PRECONDITION or
   * INVALID_ARGUMENT (an alias and a version both) say what is wrong.
   */
  async use<T>(model: string, version: number, work: (loaded: LoadedVersion, routed: Routed) => Promise<T>, facts: RequestFacts = noRequestFacts): Promise<T> {
    const routed = this.route(model, version, facts);
    const { loaded } = routed;
    loaded.enter();
    try {
      return await work(loaded, routed);
    } finally {
      loaded.leave();
    }
  }

  /** The version a request names, as use() resolves it (for calls that run no inference: an alias's own version). */
  resolve(model: string, version: number): LoadedVersion {
    return this.route(model, version, undefined).loaded;
  }

  /**
   * The version a call names, through its alias's traffic policy when it has one and `facts`
   * are given. A policy's version that is not loaded here (it failed to load) is replaced by
   * the alias's own version.
   */
  route(model: string, version: number, facts: RequestFacts | undefined): Routed {
    const at = model.indexOf("@");
    const name = at === -1 ? model : model.slice(0, at);
    const alias = at === -1 ? undefined : model.slice(at + 1);
    if (alias !== undefined && version !== 0) {
      throw new ConnectError(`name either an alias ("${model}") or a version (${version}), not both`, Code.InvalidArgument);
    }
    const { models, failures } = this.#current;
    const served = models.get(name);
    if (served === undefined || served.versions.size === 0) {
      const failure = failures.find((f) => f.name === name && (version === 0 || f.version === version));
      if (failure !== undefined) throw new ConnectError(`model "${name}" failed to load: ${failure.reason}`, Code.FailedPrecondition);
      const known = [...models.keys()].sort().join(", ");
      throw new ConnectError(`model "${name}" not found; loaded models: ${known || "none"}`, Code.NotFound);
    }
    if (alias !== undefined) {
      const own = resolveAlias(served, alias);
      const router = served.routers.get(alias);
      if (router === undefined || facts === undefined) return { loaded: own };
      const choice = router.choose(facts);
      const shadows = router.shadows.flatMap((s) => {
        const shadow = served.versions.get(s.version);
        return shadow === undefined ? [] : [{ loaded: shadow, samplePercent: s.samplePercent }];
      });
      const chosen = served.versions.get(choice.version);
      return chosen === undefined ? { loaded: own, arm: `v${own.version}`, shadows } : { loaded: chosen, arm: choice.arm, shadows };
    }
    if (version === 0) return { loaded: served.versions.get(Math.max(...served.versions.keys()))! };
    const loaded = served.versions.get(version);
    if (loaded !== undefined) return { loaded };
    const failure = failures.find((f) => f.name === name && f.version === version);
    if (failure !== undefined) {
      throw new ConnectError(`model "${name}" version ${version} failed to load: ${failure.reason}`, Code.FailedPrecondition);
    }
    const known = [...served.versions.keys()].sort((a, b) => a - b).join(", ");
    throw new ConnectError(`model "${name}" has no version ${version}; loaded versions: ${known}`, Code.NotFound);
  }

  /** Serves `next` from now on; versions it no longer holds are released after their last call. */
  install(next: Snapshot): Promise<void> {
    const previous = this.#current;
    this.#current = next;
    const kept = new Set([...next.models.values()].flatMap((m) => [...m.versions.values()]));
    const dropped = [...previous.models.values()].flatMap((m) => [...m.versions.values()]).filter((v) => !kept.has(v));
    return Promise.all(dropped.map((v) => v.retire())).then(() => undefined);
  }

  /** Releases every version (shutdown, after the server drained). */
  close(): Promise<void> {
    return this.install(emptySnapshot);
  }
}

function resolveAlias(served: ServedModel, alias: string): LoadedVersion {
  if (alias === "latest") return served.versions.get(Math.max(...served.versions.keys()))!;
  const version = served.aliases.get(alias);
  if (version !== undefined) return served.versions.get(version)!;
  const reason = served.unresolvedAliases.get(alias);
  if (reason !== undefined) throw new ConnectError(`alias "${alias}" of model "${served.name}" ${reason}`, Code.FailedPrecondition);
  const known = [...served.aliases.keys()].sort().join(", ");
  throw new ConnectError(`model "${served.name}" has no alias "${alias}"; its aliases: ${known || "none"} (and "latest")`, Code.NotFound);
}
