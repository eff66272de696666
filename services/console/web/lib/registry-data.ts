import type { Model, ModelVersion, Project } from "../../../../gen/mlmesh/registry/v1/registry_pb.js";
import type { Clients } from "./clients";

/** Every page of a paged List call (the registry answers at most 1000 per page). */
export async function allPages<T>(fetchPage: (pageToken: string) => Promise<{ items: T[]; nextPageToken: string }>, limit = 10_000): Promise<T[]> {
  const all: T[] = [];
  let token = "";
  do {
    const page = await fetchPage(token);
    all.push(...page.items);
    token = page.nextPageToken;
  } while (token !== "" && all.length < limit);
  return all;
}

/** The registry's catalogue: projects, models and every version (with aliases and signatures). */
export interface Catalogue {
  readonly projects: Project[];
  readonly models: Model[];
  /** Versions per model id, oldest first. */
  readonly versions: Map<string, ModelVersion[]>;
}

export async function loadCatalogue(registry: Clients["registry"], signal: AbortSignal): Promise<Catalogue> {
  const [projects, models, matches] = await Promise.all([
    allPages(async (pageToken) => {
      const r = await registry.listProjects({ pageSize: 1000, pageToken }, { signal });
      return { items: r.projects, nextPageToken: r.nextPageToken };
    }),
    allPages(async (pageToken) => {
      const r = await registry.listModels({ pageSize: 1000, pageToken }, { signal });
      return { items: r.models, nextPageToken: r.nextPageToken };
    }),
    allPages(async (pageToken) => {
      const r = await registry.searchModelVersions({ pageSize: 1000, pageToken }, { signal });
      return { items: r.results, nextPageToken: r.nextPageToken };
    }),
  ]);
  const versions = new Map<string, ModelVersion[]>();
  for (const match of matches) {
    const version = match.modelVersion!;
    versions.set(version.modelId, [...(versions.get(version.modelId) ?? []), version]);
  }
  return { projects, models, versions };
}
