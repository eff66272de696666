import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import {
  AliasChangeKind,
  ModelEventKind,
  ModelVersionStatus,
  SignatureKind,
  type ExperimentSchema,
  type ModelEventSchema,
  type ModelRegistryService,
  type ModelSchema,
  type ModelVersionSchema,
  type ProjectSchema,
} from "../../gen/mlmesh/registry/v1/registry_pb.js";
import type { PartialServiceImpl } from "../runtime/serve/registration.js";
import { decodePageToken, defaultPageSize, encodePageToken } from "../runtime/serve/pagination.js";
import { callIdentityOf } from "../runtime/serve/pipeline.js";
import type { ArtifactStore } from "./artifact-store.js";
import type { EventFeed } from "./event-feed.js";
import type { RolloutController } from "./rollouts.js";
import type { WebhookDispatcher } from "./webhooks.js";
import type { Experiment, JsonObject, Model, ModelEvent, ModelVersionWithAliases, Page, PageRequest, Project, RegistryStore, StoredFile } from "./store.js";
import { RolloutState } from "../../gen/mlmesh/registry/v1/rollout_pb.js";
import { checkTrafficPolicy, policyFromJson, policyToJson } from "./traffic-policies.js";
import { receiveUpload, type StoredSignature } from "./upload.js";

/** Bytes per chunk of DownloadModelVersion. */
const downloadChunkBytes = 256 * 1024;

/** A WatchModelEvents stream with nothing to send sends a heartbeat this often. */
const heartbeatMs = 10_000;

/** What the registry handlers need besides the store. */
export interface RegistryServiceDeps {
  readonly artifacts: ArtifactStore;
  /** ARTIFACT_MAX_BYTES. */
  readonly maxUploadBytes: number;
  readonly feed: EventFeed;
  /** Called after each committed change: wakes this process's watch streams and webhooks. */
  readonly changed: () => void;
  /** Canary rollouts (StartRollout and the others). */
  readonly rollouts: RolloutController;
  /** Webhooks (CreateWebhook and the others). */
  readonly webhooks: WebhookDispatcher;
  /** Aborted when the server starts draining: watch streams end then. */
  stopping(): AbortSignal;
}

/**
 * The ModelRegistryService handlers over a RegistryStore. Field rules (names, sizes, aliases,
 * page sizes) are enforced by the contract's protovalidate rules before a handler runs.
 */
export function createRegistryService(store: RegistryStore, deps: RegistryServiceDeps): PartialServiceImpl<typeof ModelRegistryService> {
  /** Runs a write that appends to the event log, then wakes this process's watch streams. */
  const changing = async <T>(write: Promise<T>): Promise<T> => {
    const result = await write;
    deps.changed();
    return result;
  };
  return {
    async createProject(request) {
      return { project: projectOut(await store.createProject(request.name, request.description)) };
    },
    async setProjectDescription(request) {
      return { project: projectOut(await store.setProjectDescription(request.projectId, request.description)) };
    },
    async getProject(request) {
      return { project: projectOut(await store.getProject(request.projectId)) };
    },
    async getProjectByName(request) {
      return { project: projectOut(await store.getProjectByName(request.name)) };
    },
    async listProjects(request) {
      const page = await store.listProjects(pageRequest(request), request.nameFilter);
      return { projects: page.items.map(projectOut), nextPageToken: nextToken(page) };
    },

    async createModel(request) {
      return { model: modelOut(await store.createModel(request.projectId, request.name, request.description)) };
    },
    async setModelDescription(request) {
      return { model: modelOut(await store.setModelDescription(request.modelId, request.description)) };
    },
    async getModel(request) {
      return { model: modelOut(await store.getModel(request.modelId)) };
    },
    async listModels(request) {
      const page = await store.listModels(pageRequest(request), {
        nameFilter: request.nameFilter,
        projectId: request.project.case === "projectId" ? request.project.value : undefined,
        projectName: request.project.case === "projectName" ? request.project.value : undefined,
      });
      return { models: page.items.map(modelOut), nextPageToken: nextToken(page) };
    },

    async createExperiment(request) {
      const experiment = await store.createExperiment({
        modelId: request.modelId,
        modelVersionId: request.modelVersionId,
        parameters: request.parameters ?? {},
        trainingDataset: request.trainingDataset,
        validationDataset: request.validationDataset,
        testDataset: request.testDataset,
        evaluations: request.evaluations ?? {},
        artifactFilePaths: request.artifactFilePaths ?? {},
      });
      return { experiment: experimentOut(experiment) };
    },
    async getExperiment(request) {
      return { experiment: experimentOut(await store.getExperiment(request.experimentId)) };
    },
    async listExperiments(request) {
      const { filter } = request;
      const page = await store.listExperiments(pageRequest(request), {
        modelId: filter.case === "modelId" ? filter.value : undefined,
        projectId: filter.case === "projectId" ? filter.value : undefined,
        modelVersionId: filter.case === "modelVersionId" ? filter.value : undefined,
      });
      return { experiments: page.items.map(experimentOut), nextPageToken: nextToken(page) };
    },
    async updateExperimentEvaluations(request) {
      const experiment = await store.mergeExperimentJson(request.experimentId, "evaluations", request.evaluations ?? {});
      return { experiment: experimentOut(experiment) };
    },
    async updateExperimentArtifactFilePaths(request) {
      const experiment = await store.mergeExperimentJson(request.experimentId, "artifactFilePaths", request.artifactFilePaths ?? {});
      return { experiment: experimentOut(experiment) };
    },

    async createModelVersion(request, ctx) {
      const version = await changing(
        store.createModelVersion(
          { modelId: request.modelId, sourceUri: request.sourceUri, description: request.description, experimentId: request.experimentId, tags: { ...request.tags } },
          actorOf(ctx),
        ),
      );
      return { modelVersion: versionOut(version) };
    },
    async getModelVersion(request) {
      return { modelVersion: versionOut(await store.getModelVersion(request.modelId, request.version)) };
    },
    async listModelVersions(request) {
      const [page, serving] = await Promise.all([store.listModelVersions(request.modelId, pageRequest(request)), store.servingReplicas()]);
      return { modelVersions: page.items.map((v) => versionOut(v, serving)), nextPageToken: nextToken(page) };
    },
    async setModelVersionAlias(request, ctx) {
      return { modelVersion: versionOut(await changing(store.setAlias(request.modelId, request.alias, request.version, actorOf(ctx)))) };
    },
    async deleteModelVersionAlias(request, ctx) {
      await changing(store.deleteAlias(request.modelId, request.alias, actorOf(ctx)));
      return {};
    },
    async getModelVersionByAlias(request) {
      return { modelVersion: versionOut(await store.getByAlias(request.modelId, request.alias)) };
    },

    async setModelTag(request) {
      return { model: modelOut(await store.setModelTag(request.modelId, request.key, request.value)) };
    },
    async deleteModelTag(request) {
      return { model: modelOut(await store.setModelTag(request.modelId, request.key, undefined)) };
    },
    async setModelVersionTag(request) {
      return { modelVersion: versionOut(await store.setModelVersionTag(request.modelId, request.version, request.key, request.value)) };
    },
    async deleteModelVersionTag(request) {
      return { modelVersion: versionOut(await store.setModelVersionTag(request.modelId, request.version, request.key, undefined)) };
    },

    async getModelByName(request) {
      return { model: modelOut(await store.getModelByName(request.projectName, request.name)) };
    },

    async uploadModelVersion(requests, ctx) {
      const upload = await receiveUpload(requests, {
        artifacts: deps.artifacts,
        maxBytes: deps.maxUploadBytes,
        modelName: async (modelId) => (await store.getModel(modelId)).name,
      });
      try {
        await upload.commit();
        const { header } = upload;
        const version = await changing(
          store.createModelVersion(
            {
              modelId: header.modelId,
              sourceUri: `sha256:${upload.files.find((f) => f.name === "model.onnx")!.sha256}`,
              description: header.description,
              experimentId: header.experimentId,
              tags: { ...header.tags },
              signature: upload.signature as unknown as JsonObject,
              files: upload.files,
            },
            actorOf(ctx),
            header.alias === "" ? undefined : header.alias,
          ),
        );
        return { modelVersion: versionOut(version) };
      } catch (err) {
        // The blobs may stay (content-addressed, reused by a retry); no version refers to them.
        await upload.abort();
        throw err;
      }
    },

    async *downloadModelVersion(request) {
      const version = await store.getModelVersion(request.modelId, request.version);
      const stored = version.files as unknown as StoredFile[];
      if (stored.length === 0) {
        throw new ConnectError(`model ${request.modelId} version ${request.version} was registered without an artifact (no upload)`, Code.FailedPrecondition);
      }
      const missing = request.files.filter((name) => !stored.some((f) => f.name === name));
      if (missing.length > 0) throw new ConnectError(`model ${request.modelId} version ${request.version} has no ${missing.join(", ")}`, Code.NotFound);
      const files = request.files.length === 0 ? stored : stored.filter((f) => request.files.includes(f.name));
      yield { content: { case: "modelVersion", value: versionOut(version) } };
      for (const file of files) {
        for await (const data of deps.artifacts.read(file.sha256, downloadChunkBytes)) {
          yield { content: { case: "chunk", value: { file: file.name, data } } };
        }
      }
    },

    async searchModelVersions(request) {
      const [page, serving] = await Promise.all([
        store.searchVersions(
          { projectName: request.projectName, modelName: request.modelName, tagKey: request.tagKey, tagValue: request.tagValue, alias: request.alias },
          pageRequest(request),
        ),
        store.servingReplicas(),
      ]);
      return {
        results: page.items.map((v) => ({ model: modelOut(v.model), modelVersion: versionOut(v, serving) })),
        nextPageToken: nextToken(page),
      };
    },

    async listAliasHistory(request) {
      const page = await store.aliasHistory(request.modelId, request.alias, pageRequest(request));
      return {
        changes: page.items.map((e) => ({
          alias: e.alias,
          version: e.version,
          previousVersion: e.previousVersion,
          actor: e.actor,
          changeTime: timestampFromDate(e.createdAt),
          sequence: BigInt(e.sequence),
          kind: aliasChangeKinds[e.kind] ?? AliasChangeKind.UNSPECIFIED,
          policy: policyFromJson(e.policy),
          previousPolicy: policyFromJson(e.previousPolicy),
          reason: e.reason,
        })),
        nextPageToken: nextToken(page),
      };
    },

    async rollbackModelVersionAlias(request, ctx) {
      return { modelVersion: versionOut(await changing(store.rollbackAlias(request.modelId, request.alias, actorOf(ctx)))) };
    },

    async setTrafficPolicy(request, ctx) {
      const policy = request.policy!;
      const versions = checkTrafficPolicy(policy);
      await changing(store.setPolicy(request.modelId, request.alias, policyToJson(policy), versions, actorOf(ctx)));
      const stored = await store.getPolicy(request.modelId, request.alias);
      return { trafficPolicy: { alias: request.alias, policy: policyFromJson(stored.policy) } };
    },
    async getTrafficPolicy(request) {
      const stored = await store.getPolicy(request.modelId, request.alias);
      if (stored.policy === null) throw new ConnectError(`alias "${request.alias}" of model ${request.modelId} has no traffic policy (every call goes to version ${stored.version})`, Code.NotFound);
      return { trafficPolicy: { alias: request.alias, policy: policyFromJson(stored.policy) } };
    },
    async startRollout(request, ctx) {
      return { rollout: await deps.rollouts.start(request, actorOf(ctx)) };
    },
    async getRollout(request) {
      return { rollout: await deps.rollouts.get(request.rolloutId) };
    },
    async listRollouts(request) {
      const page = pageRequest(request);
      const { rollouts, last } = await deps.rollouts.list(request.modelId, page.size, page.afterId);
      return { rollouts, nextPageToken: last === undefined ? "" : encodePageToken(last) };
    },
    async changeRollout(request, ctx) {
      return { rollout: await deps.rollouts.change(request.rolloutId, request.change, actorOf(ctx)) };
    },
    async createWebhook(request) {
      return { webhook: await deps.webhooks.create(request.url, request.secret, request.events, request.description) };
    },
    async listWebhooks() {
      return { webhooks: await deps.webhooks.list() };
    },
    async deleteWebhook(request) {
      await deps.webhooks.delete(request.webhookId);
      return {};
    },
    async listWebhookDeliveries(request) {
      const page = pageRequest(request);
      const { deliveries, last } = await deps.webhooks.deliveries(request.webhookId, page.size, page.afterId);
      return { deliveries, nextPageToken: last === undefined ? "" : encodePageToken(last) };
    },
    async redeliverWebhookDelivery(request) {
      return { delivery: await deps.webhooks.redeliver(request.deliveryId) };
    },
    async deleteTrafficPolicy(request, ctx) {
      await changing(store.deletePolicy(request.modelId, request.alias, actorOf(ctx)));
      return {};
    },

    async *watchModelEvents(request, ctx) {
      const signal = AbortSignal.any([ctx.signal, deps.stopping()]);
      let cursor = request.afterSequence > 0n ? Number(request.afterSequence) : await store.latestSequence();
      // First a heartbeat: it tells a new watcher where "now" is before anything happens.
      yield { event: { kind: ModelEventKind.HEARTBEAT, sequence: BigInt(cursor), time: timestampFromDate(new Date()) } };
      let lastSent = Date.now();
      for (;;) {
        const events = await store.eventsAfter(cursor, request.projectName, 500);
        for (const event of events) {
          yield { event: eventOut(event) };
          cursor = event.sequence;
          lastSent = Date.now();
        }
        if (events.length === 500) continue;
        if (Date.now() - lastSent >= heartbeatMs) {
          yield { event: { kind: ModelEventKind.HEARTBEAT, sequence: BigInt(cursor), time: timestampFromDate(new Date()) } };
          lastSent = Date.now();
        }
        try {
          await Promise.race([deps.feed.next(signal), new Promise((resolve) => setTimeout(resolve, heartbeatMs).unref())]);
        } catch {
          return; // the client went away or the server is stopping
        }
      }
    },

    async reportServing(request) {
      await store.reportServing(request.predictor, request.served);
      return {};
    },
  };
}

/**
 * Who is making a change, for the alias history: with authentication on, the credential's
 * name (what the caller proved), with the x-mlmesh-actor header it declares (user@host, from
 * the CLI and the console) after it; without, the header alone, else "anonymous".
 */
function actorOf(ctx: HandlerContext): string {
  const declared = (ctx.requestHeader.get("x-mlmesh-actor") ?? "").trim().slice(0, 128);
  const principal = callIdentityOf(ctx)?.principal;
  if (principal !== undefined) return declared === "" ? principal.name : `${principal.name} (${declared})`;
  return declared === "" ? "anonymous" : declared;
}

function eventOut(e: ModelEvent): MessageInitShape<typeof ModelEventSchema> {
  return {
    sequence: BigInt(e.sequence),
    kind: ModelEventKind[e.kind as keyof typeof ModelEventKind] ?? ModelEventKind.UNSPECIFIED,
    projectId: e.projectId,
    projectName: e.projectName,
    modelId: e.modelId,
    modelName: e.modelName,
    version: e.version,
    alias: e.alias,
    previousVersion: e.previousVersion,
    actor: e.actor,
    time: timestampFromDate(e.createdAt),
    reason: e.reason,
    rolloutId: e.rolloutId,
    rolloutState: RolloutState[e.rolloutState as keyof typeof RolloutState] ?? RolloutState.UNSPECIFIED,
  };
}

/** The alias history's kind of each event kind it shows. */
const aliasChangeKinds: Readonly<Record<string, AliasChangeKind>> = {
  ALIAS_SET: AliasChangeKind.MOVED,
  ALIAS_DELETED: AliasChangeKind.DELETED,
  POLICY_SET: AliasChangeKind.POLICY_SET,
  POLICY_DELETED: AliasChangeKind.POLICY_DELETED,
};

function pageRequest(request: { pageSize: number; pageToken: string }): PageRequest {
  return {
    size: request.pageSize || defaultPageSize,
    afterId: request.pageToken === "" ? undefined : decodePageToken(request.pageToken),
  };
}

function nextToken(page: Page<unknown>): string {
  return page.lastId === undefined ? "" : encodePageToken(page.lastId);
}

const times = (row: { createdAt: Date; updatedAt: Date }) => ({
  createTime: timestampFromDate(row.createdAt),
  updateTime: timestampFromDate(row.updatedAt),
});

function projectOut(p: Project): MessageInitShape<typeof ProjectSchema> {
  return { id: p.id, name: p.name, description: p.description, ...times(p) };
}

function modelOut(m: Model): MessageInitShape<typeof ModelSchema> {
  return {
    id: m.id,
    projectId: m.projectId,
    name: m.name,
    description: m.description,
    tags: m.tags as Record<string, string>,
    ...times(m),
    trafficPolicies: m.aliases.map((a) => ({ alias: a.alias, policy: policyFromJson(a.policy) })),
  };
}

function experimentOut(e: Experiment): MessageInitShape<typeof ExperimentSchema> {
  return {
    id: e.id,
    modelId: e.modelId,
    modelVersionId: e.modelVersionId,
    parameters: e.parameters as JsonObject,
    trainingDataset: e.trainingDataset,
    validationDataset: e.validationDataset,
    testDataset: e.testDataset,
    evaluations: e.evaluations as JsonObject,
    artifactFilePaths: e.artifactFilePaths as JsonObject,
    ...times(e),
  };
}

function versionOut(
  v: ModelVersionWithAliases,
  serving?: Map<string, { predictor: string; reportedAt: Date }[]>,
): MessageInitShape<typeof ModelVersionSchema> {
  // Signatures stored before tensor models carry no kind and no inputs: they are classifiers.
  const signature = v.signature as (Omit<StoredSignature, "kind" | "inputs"> & Partial<Pick<StoredSignature, "kind" | "inputs">>) | null;
  const tensor = (t: { name: string; dtype: string; shape: readonly number[] }) => ({ name: t.name, dtype: t.dtype, shape: t.shape.map(BigInt) });
  return {
    id: v.id,
    modelId: v.modelId,
    version: v.version,
    sourceUri: v.sourceUri,
    description: v.description,
    experimentId: v.experimentId,
    status: ModelVersionStatus[v.status as keyof typeof ModelVersionStatus] ?? ModelVersionStatus.UNSPECIFIED,
    tags: v.tags as Record<string, string>,
    aliases: v.aliases.map((a) => a.alias),
    creator: v.createdBy,
    ...times(v),
    signature: signature
      ? {
          kind: { tensor: SignatureKind.TENSOR, image: SignatureKind.IMAGE, classifier: SignatureKind.CLASSIFIER }[signature.kind ?? "classifier"],
          input: signature.input && tensor(signature.input),
          inputs: (signature.inputs ?? (signature.input ? [signature.input] : [])).map(tensor),
          outputs: signature.outputs.map(tensor),
          probabilityOutput: signature.probabilityOutput,
          featureNames: [...signature.featureNames],
          labels: [...signature.labels],
        }
      : undefined,
    files: (v.files as unknown as StoredFile[]).map((f) => ({ name: f.name, sha256: f.sha256, sizeBytes: BigInt(f.sizeBytes) })),
    serving: (serving?.get(`${v.modelId}@${v.version}`) ?? []).map((r) => ({ predictor: r.predictor, reportTime: timestampFromDate(r.reportedAt) })),
  };
}
