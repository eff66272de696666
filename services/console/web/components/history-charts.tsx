import { useState } from "preact/hooks";
import { fetchJson } from "../lib/errors";
import { authorization, useSettings } from "../lib/settings";
import { useLoad } from "../lib/use-load";
import { Unreachable } from "./status";
import { TimeChart, type Line } from "./time-chart";

interface HistoryPoint {
  readonly t: number;
  readonly rps: number;
  readonly errorRate: number;
  readonly p50Ms: number | null;
  readonly p99Ms: number | null;
}

interface HistoryBody {
  readonly source: "console" | "prometheus";
  readonly series: { label: string; points: HistoryPoint[] }[];
}

const ranges = [
  { minutes: 15, label: "15 min" },
  { minutes: 60, label: "1 h" },
  { minutes: 360, label: "6 h" },
  { minutes: 1440, label: "24 h" },
];

/**
 * Requests/s, server-side errors and p50/p99 latency of one subject over a chosen range, from
 * the console's GET /history.json (its own history of the services' /metrics, or Prometheus
 * when PROMETHEUS_URL is set). `query` is that endpoint's query: service=..., model=...,
 * service=...&by=backend. Short ranges refresh every 2 s, longer ones every 30 s.
 */
export function HistoryCharts({ query, testId, title }: { query: string; testId: string; title: string }) {
  const { token } = useSettings();
  const [minutes, setMinutes] = useState(15);
  const history = useLoad(
    (signal) => fetchJson<HistoryBody>(`/history.json?${query}&minutes=${minutes}`, { headers: authorization(token), signal, what: "the console's server" }),
    [query, minutes, token],
    { service: { name: "console's server", url: location.origin }, refreshMs: minutes <= 60 ? 2000 : 30_000 },
  );
  const series = history.data?.series ?? [];
  const times = [...new Set(series.flatMap((s) => s.points.map((p) => p.t)))].sort((a, b) => a - b);
  const at = (pick: (p: HistoryPoint) => number | null) => (s: HistoryBody["series"][number]) => {
    const byTime = new Map(s.points.map((p) => [p.t, pick(p)]));
    return times.map((t) => byTime.get(t) ?? null);
  };
  const lines = (pick: (p: HistoryPoint) => number | null, suffix = ""): Line[] => series.map((s) => ({ label: `${s.label}${suffix}`, values: at(pick)(s) }));
  const selectId = `${testId}-range`;
  return (
    <div class="history" data-testid={testId}>
      <div class="toolbar">
        <label for={selectId}>{title}: range</label>
        <select id={selectId} data-testid={selectId} value={minutes} onChange={(e) => setMinutes(Number(e.currentTarget.value))}>
          {ranges.map((r) => (
            <option value={r.minutes}>{r.label}</option>
          ))}
        </select>
        <span class="muted">{history.data ? `from ${history.data.source === "prometheus" ? "Prometheus" : "the console's own history"}` : ""}</span>
      </div>
      <Unreachable error={history.error} what="History" />
      {history.data && series.length === 0 ? <p class="muted">No traffic recorded yet.</p> : null}
      <div class="charts">
        <TimeChart title="Requests" unit="req/s" times={times} lines={lines((p) => p.rps)} testId={`${testId}-rps`} />
        <TimeChart title="Errors" unit="%" times={times} lines={lines((p) => p.errorRate * 100)} testId={`${testId}-errors`} />
        <TimeChart
          title="Latency p50 / p99"
          unit="ms"
          times={times}
          lines={[...lines((p) => p.p50Ms, " p50"), ...lines((p) => p.p99Ms, " p99")]}
          testId={`${testId}-latency`}
        />
      </div>
    </div>
  );
}
