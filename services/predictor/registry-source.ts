import { setTimeout as sleep } from "node:timers/promises";
import { createClient, type Client } from "@connectrpc/connect";
import {
  ModelEventKind,
  ModelRegistryService,
  type Model,
  type ModelEvent,
  type ModelVersion,
  type WatchModelEventsResponse,
} from "../../gen/mlmesh/registry/v1/registry_pb.js";
import type { Logger } from "../runtime/observability/logger.js";
import type { TraceSpan, Tracing } from "../runtime/observability/tracing.js";
import { meshTransport } from "../runtime/client/mesh-transport.js";
import type { MeshCredentials } from "../runtime/client/mesh-credentials.js";
import { parseModelMetadata, type ModelMetadataFile } from "../model/metadata.js";
import { sha256Hex } from "../model/onnx-model.js";
import { selects, type ModelSelection } from "./config.js";
import type { ModelLoader, SourceFailure, WantedModel, WantedVersion } from "./model-loader.js";
import type { Snapshot } from "./serving-table.js";

/** How often the Predictor tells the registry what it serves (the registry forgets after 30 s). */
const reportEveryMs = 10_000;
/** A watch stream silent this long (3 missed heartbeats) is taken for dead and reopened. */
const silentStreamMs = 30_000;
/** Per registry call (the watch stream excepted). */
const callTimeoutMs = 10_000;

export interface RegistrySourceOptions {
  readonly address: string;
  readonly models: ModelSelection;
  /** Besides the versions aliases point at, the newest N versions of each model. */
  readonly latestVersions: number;
  readonly resyncMs: number;
  /** How this Predictor names itself in ReportServing. */
  readonly reportAs: () => string;
  /** Called after each change of what is served (health). */
  readonly onApplied: (snapshot: Snapshot) => void;
  /** Each comparison with the registry is a trace; its registry calls carry it. */
  readonly tracing: Tracing;
  /** TLS and this Predictor's token for the registry (it calls ReportServing: a writer). */
  readonly credentials?: MeshCredentials;
}

/**
 * Serves what the registry says. It watches the registry's event stream (WatchModelEvents)
 * and, for each change to a served model, reads the model's versions and aliases again and
 * hands them to the loader, which loads, warms and swaps with no failed call. A dropped
 * stream is reopened after the last event seen (nothing is missed) with a full comparison;
 * a full comparison also runs every resyncMs. While the registry is down, what is loaded
 * keeps serving.
 */
export class RegistrySource {
  readonly #client: Client<typeof ModelRegistryService>;
  /** What is wanted, by model id. */
  readonly #wanted = new Map<string, { model: Model; projectName: string; wanted: WantedModel; failures: SourceFailure[] }>();
  #cursor = 0n;
  #synced = false;
  #served: Snapshot | undefined;
  /** The span of the comparison under way: registry calls name it as their parent. */
  #span: TraceSpan | undefined;
  #work: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly loader: ModelLoader,
    private readonly options: RegistrySourceOptions,
    private readonly logger: Logger,
  ) {
    this.#client = createClient(ModelRegistryService, meshTransport(options.address, { credentials: options.credentials }));
  }

  /** True once a first full comparison with the registry has been applied. */
  get synced(): boolean {
    return this.#synced;
  }

  /** Runs until `stop` aborts: the watch loop, the periodic resync and the serving reports. */
  start(stop: AbortSignal): void {
    void this.#watchLoop(stop);
    void this.#every(this.options.resyncMs, stop, () => this.#serialized(() => this.#fullSync()));
    void this.#every(reportEveryMs, stop, () => this.#report());
  }

  async #watchLoop(stop: AbortSignal): Promise<void> {
    let backoffMs = 250;
    while (!stop.aborted) {
      const stream = new AbortController();
      const abortStream = () => stream.abort();
      stop.addEventListener("abort", abortStream, { once: true });
      let watchdog = setTimeout(abortStream, silentStreamMs);
      try {
        const responses = this.#client.watchModelEvents({ afterSequence: this.#cursor }, { signal: stream.signal });
        let first = true;
        for await (const { event } of responses as AsyncIterable<WatchModelEventsResponse>) {
          clearTimeout(watchdog);
          watchdog = setTimeout(abortStream, silentStreamMs);
          if (event === undefined) continue;
          if (first) {
            first = false;
            if (this.#cursor === 0n) this.#cursor = event.sequence;
            await this.#serialized(() => this.#fullSync());
            if (backoffMs > 250) this.logger.info({ registry: this.options.address }, "registry watch resumed");
            backoffMs = 250;
          }
          if (event.kind === ModelEventKind.HEARTBEAT) continue;
          this.#cursor = event.sequence;
          if (this.#concerns(event)) await this.#serialized(() => this.#syncModel(event.modelId, event.projectName));
        }
      } catch (err) {
        if (stop.aborted) return;
        this.logger.warn({ registry: this.options.address, reason: (err as Error).message, retryMs: backoffMs }, "registry watch lost; serving what is loaded");
      } finally {
        clearTimeout(watchdog);
        stop.removeEventListener("abort", abortStream);
      }
      await sleep(backoffMs, undefined, { signal: stop }).catch(() => undefined);
      backoffMs = Math.min(backoffMs * 2, 5000);
    }
  }

  async #every(ms: number, stop: AbortSignal, task: () => Promise<unknown>): Promise<void> {
    while (!stop.aborted) {
      await sleep(ms, undefined, { signal: stop }).catch(() => undefined);
      if (stop.aborted) return;
      await task().catch((err: Error) => this.logger.warn({ reason: err.message }, "registry unreachable; serving what is loaded"));
    }
  }

  /** Registry reads and applies, one at a time (events, resyncs), each in a span of its own. */
  #serialized<T>(task: () => Promise<T>): Promise<T> {
    const run = this.#work.then(async () => {
      this.#span = this.options.tracing.start("registry sync", undefined, "internal");
      try {
        const result = await task();
        this.#span.end();
        return result;
      } catch (err) {
        this.#span.end({ code: "Unavailable", message: (err as Error).message });
        throw err;
      }
    });
    this.#work = run.catch(() => undefined);
    return run;
  }

  #concerns(event: ModelEvent): boolean {
    return this.#wanted.has(event.modelId) || selects(this.options.models, event.projectName, event.modelName);
  }

  /** Every selected model of the registry, compared with what is served. */
  async #fullSync(): Promise<void> {
    const models: { model: Model; projectName: string }[] = [];
    for (const project of await this.#projects()) {
      for await (const model of this.#pages((pageToken) =>
        this.#client.listModels({ project: { case: "projectId", value: project.id }, pageToken, pageSize: 1000 }, this.#call()).then((r) => ({ items: r.models, next: r.nextPageToken })),
      )) {
        if (selects(this.options.models, project.name, model.name)) models.push({ model, projectName: project.name });
      }
    }
    const seen = new Set(models.map((m) => m.model.id));
    for (const id of this.#wanted.keys()) if (!seen.has(id)) this.#wanted.delete(id);
    for (const { model, projectName } of models) this.#wanted.set(model.id, { model, projectName, ...(await this.#wantedOf(model)) });
    await this.#apply();
    this.#synced = true;
  }

  /** One model, after an event about it. */
  async #syncModel(modelId: string, projectName: string): Promise<void> {
    const model = (await this.#client.getModel({ modelId }, this.#call())).model!;
    this.#wanted.set(model.id, { model, projectName, ...(await this.#wantedOf(model)) });
    await this.#apply();
  }

  async #projects(): Promise<{ id: string; name: string }[]> {
    if (!this.options.models.everything) {
      return Promise.all([...this.options.models.projects.keys()].map(async (name) => (await this.#client.getProjectByName({ name }, this.#call())).project!));
    }
    const projects: { id: string; name: string }[] = [];
    for await (const project of this.#pages((pageToken) =>
      this.#client.listProjects({ pageToken, pageSize: 1000 }, this.#call()).then((r) => ({ items: r.projects, next: r.nextPageToken })),
    )) {
      projects.push(project);
    }
    return projects;
  }

  /** The versions aliases point at, plus the newest latestVersions, of one model. */
  async #wantedOf(model: Model): Promise<{ wanted: WantedModel; failures: SourceFailure[] }> {
    const all: ModelVersion[] = [];
    for await (const version of this.#pages((pageToken) =>
      this.#client.listModelVersions({ modelId: model.id, pageToken, pageSize: 1000 }, this.#call()).then((r) => ({ items: r.modelVersions, next: r.nextPageToken })),
    )) {
      all.push(version);
    }
    const failures: SourceFailure[] = [];
    const withArtifact = all.filter((v) => v.files.some((f) => f.name === "model.onnx"));
    const aliases = new Map<string, number>();
    const newest = this.options.latestVersions === 0 ? [] : withArtifact.slice(-this.options.latestVersions);
    const chosen = new Set(newest.map((v) => v.version));
    for (const version of all) {
      for (const alias of version.aliases) {
        aliases.set(alias, version.version);
        if (withArtifact.includes(version)) chosen.add(version.version);
        else failures.push({ name: model.name, version: version.version, reason: `alias "${alias}" points at a version registered without an artifact (no upload)` });
      }
    }
    // The versions traffic policies send calls or copies to are served too.
    const policies = new Map(model.trafficPolicies.flatMap((p) => (p.policy === undefined ? [] : [[p.alias, p.policy] as const])));
    for (const policy of policies.values()) {
      for (const v of [...policy.arms.map((a) => a.version), ...policy.routes.map((r) => r.version), ...policy.shadows.map((s) => s.version)]) chosen.add(v);
    }
    const versions: WantedVersion[] = withArtifact
      .filter((v) => chosen.has(v.version))
      .map((v) => ({
        version: v.version,
        sha256: v.files.find((f) => f.name === "model.onnx")!.sha256,
        fetch: (withOutlier: boolean) => this.#download(model, v.version, v.files.map((f) => f.name).filter((n) => n === "model.onnx" || n === "metadata.json" || (withOutlier && n === "outlier.onnx"))),
      }));
    return { wanted: { name: model.name, modelId: model.id, versions, aliases, policies }, failures };
  }

  /** A version's files, checked against the digests the registry recorded. */
  async #download(model: Model, version: number, files: string[]): Promise<{ onnx: Uint8Array; metadata: ModelMetadataFile | undefined; outlier?: Uint8Array }> {
    const chunks = new Map<string, Uint8Array[]>();
    let header: ModelVersion | undefined;
    for await (const message of this.#client.downloadModelVersion({ modelId: model.id, version, files }, { ...this.#call(), timeoutMs: 120_000 })) {
      if (message.content.case === "modelVersion") header = message.content.value;
      else if (message.content.case === "chunk") chunks.set(message.content.value.file, [...(chunks.get(message.content.value.file) ?? []), message.content.value.data]);
    }
    const bytes = (name: string) => {
      const file = header?.files.find((f) => f.name === name);
      const data = Buffer.concat(chunks.get(name) ?? []);
      if (file === undefined || data.length !== Number(file.sizeBytes) || sha256Hex(data) !== file.sha256) {
        throw new Error(`the download of ${name} does not match the registry's record (size or SHA-256)`);
      }
      return data;
    };
    const onnx = bytes("model.onnx");
    // The registry numbers versions; the metadata's own version number is not checked here.
    const hasMetadata = header?.files.some((f) => f.name === "metadata.json") ?? false;
    const metadata = hasMetadata ? parseModelMetadata(bytes("metadata.json").toString("utf8"), { name: model.name }) : undefined;
    return { onnx, metadata, outlier: files.includes("outlier.onnx") ? bytes("outlier.onnx") : undefined };
  }

  async #apply(): Promise<void> {
    const byName = new Map<string, string[]>();
    for (const { model, projectName } of this.#wanted.values()) byName.set(model.name, [...(byName.get(model.name) ?? []), projectName]);
    const failures: SourceFailure[] = [];
    const wanted: WantedModel[] = [];
    for (const entry of this.#wanted.values()) {
      const projects = byName.get(entry.model.name)!;
      if (projects.length > 1) {
        failures.push({ name: entry.model.name, version: 0, reason: `models of this name are in projects ${projects.sort().join(" and ")}; name one in PREDICTOR_MODELS` });
        continue;
      }
      wanted.push(entry.wanted);
      failures.push(...entry.failures);
    }
    this.#served = await this.loader.apply(wanted, failures);
    this.options.onApplied(this.#served);
    await this.#report().catch(() => undefined);
  }

  /** Tells the registry which versions this Predictor serves now. */
  async #report(): Promise<void> {
    if (this.#served === undefined) return;
    const served = [...this.#served.models.values()].flatMap((m) => [...m.versions.keys()].map((version) => ({ modelId: m.modelId, version })));
    await this.#client.reportServing({ predictor: this.options.reportAs(), served }, this.#call());
  }

  async *#pages<T>(page: (token: string) => Promise<{ items: T[]; next: string }>): AsyncIterable<T> {
    let token = "";
    do {
      const { items, next } = await page(token);
      yield* items;
      token = next;
    } while (token !== "");
  }

  #call() {
    return { timeoutMs: callTimeoutMs, headers: this.#span ? { traceparent: this.#span.traceparent } : undefined };
  }
}
