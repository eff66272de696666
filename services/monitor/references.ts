import { createClient, type Client } from "@connectrpc/connect";
import { ModelRegistryService } from "../../gen/mlmesh/registry/v1/registry_pb.js";
import { parseReferenceProfile, type ReferenceProfile } from "../model/reference-profile.js";
import type { MeshCredentials } from "../runtime/client/mesh-credentials.js";
import { meshTransport } from "../runtime/client/mesh-transport.js";
import type { Logger } from "../runtime/observability/logger.js";
import { thresholdsFromTags, type Thresholds } from "./config.js";

/*
 * What the monitor knows of each model from the registry: its thresholds (the model's tags
 * "monitor.psi" and so on over the defaults) and each version's reference profile (the
 * version's reference_profile.json). Read when a window of the model closes, at most every
 * MONITOR_REFERENCE_REFRESH; without a registry, or when it cannot be reached, the defaults
 * stand and drift is not computed (counts and outlier rates still are).
 * Models are found by name, as the Predictor serves them: should two projects have a model of
 * the same name, the first the registry lists is read.
 */

interface ModelEntry {
  fetchedAt: number;
  thresholds: Thresholds;
  /** By version: the profile, or null when the version has none. */
  readonly profiles: Map<number, ReferenceProfile | null>;
}

export class ReferenceBook {
  readonly #client: Client<typeof ModelRegistryService> | undefined;
  readonly #models = new Map<string, ModelEntry>();

  constructor(
    registryAddress: string | undefined,
    credentials: MeshCredentials,
    private readonly defaults: Thresholds,
    private readonly refreshMs: number,
    private readonly logger: Logger,
  ) {
    this.#client = registryAddress === undefined ? undefined : createClient(ModelRegistryService, meshTransport(registryAddress, { credentials }));
  }

  /** The model's thresholds as last read (the defaults before any read). */
  thresholds(model: string): Thresholds {
    return this.#models.get(model)?.thresholds ?? this.defaults;
  }

  /** The version's profile as last read. */
  profile(model: string, version: number): ReferenceProfile | undefined {
    return this.#models.get(model)?.profiles.get(version) ?? undefined;
  }

  /** Reads the model's tags and the version's profile when they are older than the refresh interval (or missing). */
  async refresh(model: string, version: number): Promise<void> {
    const client = this.#client;
    if (client === undefined) return;
    const now = Date.now();
    const entry = this.#models.get(model);
    if (entry !== undefined && now - entry.fetchedAt < this.refreshMs && entry.profiles.has(version)) return;
    try {
      const { results } = await client.searchModelVersions({ modelName: model, pageSize: 1000 }, { timeoutMs: 5000 });
      const found = results.filter((r) => r.model?.name === model);
      const registered = found[0]?.model;
      const next: ModelEntry = entry ?? { fetchedAt: now, thresholds: this.defaults, profiles: new Map() };
      next.fetchedAt = now;
      next.thresholds = thresholdsFromTags(this.defaults, registered?.tags ?? {});
      const match = found.find((r) => r.model?.id === registered?.id && r.modelVersion?.version === version);
      const hasProfile = match?.modelVersion?.files.some((f) => f.name === "reference_profile.json") ?? false;
      if (!hasProfile) next.profiles.set(version, null);
      else if (!next.profiles.get(version)) next.profiles.set(version, await this.#download(client, registered!.id, version));
      this.#models.set(model, next);
    } catch (err) {
      this.logger.warn({ model, version, err: (err as Error).message }, "cannot read the model's thresholds and reference profile from the registry");
    }
  }

  async #download(client: Client<typeof ModelRegistryService>, modelId: string, version: number): Promise<ReferenceProfile | null> {
    const chunks: Uint8Array[] = [];
    for await (const message of client.downloadModelVersion({ modelId, version, files: ["reference_profile.json"] }, { timeoutMs: 30_000 })) {
      if (message.content.case === "chunk") chunks.push(message.content.value.data);
    }
    try {
      return parseReferenceProfile(Buffer.concat(chunks).toString("utf8"));
    } catch (err) {
      this.logger.warn({ modelId, version, err: (err as Error).message }, "the version's reference profile is unreadable: drift is not computed for it");
      return null;
    }
  }
}
