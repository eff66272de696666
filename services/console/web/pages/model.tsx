import { useRoute } from "preact-iso";
import { useState } from "preact/hooks";
import { AliasChangeKind, SignatureKind, type Experiment, type Model, type ModelVersion } from "../../../../gen/mlmesh/registry/v1/registry_pb.js";
import { ConfirmDialog } from "../components/confirm-dialog";
import { HistoryCharts } from "../components/history-charts";
import { PageTitle } from "../components/page-title";
import { Done, ErrorBanner, Unreachable } from "../components/status";
import { policyText, Rollouts, TrafficPolicies } from "../components/traffic-control";
import { TryIt } from "../components/try-it";
import { PushVersion } from "../components/push-version";
import { AlertState } from "../../../../gen/mlmesh/monitor/v1/monitor_pb.js";
import { useClients } from "../lib/clients";
import { bytes, tensor, utc, value } from "../lib/format";
import { useSettings } from "../lib/settings";
import { useAction, useLoad } from "../lib/use-load";

/** Everything the registry knows of one model. */
interface ModelData {
  readonly model: Model;
  readonly versions: ModelVersion[];
  readonly experiments: Experiment[];
}

export function ModelPage() {
  const { params } = useRoute();
  const project = params.project;
  const name = params.model;
  const { registry, predictor } = useClients();
  const { endpoints } = useSettings();
  const registryService = { name: "registry", url: endpoints.registryUrl };
  const data = useLoad(
    async (signal): Promise<ModelData> => {
      const { model } = await registry.getModelByName({ projectName: project, name }, { signal });
      const [versions, experiments] = await Promise.all([
        registry.listModelVersions({ modelId: model!.id, pageSize: 1000 }, { signal }),
        registry.listExperiments({ filter: { case: "modelId", value: model!.id }, pageSize: 1000 }, { signal }),
      ]);
      return { model: model!, versions: versions.modelVersions, experiments: experiments.experiments };
    },
    [registry, project, name],
    { service: registryService, refreshMs: 5000 },
  );
  const served = useLoad(async (signal) => (await predictor.listModels({ pageSize: 1000 }, { signal })).models.filter((m) => m.name === name), [predictor, name], {
    service: { name: "Predictor", url: endpoints.predictorUrl },
    refreshMs: 5000,
  });
  const model = data.data?.model;
  const base = `/models/${encodeURIComponent(project)}/${encodeURIComponent(name)}`;

  return (
    <section aria-busy={data.loading && data.data === undefined}>
      <PageTitle title={`${project} / ${name}`}>
        <nav aria-label="On this page" class="subnav">
          <a href="#traffic">Traffic</a> <a href="#versions">Versions</a> <a href="#aliases">Aliases</a> <a href="#try">Try it</a> <a href="#push">Push a version</a> <a href="#policies">Policies</a> <a href="#rollouts">Rollouts</a> <a href={`${base}/monitoring`}>Monitoring</a>{" "}
          <a href={`${base}/experiments`} data-testid="experiments-link">
            Experiments ({data.data?.experiments.length ?? "…"})
          </a>
        </nav>
      </PageTitle>
      <Unreachable error={data.error} what="Registry" />
      {model ? <About model={model} onChanged={data.reload} /> : null}

      <h2 id="traffic">Traffic</h2>
      <p class="muted">Inference requests of each version on every Predictor the console follows.</p>
      <HistoryCharts query={`model=${encodeURIComponent(name)}`} testId="model-history" title="Traffic" />

      <h2 id="versions">Versions</h2>
      {data.data ? <Versions data={data.data} served={served.data ?? []} /> : null}
      {served.error ? <Unreachable error={served.error} what="Predictor" /> : null}

      <h2 id="aliases">Aliases</h2>
      {data.data ? <Aliases data={data.data} onMoved={data.reload} /> : null}

      <h2 id="try">Try it</h2>
      {served.data ? <TryIt name={name} served={served.data} /> : <p class="muted">Waiting for the Predictor.</p>}

      <h2 id="push">Push a version</h2>
      {data.data ? <PushVersion model={data.data.model} experiments={data.data.experiments} onPushed={data.reload} /> : null}

      <h2 id="monitoring">Monitoring</h2>
      <MonitoringSummary name={name} href={`${base}/monitoring`} />
      <h2 id="policies">Traffic policies</h2>
      {model ? <TrafficPolicies model={model} /> : null}
      <h2 id="rollouts">Rollouts</h2>
      {data.data ? <Rollouts model={data.data.model} versions={data.data.versions} onChanged={data.reload} /> : null}
    </section>
  );
}

/** The monitor's word on the model: alerts firing now, and the way to its monitoring page. */
function MonitoringSummary({ name, href }: { name: string; href: string }) {
  const { monitor } = useClients();
  const { endpoints } = useSettings();
  const firing = useLoad(async (signal) => (await monitor.listAlerts({ model: name, state: AlertState.FIRING, pageSize: 100 }, { signal })).alerts, [monitor, name], {
    service: { name: "monitor", url: endpoints.monitorUrl },
    refreshMs: 5000,
  });
  return (
    <>
      <p>
        <a href={href} data-testid="monitoring-link">
          Requests, outliers, drift and prediction records
        </a>
        {firing.data ? <span data-testid="firing-count"> · {firing.data.length === 0 ? "no alert firing" : <strong class="bad">{firing.data.length} alert(s) firing</strong>}</span> : null}
      </p>
      <Unreachable error={firing.error} what="Monitor" />
    </>
  );
}

/** The model's description and tags, edited in place (WRITER). */
function About({ model, onChanged }: { model: Model; onChanged: () => void }) {
  const { registry } = useClients();
  const { endpoints } = useSettings();
  const action = useAction({ name: "registry", url: endpoints.registryUrl });
  const [description, setDescription] = useState<string | undefined>(undefined);
  const [tagKey, setTagKey] = useState("");
  const [tagValue, setTagValue] = useState("");
  const write = (change: () => Promise<string>) =>
    void action.run(async () => {
      const done = await change();
      onChanged();
      return done;
    });
  return (
    <div class="about">
      <form
        data-testid="description-form"
        onSubmit={(e) => {
          e.preventDefault();
          write(async () => {
            await registry.setModelDescription({ modelId: model.id, description: description ?? model.description });
            setDescription(undefined);
            return "description saved";
          });
        }}
      >
        <label for="model-description">Description</label>
        <textarea id="model-description" data-testid="model-description" rows={2} value={description ?? model.description} onInput={(e) => setDescription(e.currentTarget.value)} />
        <button type="submit" disabled={action.busy || description === undefined}>
          Save description
        </button>
      </form>
      <div>
        <h3 id="tags-title">Tags</h3>
        <ul class="tags" aria-labelledby="tags-title" data-testid="model-tags">
          {Object.entries(model.tags).map(([key, v]) => (
            <li>
              <code>
                {key}={v}
              </code>{" "}
              <button type="button" class="link" aria-label={`Remove tag ${key}`} onClick={() => write(async () => (await registry.deleteModelTag({ modelId: model.id, key }), `tag ${key} removed`))}>
                remove
              </button>
            </li>
          ))}
        </ul>
        <form
          class="inline"
          data-testid="tag-form"
          onSubmit={(e) => {
            e.preventDefault();
            write(async () => {
              await registry.setModelTag({ modelId: model.id, key: tagKey.trim(), value: tagValue });
              setTagKey("");
              setTagValue("");
              return `tag ${tagKey.trim()} set`;
            });
          }}
        >
          <label>
            Key <input data-testid="tag-key" required size={12} value={tagKey} onInput={(e) => setTagKey(e.currentTarget.value)} />
          </label>
          <label>
            Value <input data-testid="tag-value" size={16} value={tagValue} onInput={(e) => setTagValue(e.currentTarget.value)} />
          </label>
          <button type="submit" disabled={action.busy}>
            Set tag
          </button>
        </form>
      </div>
      <ErrorBanner error={action.error} testId="about-error" />
      <Done text={action.done} testId="about-done" />
    </div>
  );
}

function Versions({ data, served }: { data: ModelData; served: { version: number; aliases: string[]; metrics: Record<string, number> }[] }) {
  const experiments = new Map(data.experiments.map((e) => [e.id, e]));
  return (
    <div class="table-wrap" tabIndex={0}>
      <table data-testid="versions">
        <caption class="visually-hidden">Versions of the model</caption>
        <thead>
          <tr>
            <th scope="col">version</th>
            <th scope="col">aliases</th>
            <th scope="col">pushed by</th>
            <th scope="col">created (UTC)</th>
            <th scope="col">model.onnx</th>
            <th scope="col">signature</th>
            <th scope="col">metrics</th>
            <th scope="col">this Predictor</th>
            <th scope="col">served by</th>
          </tr>
        </thead>
        <tbody>
          {data.versions.map((v) => {
            const onnx = v.files.find((f) => f.name === "model.onnx");
            const here = served.find((m) => m.version === v.version);
            const experiment = experiments.get(v.experimentId);
            const metrics = experiment?.evaluations ?? here?.metrics ?? {};
            return (
              <tr>
                <td>v{v.version}</td>
                <td>{v.aliases.join(", ") || "—"}</td>
                <td>{v.creator || "—"}</td>
                <td>{utc(v.createTime)}</td>
                <td class="small">
                  {onnx ? (
                    <>
                      <code title={onnx.sha256}>{onnx.sha256.slice(0, 12)}</code> {bytes(onnx.sizeBytes)}
                    </>
                  ) : (
                    "(no artifact)"
                  )}
                </td>
                <td class="small">
                  {v.signature
                    ? `${(v.signature.inputs.length > 0 ? v.signature.inputs : v.signature.input ? [v.signature.input] : []).map(tensor).join(", ")} → ${
                        v.signature.kind === SignatureKind.TENSOR ? v.signature.outputs.map(tensor).join(", ") : `${v.signature.labels.length} labels`
                      }`
                    : "—"}
                </td>
                <td class="small">
                  {Object.entries(metrics)
                    .map(([k, m]) => `${k} ${value(m)}`)
                    .join(", ") || "—"}
                </td>
                <td>{here ? here.aliases.join(", ") || "loaded" : "—"}</td>
                <td class="small">{v.serving.map((s) => s.predictor).join(", ") || "—"}</td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </div>
  );
}

/** The aliases, moving one (ADMIN, after a confirmation), and their history. */
function Aliases({ data, onMoved }: { data: ModelData; onMoved: () => void }) {
  const { registry } = useClients();
  const { endpoints } = useSettings();
  const action = useAction({ name: "registry", url: endpoints.registryUrl });
  const [alias, setAlias] = useState("production");
  const [target, setTarget] = useState<number | undefined>(undefined);
  const [asking, setAsking] = useState(false);
  const history = useLoad((signal) => registry.listAliasHistory({ modelId: data.model.id, pageSize: 50 }, { signal }), [registry, data], {
    service: { name: "registry", url: endpoints.registryUrl },
  });
  const version = target ?? data.versions.at(-1)?.version ?? 0;
  const current = data.versions.find((v) => v.aliases.includes(alias.trim()));
  const question = `Move ${alias.trim()} of ${data.model.name} from ${current ? `version ${current.version}` : "nothing yet"} to version ${version}? Every Predictor serving it switches within seconds.`;
  return (
    <>
      <form
        class="inline"
        data-testid="alias-form"
        onSubmit={(e) => {
          e.preventDefault();
          setAsking(true);
        }}
      >
        <label>
          Alias <input data-testid="alias-name" required size={12} value={alias} onInput={(e) => setAlias(e.currentTarget.value)} />
        </label>
        <label>
          to version{" "}
          <select data-testid="alias-version" value={version} onChange={(e) => setTarget(Number(e.currentTarget.value))}>
            {data.versions.map((v) => (
              <option value={v.version}>v{v.version}</option>
            ))}
          </select>
        </label>
        <button type="submit" data-testid="move-alias" disabled={action.busy || version === 0}>
          Move alias…
        </button>
      </form>
      <ConfirmDialog
        open={asking}
        title="Move the alias?"
        question={question}
        confirm="Move it"
        onAnswer={(yes) => {
          setAsking(false);
          if (!yes) {
            action.reset();
            return;
          }
          void action.run(async () => {
            const moved = await registry.setModelVersionAlias({ modelId: data.model.id, alias: alias.trim(), version });
            onMoved();
            history.reload();
            return `${alias.trim()} → version ${moved.modelVersion!.version}`;
          });
        }}
      />
      <ErrorBanner error={action.error} testId="alias-error" />
      <Done text={action.done} testId="alias-done" />
      <h3>History</h3>
      <Unreachable error={history.error} what="Registry" />
      <div class="table-wrap" tabIndex={0}>
        <table data-testid="alias-history">
          <caption class="visually-hidden">Moves of the model's aliases, newest first</caption>
          <thead>
            <tr>
              <th scope="col">when (UTC)</th>
              <th scope="col">alias</th>
              <th scope="col">from</th>
              <th scope="col">to</th>
              <th scope="col">by</th>
              <th scope="col">why</th>
            </tr>
          </thead>
          <tbody>
            {(history.data?.changes ?? []).map((c) => {
              const policyChange = c.kind === AliasChangeKind.POLICY_SET || c.kind === AliasChangeKind.POLICY_DELETED;
              return (
                <tr>
                  <td>{utc(c.changeTime)}</td>
                  <td>{c.alias}</td>
                  <td>{policyChange ? `policy: ${policyText(c.previousPolicy)}` : c.previousVersion === 0 ? "—" : `v${c.previousVersion}`}</td>
                  <td>{policyChange ? `policy: ${policyText(c.policy)}` : c.version === 0 ? "(deleted)" : `v${c.version}`}</td>
                  <td>{c.actor}</td>
                  <td class="small">{c.reason}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
      </div>
    </>
  );
}
