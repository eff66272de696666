import type { HistoryPoint } from "./metrics-history.js";
import { serverErrorCodes } from "./scrape.js";

/**
 * The same chart series as the console's own history, read from a real Prometheus
 * (PROMETHEUS_URL) with its query_range API, over the metrics scrape.ts reads: a service's
 * application calls (its scrape job, as monitoring/prometheus.yml names them; health,
 * reflection and plain HTTP routes left out), a model's inferences per version on every
 * Predictor, a Proxy's calls per backend.
 */

/** Which chart: the whole service, a model by version, or a Proxy by backend. */
export type HistoryQuery = { of: "service"; service: string } | { of: "model"; model: string } | { of: "backends"; service: string };

/** One line of a chart. */
export interface ChartSeries {
  readonly label: string;
  readonly points: HistoryPoint[];
}

/** At most this many points per chart: the step grows with the range. */
const maxPoints = 300;

const quoted = (value: string) => `"${value.replace(/["\\]/g, (c) => `\\${c}`)}"`;

/** The PromQL pieces of a chart: the selector, the counter, how errors are told, the histogram, the grouping label. */
function promqlOf(query: HistoryQuery): { selector: string; requests: string; errors: string; histogram: string; by: string | undefined } {
  switch (query.of) {
    case "service":
      return {
        selector: `job=${quoted(query.service)},service!~"grpc\\\\..*|http"`,
        requests: "mlmesh_rpc_requests_total",
        errors: `code=~"${serverErrorCodes.join("|")}"`,
        histogram: "mlmesh_rpc_duration_seconds_bucket",
        by: undefined,
      };
    case "model":
      return {
        selector: `model=${quoted(query.model)}`,
        requests: "mlmesh_predictor_inference_requests_total",
        errors: 'outcome="failed"',
        histogram: "mlmesh_predictor_inference_duration_seconds_bucket",
        by: "version",
      };
    case "backends":
      return {
        selector: `job=${quoted(query.service)}`,
        requests: "mlmesh_proxy_backend_calls_total",
        errors: 'outcome!="ok"',
        histogram: "mlmesh_proxy_backend_call_duration_seconds_bucket",
        by: "backend",
      };
  }
}

export async function prometheusHistory(
  prometheusUrl: string,
  query: HistoryQuery,
  fromMs: number,
  toMs: number,
  timeoutMs = 5000,
): Promise<{ series: ChartSeries[]; stepSeconds: number }> {
  const stepSeconds = Math.max(5, Math.ceil((toMs - fromMs) / 1000 / maxPoints));
  const window = `${Math.max(2 * stepSeconds, 30)}s`;
  const { selector, requests, errors, histogram, by } = promqlOf(query);
  const group = by === undefined ? "" : ` by (${by})`;
  const quantile = (q: number) => `histogram_quantile(${q}, sum by (le${by === undefined ? "" : `, ${by}`}) (rate(${histogram}{${selector}}[${window}])))`;
  const queries = {
    rps: `sum${group} (rate(${requests}{${selector}}[${window}]))`,
    errors: `sum${group} (rate(${requests}{${selector},${errors}}[${window}]))`,
    p50: quantile(0.5),
    p99: quantile(0.99),
  };
  const results = Object.fromEntries(
    await Promise.all(
      Object.entries(queries).map(async ([name, promql]) => {
        const url = new URL("/api/v1/query_range", prometheusUrl);
        url.search = new URLSearchParams({ query: promql, start: String(fromMs / 1000), end: String(toMs / 1000), step: String(stepSeconds) }).toString();
        const response = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
        const body = (await response.json()) as { status: string; error?: string; data?: { result: { metric: Record<string, string>; values: [number, string][] }[] } };
        if (body.status !== "success") throw new Error(`Prometheus refused ${name}: ${body.error ?? response.status}`);
        // Per group (one group without a grouping label): time -> value.
        const byGroup = new Map<string, Map<number, number>>();
        for (const result of body.data?.result ?? []) {
          byGroup.set(by === undefined ? "" : (result.metric[by] ?? ""), new Map(result.values.map(([t, v]) => [Math.round(t * 1000), Number(v)])));
        }
        return [name, byGroup] as const;
      }),
    ),
  );
  const finite = (v: number | undefined) => (v === undefined || !Number.isFinite(v) ? null : v * 1000);
  const groups = by === undefined ? [""] : [...results.rps.keys()].sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
  const series = groups.map((group) => {
    const rps = results.rps.get(group) ?? new Map<number, number>();
    const points = [...rps.keys()]
      .sort((a, b) => a - b)
      .map((t) => {
        const r = rps.get(t) ?? 0;
        const e = results.errors.get(group)?.get(t) ?? 0;
        return { t, rps: r, errorRate: r > 0 ? e / r : 0, p50Ms: finite(results.p50.get(group)?.get(t)), p99Ms: finite(results.p99.get(group)?.get(t)) };
      });
    return { label: seriesLabel(query, group), points };
  });
  return { series, stepSeconds };
}

function seriesLabel(query: HistoryQuery, group: string): string {
  if (query.of === "service") return query.service;
  return query.of === "model" ? `v${group}` : group;
}
