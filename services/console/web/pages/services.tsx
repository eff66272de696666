import { HistoryCharts } from "../components/history-charts";
import { PageTitle } from "../components/page-title";
import { Unreachable } from "../components/status";
import { TimeChart } from "../components/time-chart";
import { fetchJson } from "../lib/errors";
import { ms, percent, rate, utc } from "../lib/format";
import { fetchLive } from "../lib/live";
import { authorization, useSettings } from "../lib/settings";
import { useLoad } from "../lib/use-load";

interface ServicesBody {
  readonly console: { version: string; commit: string; node: string; prometheusUrl: string | null };
  readonly services: {
    service: string;
    address: string;
    browserUrl: string | undefined;
    metricsUrl: string;
    answering: boolean;
    lastAnswerAt: number | undefined;
    health: string;
    readiness: { service: string; status: string } | undefined;
    build: { version: string; commit: string; node: string; tls: string; auth: string } | undefined;
  }[];
}

/** Every service the console follows: health and readiness, addresses, TLS and auth, build; live and recent load. */
export function ServicesPage() {
  const { token } = useSettings();
  const consoleServer = { name: "console's server", url: window.location.origin };
  const services = useLoad(
    (signal) => fetchJson<ServicesBody>("/services.json", { headers: authorization(token), signal, what: "the console's server" }),
    [token],
    { service: consoleServer, refreshMs: 2000, retryMs: 2000 },
  );
  const live = useLoad((signal) => fetchLive(token, signal), [token], { service: consoleServer, refreshMs: 2000 });
  return (
    <section>
      <PageTitle title="Services" />
      <Unreachable error={services.error} what="The console's server" />
      <div class="table-wrap" tabIndex={0}>
        <table data-testid="services">
          <caption class="visually-hidden">The services the console follows</caption>
          <thead>
            <tr>
              <th scope="col">service</th>
              <th scope="col">health</th>
              <th scope="col">ready</th>
              <th scope="col">address (from the console)</th>
              <th scope="col">URL (from this browser)</th>
              <th scope="col">TLS</th>
              <th scope="col">auth</th>
              <th scope="col">build</th>
              <th scope="col">last /metrics answer (UTC)</th>
            </tr>
          </thead>
          <tbody>
            {(services.data?.services ?? []).map((s) => (
              <tr data-testid={`service-${s.service}`} data-health={s.health}>
                <th scope="row">{s.service}</th>
                <td class={s.health === "SERVING" ? "ok" : "warn"}>{s.health === "UNREACHABLE" ? "unreachable" : s.health}</td>
                <td>{s.readiness?.status ?? "—"}</td>
                <td>{s.address}</td>
                <td class="small">{s.browserUrl ?? "—"}</td>
                <td>{s.build?.tls ?? "?"}</td>
                <td>{s.build?.auth ?? "?"}</td>
                <td class="small">{s.build ? `${s.build.version} (${s.build.commit}), Node ${s.build.node}` : "—"}</td>
                <td>{s.lastAnswerAt === undefined ? "never" : utc(new Date(s.lastAnswerAt))}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {services.data ? (
        <p class="muted small" data-testid="console-build">
          This console: {services.data.console.version} ({services.data.console.commit}), Node {services.data.console.node}; charts from{" "}
          {services.data.console.prometheusUrl ?? "its own history"}.
        </p>
      ) : null}
      <h2>Live</h2>
      <p class="muted">Requests per second, server-side errors and p99 latency (30 s window) over the last minutes, read by the console's server from each service's GET /metrics every 2 s.</p>
      <Unreachable error={live.error} what="The console's server" />
      <div class="table-wrap" tabIndex={0}>
        <table data-testid="live" class="live">
          <caption class="visually-hidden">Live load per service</caption>
          <thead>
            <tr>
              <th scope="col">service</th>
              <th scope="col">requests/s</th>
              <th scope="col">errors</th>
              <th scope="col">p99</th>
            </tr>
          </thead>
          <tbody>
            {(live.data?.services ?? []).map(({ service, points }) => {
              const last = points.at(-1);
              const times = points.map((p) => p.t);
              return (
                <tr>
                  <th scope="row">{service}</th>
                  <td>
                    <TimeChart sparkline title={`${service} requests`} unit="req/s" times={times} lines={[{ label: "req/s", values: points.map((p) => p.rps) }]} testId={`live-${service}-rps`} height={36} />
                    <span data-testid={`live-${service}-rps-value`}>{last ? `${rate(last.rps)}/s` : "—"}</span>
                  </td>
                  <td>
                    <TimeChart sparkline title={`${service} errors`} unit="%" times={times} lines={[{ label: "errors", values: points.map((p) => p.errorRate * 100) }]} testId={`live-${service}-errors`} height={36} />
                    <span>{last ? percent(last.errorRate) : "—"}</span>
                  </td>
                  <td>
                    <TimeChart sparkline title={`${service} p99`} unit="ms" times={times} lines={[{ label: "p99", values: points.map((p) => p.p99Ms) }]} testId={`live-${service}-p99`} height={36} />
                    <span data-testid={`live-${service}-p99-value`}>{ms(last?.p99Ms)}</span>
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      </div>
      <h2>History</h2>
      {(services.data?.services ?? []).map((s) => (
        <>
          <h3>{s.service}</h3>
          <HistoryCharts query={`service=${encodeURIComponent(s.service)}`} testId={`history-${s.service}`} title={s.service} />
        </>
      ))}
    </section>
  );
}
