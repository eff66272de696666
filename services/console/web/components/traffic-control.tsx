import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { useState } from "preact/hooks";
import type { Model, ModelVersion } from "../../../../gen/mlmesh/registry/v1/registry_pb.js";
import { RolloutChange } from "../../../../gen/mlmesh/registry/v1/registry_pb.js";
import { RollbackRule, RolloutState, type Rollout } from "../../../../gen/mlmesh/registry/v1/rollout_pb.js";
import type { TrafficPolicy } from "../../../../gen/mlmesh/registry/v1/traffic_pb.js";
import { useClients } from "../lib/clients";
import { utc } from "../lib/format";
import { useSettings } from "../lib/settings";
import { useAction, useLoad } from "../lib/use-load";
import { ConfirmDialog } from "./confirm-dialog";
import { Done, ErrorBanner, Unreachable } from "./status";

/*
 * A model's traffic control: the policies on its aliases, what its versions answered and how its
 * shadows compared (the monitor's GetTrafficStats, last 15 minutes), and its canary rollouts,
 * started, paused, resumed, promoted and aborted from here (ADMIN).
 */

const statsWindowMs = 15 * 60_000;

/** A policy in one line: "v1 90 % · v2 10 %; sticky header x-user; route beta → v2; shadow v3 (10 %)". */
export function policyText(policy: TrafficPolicy | undefined): string {
  if (policy === undefined) return "none";
  const parts: string[] = [];
  if (policy.arms.length > 0) parts.push(policy.arms.map((a) => `v${a.version} ${a.weight} %`).join(" · "));
  if (policy.stickyKey) parts.push(`sticky ${policy.stickyKey.source.case} ${policy.stickyKey.source.value}`);
  for (const r of policy.routes) parts.push(`route ${r.name} → v${r.version}`);
  for (const s of policy.shadows) parts.push(`shadow v${s.version} (${s.samplePercent} %)`);
  return parts.join("; ");
}

/** The policies of the model's aliases, and its versions' traffic and shadow comparisons. */
export function TrafficPolicies({ model }: { model: Model }) {
  const { monitor } = useClients();
  const { endpoints } = useSettings();
  const stats = useLoad((signal) => monitor.getTrafficStats({ model: model.name, startTime: timestampFromMs(Date.now() - statsWindowMs) }, { signal }), [monitor, model.name], {
    service: { name: "monitor", url: endpoints.monitorUrl },
    refreshMs: 3000,
  });
  const ms = (d: { seconds: bigint; nanos: number } | undefined) => (d === undefined ? "—" : `${(Number(d.seconds) * 1000 + d.nanos / 1e6).toFixed(1)} ms`);
  return (
    <>
      {model.trafficPolicies.length === 0 ? (
        <p class="muted" data-testid="policies-none">
          No alias has a policy: each sends every call to the version it points at.
        </p>
      ) : (
        <ul data-testid="policies">
          {model.trafficPolicies.map((p) => (
            <li>
              <strong>{p.alias}</strong>: <span data-testid={`policy-${p.alias}`}>{policyText(p.policy)}</span>
            </li>
          ))}
        </ul>
      )}
      <h3>Calls per version, last 15 minutes</h3>
      <Unreachable error={stats.error} what="Monitor" />
      <div class="table-wrap" tabIndex={0}>
        <table data-testid="version-traffic">
          <caption class="visually-hidden">Calls recorded per version</caption>
          <thead>
            <tr>
              <th scope="col">version</th>
              <th scope="col">calls</th>
              <th scope="col">errors</th>
              <th scope="col">p50</th>
              <th scope="col">p99</th>
            </tr>
          </thead>
          <tbody>
            {(stats.data?.versions ?? []).map((v) => (
              <tr>
                <td>v{v.version}</td>
                <td>{String(v.requests)}</td>
                <td>{String(v.errors)}</td>
                <td>{ms(v.p50Latency)}</td>
                <td>{ms(v.p99Latency)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <h3>Shadow comparisons, last 15 minutes</h3>
      <div class="table-wrap" tabIndex={0}>
        <table data-testid="shadow-comparisons">
          <caption class="visually-hidden">Shadow versions compared with the version that answered</caption>
          <thead>
            <tr>
              <th scope="col">primary</th>
              <th scope="col">shadow</th>
              <th scope="col">copies</th>
              <th scope="col">failed</th>
              <th scope="col">label agreement</th>
              <th scope="col">mean |Δ probability|</th>
              <th scope="col">Δ latency</th>
            </tr>
          </thead>
          <tbody>
            {(stats.data?.shadows ?? []).map((s) => (
              <tr>
                <td>v{s.primaryVersion}</td>
                <td>v{s.shadowVersion}</td>
                <td>{String(s.calls)}</td>
                <td>{String(s.failed)}</td>
                <td>{s.rows === 0n ? "—" : `${((Number(s.agreeingRows) / Number(s.rows)) * 100).toFixed(1)} % of ${s.rows} rows`}</td>
                <td>{s.meanAbsDifference === undefined ? "—" : s.meanAbsDifference.toFixed(4)}</td>
                <td>{ms(s.meanLatencyDifference)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </>
  );
}

const stateNames: Readonly<Record<RolloutState, string>> = {
  [RolloutState.UNSPECIFIED]: "?",
  [RolloutState.RUNNING]: "running",
  [RolloutState.PAUSED]: "paused",
  [RolloutState.SUCCEEDED]: "succeeded",
  [RolloutState.ROLLED_BACK]: "rolled back",
  [RolloutState.ABORTED]: "aborted",
};

/** The model's rollouts, their controls, and the form that starts one. */
export function Rollouts({ model, versions, onChanged }: { model: Model; versions: ModelVersion[]; onChanged: () => void }) {
  const { registry } = useClients();
  const { endpoints } = useSettings();
  const service = { name: "registry", url: endpoints.registryUrl };
  const list = useLoad((signal) => registry.listRollouts({ modelId: model.id, pageSize: 20 }, { signal }), [registry, model.id], { service, refreshMs: 2000 });
  const action = useAction(service);
  const [asking, setAsking] = useState<{ rollout: Rollout; change: RolloutChange } | undefined>(undefined);
  const change = (rollout: Rollout, what: RolloutChange) =>
    void action.run(async () => {
      const changed = (await registry.changeRollout({ rolloutId: rollout.id, change: what })).rollout!;
      list.reload();
      onChanged();
      return `rollout of ${changed.alias} to v${changed.toVersion}: ${stateNames[changed.state]}`;
    });
  return (
    <>
      <StartRollout model={model} versions={versions} onStarted={() => {
          list.reload();
          onChanged();
        }} />
      <Unreachable error={list.error} what="Registry" />
      <div class="table-wrap" tabIndex={0}>
        <table data-testid="rollouts">
          <caption class="visually-hidden">Rollouts of the model, newest first</caption>
          <thead>
            <tr>
              <th scope="col">started (UTC)</th>
              <th scope="col">alias</th>
              <th scope="col">versions</th>
              <th scope="col">state</th>
              <th scope="col">steps</th>
              <th scope="col">last decision</th>
              <th scope="col">by hand</th>
            </tr>
          </thead>
          <tbody>
            {(list.data?.rollouts ?? []).map((r) => {
              const live = r.state === RolloutState.RUNNING || r.state === RolloutState.PAUSED;
              return (
                <tr data-testid={`rollout-${r.id}`}>
                  <td>{utc(r.createTime)}</td>
                  <td>{r.alias}</td>
                  <td>
                    v{r.fromVersion} → v{r.toVersion}
                  </td>
                  <td data-testid="rollout-state">{stateNames[r.state]}</td>
                  <td>{r.steps.map((s, i) => (i === r.step && live ? `[${s} %]` : `${s} %`)).join(" → ")}</td>
                  <td class="small">{r.lastDecision}</td>
                  <td>
                    {r.state === RolloutState.RUNNING ? (
                      <button type="button" onClick={() => change(r, RolloutChange.PAUSE)} disabled={action.busy}>
                        Pause
                      </button>
                    ) : null}
                    {r.state === RolloutState.PAUSED ? (
                      <button type="button" onClick={() => change(r, RolloutChange.RESUME)} disabled={action.busy}>
                        Resume
                      </button>
                    ) : null}
                    {live ? (
                      <>
                        {" "}
                        <button type="button" onClick={() => setAsking({ rollout: r, change: RolloutChange.PROMOTE })} disabled={action.busy}>
                          Promote…
                        </button>{" "}
                        <button type="button" onClick={() => setAsking({ rollout: r, change: RolloutChange.ABORT })} disabled={action.busy}>
                          Abort…
                        </button>
                      </>
                    ) : null}
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      </div>
      <ConfirmDialog
        open={asking !== undefined}
        title={asking?.change === RolloutChange.PROMOTE ? "Promote the candidate?" : "Abort the rollout?"}
        question={
          asking === undefined
            ? ""
            : asking.change === RolloutChange.PROMOTE
              ? `Move ${asking.rollout.alias} to version ${asking.rollout.toVersion} now, without waiting for the remaining steps?`
              : `Send every call of ${asking.rollout.alias} back to version ${asking.rollout.fromVersion} and stop the rollout?`
        }
        confirm={asking?.change === RolloutChange.PROMOTE ? "Promote" : "Abort"}
        onAnswer={(yes) => {
          const asked = asking;
          setAsking(undefined);
          if (yes && asked) change(asked.rollout, asked.change);
        }}
      />
      <ErrorBanner error={action.error} testId="rollout-error" />
      <Done text={action.done} testId="rollout-done" />
    </>
  );
}

/** The form that starts a canary rollout (the CLI's `mlmesh models canary`). */
function StartRollout({ model, versions, onStarted }: { model: Model; versions: ModelVersion[]; onStarted: () => void }) {
  const { registry } = useClients();
  const { endpoints } = useSettings();
  const action = useAction({ name: "registry", url: endpoints.registryUrl });
  const aliases = [...new Set(versions.flatMap((v) => v.aliases))].sort();
  const [alias, setAlias] = useState<string | undefined>(undefined);
  const [to, setTo] = useState<number | undefined>(undefined);
  const [steps, setSteps] = useState("10, 50, 100");
  const [intervalSeconds, setIntervalSeconds] = useState(60);
  const [minRequests, setMinRequests] = useState(100);
  const [maxErrorPercent, setMaxErrorPercent] = useState(1);
  const [minAgreementPercent, setMinAgreementPercent] = useState(0);
  const [onFailure, setOnFailure] = useState<"rollback" | "pause">("rollback");
  const chosenAlias = alias ?? aliases[0] ?? "";
  const target = to ?? versions.at(-1)?.version ?? 0;
  return (
    <form
      class="inline wrap"
      data-testid="rollout-form"
      onSubmit={(e) => {
        e.preventDefault();
        void action.run(async () => {
          const { rollout } = await registry.startRollout({
            modelId: model.id,
            alias: chosenAlias,
            toVersion: target,
            steps: steps.split(",").map((s) => Number(s.trim())),
            interval: { seconds: BigInt(intervalSeconds) },
            gates: { minRequests, maxErrorRate: maxErrorPercent / 100, minShadowAgreement: minAgreementPercent / 100 },
            rollbackRule: onFailure === "pause" ? RollbackRule.PAUSE : RollbackRule.ROLL_BACK,
          });
          onStarted();
          return `rollout of ${rollout!.alias} to v${rollout!.toVersion} started`;
        });
      }}
    >
      <label>
        Roll out{" "}
        <select data-testid="rollout-alias" value={chosenAlias} onChange={(e) => setAlias(e.currentTarget.value)}>
          {aliases.map((a) => (
            <option value={a}>{a}</option>
          ))}
        </select>
      </label>
      <label>
        to{" "}
        <select data-testid="rollout-version" value={target} onChange={(e) => setTo(Number(e.currentTarget.value))}>
          {versions.map((v) => (
            <option value={v.version}>v{v.version}</option>
          ))}
        </select>
      </label>
      <label>
        steps (%) <input data-testid="rollout-steps" size={12} value={steps} onInput={(e) => setSteps(e.currentTarget.value)} />
      </label>
      <label>
        every (s) <input data-testid="rollout-interval" type="number" min={1} max={86400} value={intervalSeconds} onInput={(e) => setIntervalSeconds(Number(e.currentTarget.value))} />
      </label>
      <label>
        at least{" "}
        <input data-testid="rollout-min-requests" type="number" min={0} value={minRequests} onInput={(e) => setMinRequests(Number(e.currentTarget.value))} /> calls
      </label>
      <label>
        errors at most{" "}
        <input data-testid="rollout-max-errors" type="number" min={0} max={100} step="0.1" value={maxErrorPercent} onInput={(e) => setMaxErrorPercent(Number(e.currentTarget.value))} /> %
      </label>
      <label>
        shadow agreement at least{" "}
        <input data-testid="rollout-min-agreement" type="number" min={0} max={100} step="0.1" value={minAgreementPercent} onInput={(e) => setMinAgreementPercent(Number(e.currentTarget.value))} /> %
      </label>
      <label>
        on a failed gate{" "}
        <select data-testid="rollout-on-failure" value={onFailure} onChange={(e) => setOnFailure(e.currentTarget.value as "rollback" | "pause")}>
          <option value="rollback">roll back</option>
          <option value="pause">pause</option>
        </select>
      </label>
      <button type="submit" data-testid="start-rollout" disabled={action.busy || chosenAlias === "" || target === 0}>
        Start rollout
      </button>
      <ErrorBanner error={action.error} testId="start-rollout-error" />
      <Done text={action.done} testId="start-rollout-done" />
    </form>
  );
}
