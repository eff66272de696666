import { useState } from "preact/hooks";
import type { Experiment, Model } from "../../../../gen/mlmesh/registry/v1/registry_pb.js";
import { useSettings } from "../lib/settings";
import { uploadVersion } from "../lib/upload";
import { useAction } from "../lib/use-load";
import { Done, ErrorBanner } from "./status";

/**
 * Pushes a new version from its files, picked or dropped together (ADMIN): model.onnx, and
 * metadata.json when the model has one, as `mlmesh models push` does from a folder
 * (lib/upload.ts says how).
 */
export function PushVersion({ model, experiments, onPushed }: { model: Model; experiments: Experiment[]; onPushed: () => void }) {
  const { endpoints, token } = useSettings();
  const action = useAction({ name: "registry", url: endpoints.registryUrl });
  const [onnx, setOnnx] = useState<File | undefined>(undefined);
  const [metadata, setMetadata] = useState<File | undefined>(undefined);
  const [description, setDescription] = useState("");
  const [experimentId, setExperimentId] = useState("");
  const [alias, setAlias] = useState("");
  const [progress, setProgress] = useState("");
  const [dragging, setDragging] = useState(false);
  /** Dropped or picked files, told apart by name (.onnx, .json). */
  const take = (files: FileList | null) => {
    for (const file of Array.from(files ?? [])) {
      if (file.name.endsWith(".onnx")) setOnnx(file);
      else if (file.name.endsWith(".json")) setMetadata(file);
    }
  };
  return (
    <form
      data-testid="push-form"
      class={`push${dragging ? " dragging" : ""}`}
      onDragOver={(e) => {
        e.preventDefault();
        setDragging(true);
      }}
      onDragLeave={() => setDragging(false)}
      onDrop={(e) => {
        e.preventDefault();
        setDragging(false);
        take(e.dataTransfer?.files ?? null);
      }}
      onSubmit={(e) => {
        e.preventDefault();
        if (onnx === undefined) return;
        const form = e.currentTarget;
        void action.run(async () => {
          const version = await uploadVersion(endpoints.registryUrl, token, { modelId: model.id, description, experimentId, alias: alias.trim() }, { model: onnx, metadata }, setProgress);
          // Pushed: the form starts over, so a second click cannot push the same files again.
          form.reset();
          setOnnx(undefined);
          setMetadata(undefined);
          setDescription("");
          setAlias("");
          setProgress("");
          onPushed();
          return `pushed version ${version.version}${version.aliases.length > 0 ? ` (${version.aliases.join(", ")})` : ""}`;
        });
      }}
    >
      <p class="muted">
        Pick model.onnx, and metadata.json when the model has one (a classifier or an image model), or drop them on this form. The registry reads the signature from the graph,
        checks the metadata against it and runs its sample before it stores anything.
      </p>
      <label>
        model.onnx <input type="file" accept=".onnx" data-testid="push-onnx" onChange={(e) => take(e.currentTarget.files)} />
        <span class="muted small">{onnx ? `${onnx.name}, ${onnx.size} bytes` : ""}</span>
      </label>
      <label>
        metadata.json <input type="file" accept=".json,application/json" data-testid="push-metadata" onChange={(e) => take(e.currentTarget.files)} />
        <span class="muted small">{metadata ? `${metadata.name}, ${metadata.size} bytes` : ""}</span>
      </label>
      <label>
        Description <input data-testid="push-description" value={description} onInput={(e) => setDescription(e.currentTarget.value)} />
      </label>
      <label>
        Produced by experiment{" "}
        <select data-testid="push-experiment" value={experimentId} onChange={(e) => setExperimentId(e.currentTarget.value)}>
          <option value="">(none)</option>
          {experiments.map((x) => (
            <option value={x.id}>{x.modelVersionId || x.id}</option>
          ))}
        </select>
      </label>
      <label>
        Then point alias <input data-testid="push-alias" size={12} placeholder="(none)" value={alias} onInput={(e) => setAlias(e.currentTarget.value)} /> at it
      </label>
      <div class="buttons">
        <button type="submit" class="primary" data-testid="push-submit" disabled={action.busy || onnx === undefined}>
          Push version
        </button>
        <span class="muted" role="status">
          {action.busy ? progress : ""}
        </span>
      </div>
      <ErrorBanner error={action.error} testId="push-error" />
      <Done text={action.done} testId="push-done" />
    </form>
  );
}
