import type { ModelMetadataFile } from "../model/metadata.js";
import { openOnnxModel, type SessionOptions } from "../model/onnx-model.js";
import { openOutlierModel, type OutlierModel } from "../model/outlier-model.js";
import type { ImageLimits } from "../model/preprocessing.js";
import type { Logger } from "../runtime/observability/logger.js";
import { modelLoads, modelUnloads } from "./metrics.js";
import type { TrafficPolicy } from "../../gen/mlmesh/registry/v1/traffic_pb.js";
import { TrafficRouter } from "./traffic-router.js";
import { LoadedVersion, type LoadFailure, type ServedModel, type ServingTable, type Snapshot } from "./serving-table.js";

/** A version a source wants served, and how to get its files. */
export interface WantedVersion {
  readonly version: number;
  /** SHA-256 of model.onnx: a loaded version with the same name, number and digest is kept. */
  readonly sha256: string;
  /**
   * Reads or downloads the artifact; the metadata (none for a plain tensor model) is parsed by
   * the source; outlier.onnx when the version has one (and `withOutlier`).
   */
  fetch(withOutlier: boolean): Promise<{ onnx: Uint8Array; metadata: ModelMetadataFile | undefined; outlier?: Uint8Array }>;
}

/** What a source (a folder, the registry) wants served of one model. */
export interface WantedModel {
  readonly name: string;
  /** The registry's id; empty for a folder. */
  readonly modelId: string;
  readonly versions: readonly WantedVersion[];
  /** Alias -> version number, as the source says. */
  readonly aliases: ReadonlyMap<string, number>;
  /** Alias -> its traffic policy, for aliases that have one (the versions it names are among `versions`). */
  readonly policies?: ReadonlyMap<string, TrafficPolicy>;
}

/** A model (or a version) the source itself could not describe: reported like a load failure. */
export type SourceFailure = LoadFailure;

/**
 * Turns what a source wants into what the ServingTable serves. Versions already loaded are
 * kept; new ones are fetched, loaded and warmed (openOnnxModel) before anything changes;
 * then the new snapshot is installed in one step and versions no longer wanted are released
 * after their last call. An alias whose version failed to load keeps answering with the
 * version it resolved to before, if any, and is reported; it never points at a half-loaded
 * model. One apply at a time.
 */
export class ModelLoader {
  #queue: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly table: ServingTable,
    private readonly options: {
      session: SessionOptions;
      imageLimits: ImageLimits;
      logger: Logger;
      /** PREDICTOR_OUTLIER_MODELS: whether a model's rows are scored by its outlier model. */
      scoreOutliers: (model: string) => boolean;
    },
  ) {}

  /** Applies the wanted state; resolves once it is served (old versions may still be draining). */
  apply(wanted: readonly WantedModel[], sourceFailures: readonly SourceFailure[] = []): Promise<Snapshot> {
    const run = this.#queue.then(() => this.#apply(wanted, sourceFailures));
    this.#queue = run.catch(() => undefined);
    return run;
  }

  async #apply(wanted: readonly WantedModel[], sourceFailures: readonly SourceFailure[]): Promise<Snapshot> {
    const current = this.table.snapshot;
    const failures: LoadFailure[] = [...sourceFailures];
    const models = new Map<string, ServedModel>();
    for (const model of wanted) {
      const before = current.models.get(model.name);
      const versions = new Map<number, LoadedVersion>();
      await Promise.all(
        model.versions.map(async (wantedVersion) => {
          const kept = before?.versions.get(wantedVersion.version);
          if (kept?.sameAs({ name: model.name, ...wantedVersion })) {
            versions.set(wantedVersion.version, kept);
            return;
          }
          try {
            const { onnx, metadata, outlier } = await wantedVersion.fetch(this.options.scoreOutliers(model.name));
            const loaded = await openOnnxModel(onnx, metadata, this.options.session);
            let outlierModel: OutlierModel | undefined;
            try {
              if (outlier !== undefined && loaded.classifier !== undefined) outlierModel = await openOutlierModel(outlier, loaded.classifier.featureCount);
            } catch (err) {
              await loaded.release();
              throw err;
            }
            versions.set(wantedVersion.version, new LoadedVersion(model.name, wantedVersion.version, model.modelId, loaded, this.options.imageLimits, outlierModel));
            modelLoads.labels(model.name, "loaded").inc();
            this.options.logger.info({ model: model.name, version: wantedVersion.version }, "model version loaded");
          } catch (err) {
            const reason = (err as Error).message;
            failures.push({ name: model.name, version: wantedVersion.version, reason });
            modelLoads.labels(model.name, "failed").inc();
            this.options.logger.error({ model: model.name, version: wantedVersion.version, reason }, "model version failed to load");
          }
        }),
      );
      const aliases = new Map<string, number>();
      const unresolvedAliases = new Map<string, string>();
      for (const [alias, version] of model.aliases) {
        if (versions.has(version)) {
          aliases.set(alias, version);
          continue;
        }
        const reason = failures.find((f) => f.name === model.name && f.version === version)?.reason ?? "is not available here";
        const previous = before?.aliases.get(alias);
        if (previous !== undefined && before!.versions.has(previous)) {
          // Keep answering with the version it pointed at until the new one can be loaded.
          versions.set(previous, before!.versions.get(previous)!);
          aliases.set(alias, previous);
        } else {
          unresolvedAliases.set(alias, `points at version ${version}, which failed to load: ${reason}`);
        }
      }
      const routers = new Map<string, TrafficRouter>();
      for (const [alias, policy] of model.policies ?? []) {
        const version = aliases.get(alias);
        if (version === undefined) continue;
        const router = new TrafficRouter(policy, version);
        const missing = [...router.versions].filter((v) => !versions.has(v));
        if (missing.length > 0) {
          this.options.logger.warn({ model: model.name, alias, versions: missing }, "versions of a traffic policy are not loaded: their calls go to the alias's version, their shadows are skipped");
        }
        routers.set(alias, router);
      }
      models.set(model.name, { name: model.name, modelId: model.modelId, versions, aliases, unresolvedAliases, routers });
    }
    failures.sort((a, b) => a.name.localeCompare(b.name) || a.version - b.version);
    const next: Snapshot = { models, failures };
    const released = this.table.install(next);
    released.catch((err: unknown) => this.options.logger.error({ err }, "releasing a model version failed"));
    const unloaded = [...current.models.values()].flatMap((m) => [...m.versions.values()].filter((v) => models.get(m.name)?.versions.get(v.version) !== v));
    if (unloaded.length > 0) {
      void released.then(() => {
        for (const v of unloaded) modelUnloads.labels(v.name).inc();
        this.options.logger.info({ versions: unloaded.map((v) => `${v.name}@${v.version}`) }, "model versions unloaded after their last call");
      });
    }
    return next;
  }
}
