import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { useLocation, useRoute } from "preact-iso";
import { useState } from "preact/hooks";
import { AlertKind, AlertState, RecordSource, type Alert, type GetDriftReportResponse, type PredictionRecord } from "../../../../gen/mlmesh/monitor/v1/monitor_pb.js";
import { PageTitle } from "../components/page-title";
import { Unreachable } from "../components/status";
import { TimeChart, type Line } from "../components/time-chart";
import { useClients } from "../lib/clients";
import { ms, percent, utc } from "../lib/format";
import { useSettings } from "../lib/settings";
import { useLoad } from "../lib/use-load";

/** The ranges the page offers, as in the traffic charts. */
const ranges = [
  { label: "15 min", ms: 15 * 60_000 },
  { label: "1 h", ms: 3_600_000 },
  { label: "6 h", ms: 6 * 3_600_000 },
  { label: "24 h", ms: 24 * 3_600_000 },
];

const sourceNames: Record<number, string> = { [RecordSource.PREDICTOR]: "Predictor", [RecordSource.PROXY]: "Proxy", [RecordSource.BATCH]: "batch" };
const kindNames: Record<number, string> = { [AlertKind.FEATURE_DRIFT]: "feature drift", [AlertKind.LABEL_DRIFT]: "label drift", [AlertKind.OUTLIER_RATE]: "outlier rate" };

/**
 * A model's monitoring (the monitor service): requests, outlier rate and per-feature drift
 * window by window, its alerts, and its recent prediction records; a record's request id opens
 * what went in, what came out, and the records linked to it. `?request=<id>` deep-links a record.
 */
export function MonitoringPage() {
  const { params } = useRoute();
  const { query, route, path } = useLocation();
  const { monitor } = useClients();
  const { endpoints } = useSettings();
  const service = { name: "monitor", url: endpoints.monitorUrl };
  const name = params.model;
  const base = `/models/${encodeURIComponent(params.project)}/${encodeURIComponent(name)}`;
  const [rangeMs, setRangeMs] = useState(ranges[1].ms);
  const [outliersOnly, setOutliersOnly] = useState(false);
  const [lookup, setLookup] = useState("");
  const selected = query.request ?? "";
  const open = (requestId: string) => route(`${path}?request=${encodeURIComponent(requestId)}`);

  const drift = useLoad(
    async (signal) => monitor.getDriftReport({ model: name, startTime: timestampFromMs(Date.now() - rangeMs), includeOpenWindow: true }, { signal }),
    [monitor, name, rangeMs],
    { service, refreshMs: 5000 },
  );
  const alerts = useLoad(async (signal) => (await monitor.listAlerts({ model: name, pageSize: 50 }, { signal })).alerts, [monitor, name], { service, refreshMs: 5000 });
  const records = useLoad(
    async (signal) => (await monitor.listPredictions({ model: name, outliersOnly, pageSize: 25 }, { signal })).records,
    [monitor, name, outliersOnly],
    { service, refreshMs: 5000 },
  );

  return (
    <section>
      <PageTitle title={`Monitoring of ${params.project} / ${name}`}>
        <p>
          <a href={base}>Back to the model</a>
        </p>
      </PageTitle>
      <Unreachable error={drift.error} what="Monitor" />
      <div class="toolbar">
        <label>
          Range{" "}
          <select data-testid="monitor-range" value={rangeMs} onChange={(e) => setRangeMs(Number(e.currentTarget.value))}>
            {ranges.map((r) => (
              <option value={r.ms}>{r.label}</option>
            ))}
          </select>
        </label>
      </div>
      {drift.data ? <DriftCharts report={drift.data} /> : null}

      <h2 id="alerts">Alerts</h2>
      <Unreachable error={alerts.error} what="Monitor" />
      {alerts.data ? <AlertTable alerts={alerts.data} /> : null}

      <h2 id="records">Prediction records</h2>
      <form
        class="toolbar"
        onSubmit={(e) => {
          e.preventDefault();
          if (lookup.trim() !== "") open(lookup.trim());
        }}
      >
        <label>
          <input type="checkbox" data-testid="outliers-only" checked={outliersOnly} onChange={(e) => setOutliersOnly(e.currentTarget.checked)} /> outliers only
        </label>
        <label>
          Request id <input data-testid="request-lookup" value={lookup} onInput={(e) => setLookup(e.currentTarget.value)} size={38} />
        </label>
        <button type="submit">Find</button>
      </form>
      <Unreachable error={records.error} what="Monitor" />
      {records.data ? <RecordTable records={records.data} onOpen={open} /> : null}
      {selected !== "" ? <RecordDetail requestId={selected} onOpen={open} /> : null}
    </section>
  );
}

/** Requests and outlier rate, PSI per feature, and the predicted labels' shift, one point per window. */
function DriftCharts({ report }: { report: GetDriftReportResponse }) {
  const windows = report.windows;
  const times = windows.map((w) => timestampMs(w.startTime!));
  const features = windows.find((w) => w.features.length > 0)?.features.map((f) => f.feature) ?? [];
  const psi: Line[] = features.map((feature) => ({ label: feature, values: windows.map((w) => w.features.find((f) => f.feature === feature)?.psi ?? null) }));
  const meanShift: Line[] = features.map((feature) => ({ label: feature, values: windows.map((w) => w.features.find((f) => f.feature === feature)?.meanShift ?? null) }));
  const t = report.thresholds!;
  return (
    <div data-testid="drift-charts">
      <p class="muted">
        Version {report.version}, windows of {Number(report.window?.seconds ?? 0n)} s.{" "}
        {report.hasReference ? "Compared with the version's reference profile (its training data)." : "This version has no reference profile: counts only."} Alerts above PSI {t.psi}, KS {t.ks},
        mean shift {t.meanShift} sd, label shift {t.labelShift}, outlier rate {percent(t.outlierRate)}, with at least {String(t.minRows)} rows in a window.
      </p>
      <div class="charts">
        <TimeChart title="Requests per window" unit="requests" times={times} lines={[{ label: "requests", values: windows.map((w) => Number(w.requests)) }]} testId="monitor-requests" />
        <TimeChart title="Outlier rate" unit="%" times={times} lines={[{ label: "outlier rate", values: windows.map((w) => (w.scoredRows > 0n ? w.outlierRate * 100 : null)) }]} testId="monitor-outliers" />
        <TimeChart title="PSI per feature" unit="PSI" times={times} lines={psi} testId="monitor-psi" />
        <TimeChart title="Mean shift per feature" unit="sd" times={times} lines={meanShift} testId="monitor-mean-shift" />
        <TimeChart title="Predicted labels: largest share shift" unit="share" times={times} lines={[{ label: "label shift", values: windows.map((w) => w.labels?.maxShift ?? null) }]} testId="monitor-label-shift" />
      </div>
    </div>
  );
}

function AlertTable({ alerts }: { alerts: Alert[] }) {
  if (alerts.length === 0) return <p class="muted" data-testid="no-alerts">No alert was raised on this model.</p>;
  return (
    <div class="table-wrap" tabIndex={0}>
      <table data-testid="alerts">
        <caption class="visually-hidden">Alerts of this model, newest first</caption>
        <thead>
          <tr>
            <th scope="col">State</th>
            <th scope="col">Kind</th>
            <th scope="col">Version</th>
            <th scope="col">What</th>
            <th scope="col">Fired</th>
            <th scope="col">Resolved</th>
          </tr>
        </thead>
        <tbody>
          {alerts.map((a) => (
            <tr data-state={a.state === AlertState.FIRING ? "firing" : "resolved"}>
              <td>{a.state === AlertState.FIRING ? <strong class="bad">firing</strong> : "resolved"}</td>
              <td>{kindNames[a.kind] ?? "?"}</td>
              <td>{a.version}</td>
              <td class="small">{a.summary}</td>
              <td>{utc(a.fireTime)}</td>
              <td>{utc(a.resolveTime)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function RecordTable({ records, onOpen }: { records: PredictionRecord[]; onOpen: (requestId: string) => void }) {
  if (records.length === 0) return <p class="muted">No record of this model yet.</p>;
  return (
    <div class="table-wrap" tabIndex={0}>
      <table data-testid="records">
        <caption class="visually-hidden">The model's most recent prediction records</caption>
        <thead>
          <tr>
            <th scope="col">Time</th>
            <th scope="col">Request id</th>
            <th scope="col">Version</th>
            <th scope="col">From</th>
            <th scope="col">Rows</th>
            <th scope="col">Outliers</th>
            <th scope="col">Latency</th>
            <th scope="col">Status</th>
          </tr>
        </thead>
        <tbody>
          {records.map((r) => (
            <tr>
              <td>{utc(r.time)}</td>
              <td>
                <button type="button" class="link" data-testid="record-link" onClick={() => onOpen(r.requestId)}>
                  {r.requestId}
                </button>
              </td>
              <td>{r.version}</td>
              <td>
                {sourceNames[r.source] ?? "?"} {r.api}
              </td>
              <td>{r.rowCount}</td>
              <td>{r.outlierScores.filter((s) => s > 0).length}</td>
              <td>{ms(r.latency ? Number(r.latency.seconds) * 1000 + r.latency.nanos / 1e6 : null)}</td>
              <td>{r.status === 0 ? "OK" : `code ${r.status}`}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

/** One record in full, with its linked records (each opens in turn). */
function RecordDetail({ requestId, onOpen }: { requestId: string; onOpen: (requestId: string) => void }) {
  const { monitor } = useClients();
  const { endpoints } = useSettings();
  const found = useLoad(async (signal) => monitor.getPrediction({ requestId }, { signal }), [monitor, requestId], { service: { name: "monitor", url: endpoints.monitorUrl } });
  const record = found.data?.record;
  return (
    <section class="detail" data-testid="record-detail" aria-labelledby="record-title">
      <h3 id="record-title">Request {requestId}</h3>
      <Unreachable error={found.error} what="Monitor" />
      {record ? (
        <>
          <dl class="facts">
            <dt>Time</dt>
            <dd>{utc(record.time)}</dd>
            <dt>Model</dt>
            <dd>
              {record.model} v{record.version}
              {record.alias ? ` (@${record.alias})` : ""}
            </dd>
            <dt>From</dt>
            <dd>
              {sourceNames[record.source]} {record.api}
              {record.caller ? `, called by ${record.caller}` : ""}
            </dd>
            <dt>Trace</dt>
            <dd class="small">{record.traceId || "—"}</dd>
            <dt>Status</dt>
            <dd>{record.status === 0 ? "OK" : `code ${record.status}: ${record.error}`}</dd>
          </dl>
          <RecordRows record={record} />
          {found.data!.linked.length > 0 ? (
            <>
              <h4>Linked records</h4>
              <ul data-testid="linked-records">
                {found.data!.linked.map((l) => (
                  <li>
                    <button type="button" class="link" onClick={() => onOpen(l.requestId)}>
                      {l.requestId}
                    </button>{" "}
                    {sourceNames[l.source]} {l.model} v{l.version}
                  </li>
                ))}
              </ul>
            </>
          ) : null}
        </>
      ) : null}
    </section>
  );
}

/** A classifier's rows: features in, probabilities and outlier score out. */
function RecordRows({ record }: { record: PredictionRecord }) {
  const rows = record.inputs?.rows;
  const classification = record.outputs?.classification;
  if (rows === undefined || rows.width === 0) {
    const tensors = record.inputs?.tensors ?? [];
    return <p class="small">{tensors.map((t) => `${t.name} ${t.datatype}[${t.shape.join(", ")}]`).join("; ") || (record.inputs?.images.length ? `${record.inputs.images.length} image(s)` : "")}</p>;
  }
  const count = Math.floor(rows.values.length / rows.width);
  const labels = classification?.labels ?? [];
  return (
    <div class="table-wrap" tabIndex={0}>
      <table data-testid="record-rows">
        <caption class="visually-hidden">The record's rows</caption>
        <thead>
          <tr>
            <th scope="col">Row</th>
            <th scope="col">Features</th>
            {labels.map((l) => (
              <th scope="col">P({l})</th>
            ))}
            <th scope="col">Outlier score</th>
          </tr>
        </thead>
        <tbody>
          {Array.from({ length: Math.min(count, 100) }, (_, r) => (
            <tr>
              <td>{r}</td>
              <td>{Array.from(rows.values.slice(r * rows.width, (r + 1) * rows.width), (v) => Number(v.toPrecision(4))).join(", ")}</td>
              {labels.map((_, c) => (
                <td>{classification!.probabilities[r * labels.length + c]?.toFixed(4) ?? "—"}</td>
              ))}
              <td data-outlier={(record.outlierScores[r] ?? 0) > 0 ? "yes" : "no"}>{record.outlierScores[r] === undefined ? "—" : record.outlierScores[r].toFixed(3)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
