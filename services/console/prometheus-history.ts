import type { HistoryPoint } from "./metrics-history.js";

/**
 * The same history points as metrics-history.ts, read from a real Prometheus (PROMETHEUS_URL)
 * with its query_range API: for a service, its scrape job of that name (as
 * monitoring/prometheus.yml names them), every application call (health, reflection and the
 * plain HTTP routes left out, as the live panel does).
 */

const selectorOf = (job: string) => `job="${job.replace(/["\\]/g, "")}",service!~"grpc\\\\..*|http"`;
const serverErrors = "Unavailable|Internal|Unknown|DeadlineExceeded|ResourceExhausted|DataLoss|Unimplemented";

/** At most this many points per chart: the step grows with the range. */
const maxPoints = 300;

export async function prometheusHistory(prometheusUrl: string, service: string, fromMs: number, toMs: number, timeoutMs = 5000): Promise<{ points: HistoryPoint[]; stepSeconds: number }> {
  const stepSeconds = Math.max(5, Math.ceil((toMs - fromMs) / 1000 / maxPoints));
  const window = `${Math.max(2 * stepSeconds, 30)}s`;
  const selector = selectorOf(service);
  const queries = {
    rps: `sum(rate(mlmesh_rpc_requests_total{${selector}}[${window}]))`,
    errors: `sum(rate(mlmesh_rpc_requests_total{${selector},code=~"${serverErrors}"}[${window}]))`,
    p50: `histogram_quantile(0.5, sum by (le) (rate(mlmesh_rpc_duration_seconds_bucket{${selector}}[${window}])))`,
    p99: `histogram_quantile(0.99, sum by (le) (rate(mlmesh_rpc_duration_seconds_bucket{${selector}}[${window}])))`,
  };
  const series = Object.fromEntries(
    await Promise.all(
      Object.entries(queries).map(async ([name, query]) => {
        const url = new URL("/api/v1/query_range", prometheusUrl);
        url.search = new URLSearchParams({ query, start: String(fromMs / 1000), end: String(toMs / 1000), step: String(stepSeconds) }).toString();
        const response = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
        const body = (await response.json()) as { status: string; error?: string; data?: { result: { values: [number, string][] }[] } };
        if (body.status !== "success") throw new Error(`Prometheus refused ${name}: ${body.error ?? response.status}`);
        return [name, new Map((body.data?.result[0]?.values ?? []).map(([t, v]) => [Math.round(t * 1000), Number(v)]))] as const;
      }),
    ),
  );
  const finite = (v: number | undefined) => (v === undefined || !Number.isFinite(v) ? null : v);
  const points = [...series.rps.keys()].sort((a, b) => a - b).map((t) => {
    const rps = series.rps.get(t) ?? 0;
    const errors = series.errors.get(t) ?? 0;
    const p50 = finite(series.p50.get(t));
    const p99 = finite(series.p99.get(t));
    return { t, rps, errorRate: rps > 0 ? errors / rps : 0, p50Ms: p50 === null ? null : p50 * 1000, p99Ms: p99 === null ? null : p99 * 1000 };
  });
  return { points, stepSeconds };
}
