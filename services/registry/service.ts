import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  ModelVersionStatus,
  type ExperimentSchema,
  type ModelRegistryService,
  type ModelSchema,
  type ModelVersionSchema,
  type ProjectSchema,
} from "../../gen/mlmesh/registry/v1/registry_pb.js";
import type { PartialServiceImpl } from "../runtime/instrument.js";
import { decodePageToken, defaultPageSize, encodePageToken } from "../runtime/pagination.js";
import type { Experiment, JsonObject, Model, ModelVersionWithAliases, Page, PageRequest, Project, RegistryStore } from "./store.js";

/**
 * The ModelRegistryService handlers over a RegistryStore. Field rules (names, sizes, aliases,
 * page sizes) are enforced by the contract's protovalidate rules before a handler runs.
 */
export function createRegistryService(store: RegistryStore): PartialServiceImpl<typeof ModelRegistryService> {
  return {
    async createProject(request) {
      return { project: projectOut(await store.createProject(request.name, request.description)) };
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

    async createModelVersion(request) {
      const version = await store.createModelVersion({
        modelId: request.modelId,
        sourceUri: request.sourceUri,
        description: request.description,
        experimentId: request.experimentId,
        tags: { ...request.tags },
      });
      return { modelVersion: versionOut(version) };
    },
    async getModelVersion(request) {
      return { modelVersion: versionOut(await store.getModelVersion(request.modelId, request.version)) };
    },
    async listModelVersions(request) {
      const page = await store.listModelVersions(request.modelId, pageRequest(request));
      return { modelVersions: page.items.map(versionOut), nextPageToken: nextToken(page) };
    },
    async setModelVersionAlias(request) {
      return { modelVersion: versionOut(await store.setAlias(request.modelId, request.alias, request.version)) };
    },
    async deleteModelVersionAlias(request) {
      await store.deleteAlias(request.modelId, request.alias);
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
  };
}

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
  return { id: m.id, projectId: m.projectId, name: m.name, description: m.description, tags: m.tags as Record<string, string>, ...times(m) };
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

function versionOut(v: ModelVersionWithAliases): MessageInitShape<typeof ModelVersionSchema> {
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
    ...times(v),
  };
}
