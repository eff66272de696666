import { useLocation } from "preact-iso";
import { useState } from "preact/hooks";
import type { Model, ModelVersion, Project } from "../../../../gen/mlmesh/registry/v1/registry_pb.js";
import { PageTitle } from "../components/page-title";
import { Done, ErrorBanner, Unreachable } from "../components/status";
import { useClients } from "../lib/clients";
import { rate, tensor } from "../lib/format";
import { fetchLive } from "../lib/live";
import { loadCatalogue } from "../lib/registry-data";
import { useSettings } from "../lib/settings";
import { useAction, useLoad } from "../lib/use-load";

/**
 * A search over the registry's models. Words match model and project names; `tag:key` or
 * `tag:key=value` a model's or a version's tag; `alias:name` (or `@name`) an alias. Every
 * term must match.
 */
export function matches(query: string, model: Model, projectName: string, versions: readonly ModelVersion[]): boolean {
  return query
    .split(/\s+/)
    .filter((t) => t !== "")
    .every((term) => {
      const lower = term.toLowerCase();
      if (lower.startsWith("tag:")) {
        const [key, value] = term.slice(4).split("=", 2);
        const has = (tags: Record<string, string>) => key in tags && (value === undefined || tags[key] === value);
        return has(model.tags) || versions.some((v) => has(v.tags));
      }
      if (lower.startsWith("alias:") || lower.startsWith("@")) {
        const alias = term.slice(lower.startsWith("@") ? 1 : 6);
        return versions.some((v) => v.aliases.includes(alias));
      }
      return model.name.toLowerCase().includes(lower) || projectName.toLowerCase().includes(lower);
    });
}

export function ModelsPage() {
  const { registry, predictor } = useClients();
  const { endpoints, token } = useSettings();
  const location = useLocation();
  const query = location.query.q ?? "";
  const registryService = { name: "registry", url: endpoints.registryUrl };
  const catalogue = useLoad((signal) => loadCatalogue(registry, signal), [registry], { service: registryService, refreshMs: 10_000 });
  const served = useLoad((signal) => predictor.listModels({ pageSize: 1000 }, { signal }), [predictor], {
    service: { name: "Predictor", url: endpoints.predictorUrl },
    refreshMs: 5000,
  });
  const live = useLoad((signal) => fetchLive(token, signal), [token], { service: { name: "console's server", url: window.location.origin }, refreshMs: 2000 });

  const projectNames = new Map((catalogue.data?.projects ?? []).map((p) => [p.id, p.name]));
  const rows = (catalogue.data?.models ?? [])
    .map((model) => ({ model, project: projectNames.get(model.projectId) ?? model.projectId, versions: catalogue.data!.versions.get(model.id) ?? [] }))
    .filter((row) => matches(query, row.model, row.project, row.versions));
  const servedBy = (name: string) => (served.data?.models ?? []).filter((m) => m.name === name);
  const traffic = (name: string) => (live.data?.models ?? []).filter((m) => m.model === name).reduce((sum, m) => sum + m.rps, 0);

  return (
    <section>
      <PageTitle title="Models" />
      <form role="search" class="search" onSubmit={(e) => e.preventDefault()}>
        <label for="model-search">Search models</label>
        <input
          id="model-search"
          data-testid="model-search"
          type="search"
          value={query}
          placeholder="name, tag:key=value, alias:production"
          onInput={(e) => location.route(`/models${e.currentTarget.value === "" ? "" : `?q=${encodeURIComponent(e.currentTarget.value)}`}`, true)}
        />
        <span class="muted" role="status" data-testid="model-count">
          {catalogue.data ? `${rows.length} of ${catalogue.data.models.length} models` : "loading"}
        </span>
      </form>
      <Unreachable error={catalogue.error} what="Registry" />
      {served.error ? <Unreachable error={served.error} what="Predictor" /> : null}
      <div class="table-wrap" tabIndex={0}>
        <table data-testid="models">
          <caption class="visually-hidden">Models of the registry matching the search</caption>
          <thead>
            <tr>
              <th scope="col">model</th>
              <th scope="col">project</th>
              <th scope="col">aliases</th>
              <th scope="col">signature (newest version)</th>
              <th scope="col">served versions</th>
              <th scope="col">traffic</th>
              <th scope="col">tags</th>
            </tr>
          </thead>
          <tbody>
            {rows.map(({ model, project, versions }) => {
              const newest = versions.at(-1);
              const signature = newest?.signature;
              return (
                <tr>
                  <td>
                    <a href={`/models/${encodeURIComponent(project)}/${encodeURIComponent(model.name)}`}>{model.name}</a>
                    {model.description ? <div class="muted small">{model.description}</div> : null}
                  </td>
                  <td>{project}</td>
                  <td>
                    {versions
                      .flatMap((v) => v.aliases.map((a) => `${a} → v${v.version}`))
                      .join(", ") || "—"}
                  </td>
                  <td class="small">
                    {signature ? (
                      <>
                        {(signature.inputs.length > 0 ? signature.inputs : signature.input ? [signature.input] : []).map(tensor).join(", ")} → {signature.outputs.map(tensor).join(", ")}
                        {signature.labels.length > 0 ? <div class="muted">labels: {signature.labels.join(", ")}</div> : null}
                      </>
                    ) : (
                      "—"
                    )}
                  </td>
                  <td>
                    {servedBy(model.name)
                      .map((m) => `v${m.version}${m.aliases.length > 0 ? ` (${m.aliases.join(", ")})` : ""}`)
                      .join(", ") || "—"}
                  </td>
                  <td>{live.data ? `${rate(traffic(model.name))} req/s` : "—"}</td>
                  <td class="small">
                    {Object.entries(model.tags)
                      .map(([k, v]) => `${k}=${v}`)
                      .join(", ") || "—"}
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      </div>
      <h2>Projects</h2>
      <Projects projects={catalogue.data?.projects ?? []} models={catalogue.data?.models ?? []} onChanged={catalogue.reload} />
      <CreateForms projects={catalogue.data?.projects ?? []} onCreated={catalogue.reload} />
    </section>
  );
}

/** The projects, each description edited in place (WRITER). */
function Projects({ projects, models, onChanged }: { projects: Project[]; models: Model[]; onChanged: () => void }) {
  const { registry } = useClients();
  const { endpoints } = useSettings();
  const action = useAction({ name: "registry", url: endpoints.registryUrl });
  const [edits, setEdits] = useState<Record<string, string>>({});
  return (
    <>
      <div class="table-wrap" tabIndex={0}>
        <table data-testid="projects">
          <caption class="visually-hidden">Projects of the registry</caption>
          <thead>
            <tr>
              <th scope="col">project</th>
              <th scope="col">models</th>
              <th scope="col">description</th>
            </tr>
          </thead>
          <tbody>
            {projects.map((p) => (
              <tr>
                <th scope="row">{p.name}</th>
                <td>{models.filter((m) => m.projectId === p.id).length}</td>
                <td>
                  <form
                    class="inline"
                    onSubmit={(e) => {
                      e.preventDefault();
                      void action.run(async () => {
                        await registry.setProjectDescription({ projectId: p.id, description: edits[p.id] ?? p.description });
                        setEdits(({ [p.id]: _, ...rest }) => rest);
                        onChanged();
                        return `description of ${p.name} saved`;
                      });
                    }}
                  >
                    <input
                      aria-label={`Description of ${p.name}`}
                      data-testid={`project-description-${p.name}`}
                      size={40}
                      value={edits[p.id] ?? p.description}
                      onInput={(e) => setEdits({ ...edits, [p.id]: e.currentTarget.value })}
                    />
                    <button type="submit" disabled={action.busy || edits[p.id] === undefined}>
                      Save
                    </button>
                  </form>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <ErrorBanner error={action.error} testId="projects-error" />
      <Done text={action.done} testId="projects-done" />
    </>
  );
}

/** Create a project, or a model in a project (WRITER). */
function CreateForms({ projects, onCreated }: { projects: { id: string; name: string }[]; onCreated: () => void }) {
  const { registry } = useClients();
  const { endpoints } = useSettings();
  const { route } = useLocation();
  const service = { name: "registry", url: endpoints.registryUrl };
  const projectAction = useAction(service);
  const modelAction = useAction(service);
  const [projectName, setProjectName] = useState("");
  const [projectDescription, setProjectDescription] = useState("");
  const [modelProject, setModelProject] = useState("");
  const [modelName, setModelName] = useState("");
  const [modelDescription, setModelDescription] = useState("");
  const chosenProject = modelProject || projects[0]?.id || "";
  return (
    <div class="forms">
      <form
        data-testid="new-project"
        aria-labelledby="new-project-title"
        onSubmit={(e) => {
          e.preventDefault();
          void projectAction.run(async () => {
            const { project } = await registry.createProject({ name: projectName.trim(), description: projectDescription });
            onCreated();
            setModelProject(project!.id);
            return `created project ${project!.name}`;
          });
        }}
      >
        <h2 id="new-project-title">New project</h2>
        <label>
          Name <input data-testid="new-project-name" required value={projectName} onInput={(e) => setProjectName(e.currentTarget.value)} />
        </label>
        <label>
          Description <input data-testid="new-project-description" value={projectDescription} onInput={(e) => setProjectDescription(e.currentTarget.value)} />
        </label>
        <button type="submit" disabled={projectAction.busy}>
          Create project
        </button>
        <ErrorBanner error={projectAction.error} testId="new-project-error" />
        <Done text={projectAction.done} testId="new-project-done" />
      </form>
      <form
        data-testid="new-model"
        aria-labelledby="new-model-title"
        onSubmit={(e) => {
          e.preventDefault();
          void modelAction.run(async () => {
            const { model } = await registry.createModel({ projectId: chosenProject, name: modelName.trim(), description: modelDescription });
            const project = projects.find((p) => p.id === model!.projectId)?.name ?? model!.projectId;
            route(`/models/${encodeURIComponent(project)}/${encodeURIComponent(model!.name)}`);
            return undefined;
          });
        }}
      >
        <h2 id="new-model-title">New model</h2>
        <label>
          Project{" "}
          <select data-testid="new-model-project" value={chosenProject} onChange={(e) => setModelProject(e.currentTarget.value)}>
            {projects.map((p) => (
              <option value={p.id}>{p.name}</option>
            ))}
          </select>
        </label>
        <label>
          Name <input data-testid="new-model-name" required value={modelName} onInput={(e) => setModelName(e.currentTarget.value)} />
        </label>
        <label>
          Description <input data-testid="new-model-description" value={modelDescription} onInput={(e) => setModelDescription(e.currentTarget.value)} />
        </label>
        <button type="submit" disabled={modelAction.busy || chosenProject === ""}>
          Create model
        </button>
        <ErrorBanner error={modelAction.error} testId="new-model-error" />
      </form>
    </div>
  );
}
