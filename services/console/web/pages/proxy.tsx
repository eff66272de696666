import { useState } from "preact/hooks";
import { durationMs } from "@bufbuild/protobuf/wkt";
import { CircuitState } from "../../../../gen/mlmesh/proxy/v1/proxy_pb.js";
import { Code } from "@connectrpc/connect";
import { statusName } from "../lib/errors";
import { HistoryCharts } from "../components/history-charts";
import { PageTitle } from "../components/page-title";
import { ErrorBanner, Unreachable } from "../components/status";
import { useClients } from "../lib/clients";
import { useSettings } from "../lib/settings";
import { useAction, useLoad } from "../lib/use-load";

/** The Proxy's backends: health, circuit breakers, per-backend latency; and a PredictLabel to try. */
export function ProxyPage() {
  const { proxy } = useClients();
  const { endpoints } = useSettings();
  const service = { name: "Proxy", url: endpoints.proxyUrl };
  const backends = useLoad((signal) => proxy.checkBackends({}, { signal }), [proxy], { service, refreshMs: 3000 });
  const action = useAction(service);
  const [rows, setRows] = useState("5.1, 3.5, 1.4, 0.2\n6.3, 3.3, 6.0, 2.5");
  const [answer, setAnswer] = useState<{ label: string; probability: number }[]>([]);
  const [answered, setAnswered] = useState("");
  return (
    <section>
      <PageTitle title="Proxy" />
      <Unreachable error={backends.error} what="Proxy" />
      <div class="table-wrap" tabIndex={0}>
        <table data-testid="backends">
          <caption class="visually-hidden">The Proxy's backend Predictors</caption>
          <thead>
            <tr>
              <th scope="col">backend</th>
              <th scope="col">address</th>
              <th scope="col">model</th>
              <th scope="col">serving</th>
              <th scope="col">health check</th>
              <th scope="col">circuit</th>
              <th scope="col">failures in a row</th>
            </tr>
          </thead>
          <tbody>
            {(backends.data?.backends ?? []).map((b) => (
              <tr>
                <td>{b.backend}</td>
                <td>{b.address}</td>
                <td>{b.model}</td>
                <td>{b.serving ? "yes" : "no"}</td>
                <td>{b.status ? `${statusName(b.status.code as number as Code | 0)}${b.status.message ? `: ${b.status.message}` : ""}, ${b.status.latency ? `${Number(durationMs(b.status.latency)).toFixed(1)} ms` : "—"}` : "—"}</td>
                <td class={b.circuit === CircuitState.CLOSED ? undefined : "warn"}>{CircuitState[b.circuit]}</td>
                <td>{b.consecutiveFailures}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <h2>Calls per backend</h2>
      <HistoryCharts query="service=proxy&by=backend" testId="proxy-history" title="Backends" />
      <h2>Predict labels through the Proxy</h2>
      <form
        data-testid="predict-label-form"
        onSubmit={(e) => {
          e.preventDefault();
          void action.run(async () => {
            setAnswer([]);
            const values = rows
              .split("\n")
              .map((l) => l.trim())
              .filter((l) => l !== "")
              .map((l) => ({ values: l.split(",").map((v) => (v.trim() === "" ? Number.NaN : Number(v))) }));
            const response = await proxy.predictLabel({ rows: values });
            setAnswer(response.predictions.map((p) => ({ label: p.label, probability: p.probability })));
            setAnswered(response.answeredBackends.join(", "));
            return undefined;
          });
        }}
      >
        <label for="proxy-rows">Rows, one per line, comma-separated features</label>
        <textarea id="proxy-rows" data-testid="proxy-rows" rows={3} value={rows} onInput={(e) => setRows(e.currentTarget.value)} />
        <div class="buttons">
          <button type="submit" class="primary" data-testid="predict-label" disabled={action.busy}>
            Predict labels
          </button>
        </div>
        <ErrorBanner error={action.error} testId="predict-label-error" />
      </form>
      {answer.length > 0 ? (
        <div class="table-wrap" tabIndex={0}>
          <table data-testid="label-predictions">
            <caption>Answered by {answered}</caption>
            <thead>
              <tr>
                <th scope="col">row</th>
                <th scope="col">label</th>
                <th scope="col">probability</th>
              </tr>
            </thead>
            <tbody>
              {answer.map((p, i) => (
                <tr>
                  <td>{i}</td>
                  <td>{p.label}</td>
                  <td>{p.probability.toFixed(4)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
    </section>
  );
}
