import { useLocation, useRoute } from "preact-iso";
import { useState } from "preact/hooks";
import type { Experiment } from "../../../../gen/mlmesh/registry/v1/registry_pb.js";
import { PageTitle } from "../components/page-title";
import { ErrorBanner, Unreachable } from "../components/status";
import { BarChart } from "../components/time-chart";
import { useClients } from "../lib/clients";
import { ShownErrorThrown } from "../lib/errors";
import { utc, value } from "../lib/format";
import { allPages } from "../lib/registry-data";
import { useSettings } from "../lib/settings";
import { useLoad } from "../lib/use-load";

/** How many experiments a comparison takes. */
const compareMin = 2;
const compareMax = 5;

const label = (e: Experiment) => e.modelVersionId || e.id.slice(0, 8);

function useModelExperiments() {
  const { params } = useRoute();
  const { registry } = useClients();
  const { endpoints } = useSettings();
  const loaded = useLoad(
    async (signal) => {
      const { model } = await registry.getModelByName({ projectName: params.project, name: params.model }, { signal });
      const experiments = await allPages(async (pageToken) => {
        const r = await registry.listExperiments({ filter: { case: "modelId", value: model!.id }, pageSize: 1000, pageToken }, { signal });
        return { items: r.experiments, nextPageToken: r.nextPageToken };
      });
      return { model: model!, experiments };
    },
    [registry, params.project, params.model],
    { service: { name: "registry", url: endpoints.registryUrl } },
  );
  return { ...loaded, project: params.project, name: params.model, base: `/models/${encodeURIComponent(params.project)}/${encodeURIComponent(params.model)}` };
}

/** The model's experiments (training runs): parameters, datasets, evaluations; pick 2-5 to compare. */
export function ExperimentsPage() {
  const { data, error, project, name, base } = useModelExperiments();
  const { route } = useLocation();
  const [picked, setPicked] = useState<string[]>([]);
  const experiments = data?.experiments ?? [];
  const toggle = (id: string, on: boolean) => setPicked(on ? [...picked, id] : picked.filter((p) => p !== id));
  const canCompare = picked.length >= compareMin && picked.length <= compareMax;
  return (
    <section>
      <PageTitle title={`Experiments of ${project} / ${name}`}>
        <p>
          <a href={base}>Back to the model</a>
        </p>
      </PageTitle>
      <Unreachable error={error} what="Registry" />
      {data && experiments.length === 0 ? <p class="muted">No experiments recorded for this model (CreateExperiment records one).</p> : null}
      <form
        onSubmit={(e) => {
          e.preventDefault();
          if (canCompare) route(`${base}/experiments/compare?ids=${picked.map(encodeURIComponent).join(",")}`);
        }}
      >
        <div class="table-wrap" tabIndex={0}>
          <table data-testid="experiments">
            <caption class="visually-hidden">Experiments of the model, oldest first</caption>
            <thead>
              <tr>
                <th scope="col">compare</th>
                <th scope="col">version label</th>
                <th scope="col">created (UTC)</th>
                <th scope="col">parameters</th>
                <th scope="col">datasets</th>
                <th scope="col">evaluations</th>
              </tr>
            </thead>
            <tbody>
              {experiments.map((e) => (
                <tr>
                  <td>
                    <input
                      type="checkbox"
                      aria-label={`Compare ${label(e)}`}
                      data-testid={`pick-${label(e)}`}
                      checked={picked.includes(e.id)}
                      disabled={!picked.includes(e.id) && picked.length >= compareMax}
                      onChange={(ev) => toggle(e.id, ev.currentTarget.checked)}
                    />
                  </td>
                  <td>{label(e)}</td>
                  <td>{utc(e.createTime)}</td>
                  <td class="small">{entries(e.parameters)}</td>
                  <td class="small">{[e.trainingDataset, e.validationDataset, e.testDataset].filter((d) => d !== "").join(", ") || "—"}</td>
                  <td class="small">{entries(e.evaluations)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
        <div class="buttons">
          <button type="submit" class="primary" data-testid="compare" disabled={!canCompare}>
            Compare {picked.length} experiments
          </button>
          <span class="muted">
            Pick {compareMin} to {compareMax}.
          </span>
        </div>
      </form>
    </section>
  );
}

function entries(struct: Record<string, unknown> | undefined): string {
  return (
    Object.entries(struct ?? {})
      .map(([k, v]) => `${k}=${value(v)}`)
      .join(", ") || "—"
  );
}

/** 2-5 experiments side by side: every parameter, dataset and evaluation in a row, and a chart per metric. */
export function CompareExperimentsPage() {
  const { data, error, project, name, base } = useModelExperiments();
  const { query } = useLocation();
  const ids = (query.ids ?? "").split(",").filter((id) => id !== "");
  const byId = new Map((data?.experiments ?? []).map((e) => [e.id, e]));
  const chosen = ids.map((id) => byId.get(id)).filter((e): e is Experiment => e !== undefined);
  const missing = data ? ids.filter((id) => !byId.has(id)) : [];
  const problem =
    ids.length < compareMin || ids.length > compareMax
      ? new ShownErrorThrown({ code: "INVALID_ARGUMENT", message: `a comparison takes ${compareMin} to ${compareMax} experiments, got ${ids.length}` }).shown
      : missing.length > 0
        ? new ShownErrorThrown({ code: "NOT_FOUND", message: `${name} has no experiment ${missing.join(", ")}` }).shown
        : undefined;
  const keys = (pick: (e: Experiment) => Record<string, unknown> | undefined) => [...new Set(chosen.flatMap((e) => Object.keys(pick(e) ?? {})))].sort();
  const rows: { group: string; key: string; values: unknown[] }[] = [
    { group: "run", key: "created (UTC)", values: chosen.map((e) => utc(e.createTime)) },
    { group: "dataset", key: "training", values: chosen.map((e) => e.trainingDataset || undefined) },
    { group: "dataset", key: "validation", values: chosen.map((e) => e.validationDataset || undefined) },
    { group: "dataset", key: "test", values: chosen.map((e) => e.testDataset || undefined) },
    ...keys((e) => e.parameters).map((key) => ({ group: "parameter", key, values: chosen.map((e) => e.parameters?.[key]) })),
    ...keys((e) => e.evaluations).map((key) => ({ group: "evaluation", key, values: chosen.map((e) => e.evaluations?.[key]) })),
  ];
  const metrics = keys((e) => e.evaluations).filter((key) => chosen.some((e) => typeof e.evaluations?.[key] === "number"));
  return (
    <section>
      <PageTitle title={`Comparing experiments of ${project} / ${name}`}>
        <p>
          <a href={`${base}/experiments`}>All experiments</a> · <a href={base}>The model</a>
        </p>
      </PageTitle>
      <Unreachable error={error} what="Registry" />
      <ErrorBanner error={problem} testId="compare-error" />
      {chosen.length > 0 ? (
        <>
          <div class="table-wrap" tabIndex={0}>
            <table data-testid="comparison" class="comparison">
              <caption class="visually-hidden">The experiments side by side; rows whose values differ are marked</caption>
              <thead>
                <tr>
                  <th scope="col">what</th>
                  {chosen.map((e) => (
                    <th scope="col">{label(e)}</th>
                  ))}
                </tr>
              </thead>
              <tbody>
                {rows.map((row) => {
                  const shown = row.values.map(value);
                  const differs = new Set(shown).size > 1;
                  return (
                    <tr class={differs ? "differs" : undefined} data-differs={differs}>
                      <th scope="row">
                        <span class="muted">{row.group}</span> {row.key}
                        {differs ? <span class="visually-hidden"> (differs)</span> : null}
                      </th>
                      {shown.map((v) => (
                        <td>{v}</td>
                      ))}
                    </tr>
                  );
                })}
              </tbody>
            </table>
          </div>
          <h2>Metrics</h2>
          <div class="charts">
            {metrics.map((metric) => (
              <BarChart
                title={metric}
                labels={chosen.map(label)}
                values={chosen.map((e) => (typeof e.evaluations?.[metric] === "number" ? (e.evaluations[metric] as number) : null))}
                testId={`metric-${metric}`}
              />
            ))}
          </div>
        </>
      ) : null}
    </section>
  );
}
