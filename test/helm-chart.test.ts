// The Helm chart (deploy/helm/mlmesh), validated offline: there is no cluster and no container
// engine on this machine. `helm lint`; `helm template` with the default values and the two
// values files of deploy/helm/values/; every rendered object decoded strictly into its
// Kubernetes API type (deploy/helm/check, on k8s.io/api and the custom resources' own Go types)
// with the chart's rules. Each check is shown to fail, naming the object and the field, on a
// chart broken on purpose.
import { cp, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { repoRoot, run } from "./support/service-process.js";

const chart = join(repoRoot, "deploy/helm/mlmesh");
const helm = join(repoRoot, ".tools/bin/helm");
const scratch = await mkdtemp(join(tmpdir(), "mlmesh-helm-"));
const checker = join(scratch, "check");
afterAll(() => rm(scratch, { recursive: true, force: true }));

beforeAll(async () => {
  const build = await run("go", ["build", "-o", checker, "."], { cwd: join(repoRoot, "deploy/helm/check"), timeoutMs: 600_000 });
  expect(build.code, build.stderr).toBe(0);
}, 600_000);

/** `helm template` of `chartDir` with extra arguments; the rendered text, or helm's failure. */
async function render(chartDir: string, ...args: string[]) {
  return run(helm, ["template", "mlmesh", chartDir, "--namespace", "ml", ...kubeVersion, ...args]);
}

/** Renders and checks; the checker's result. */
async function check(chartDir: string, ...args: string[]) {
  const rendered = await render(chartDir, ...args);
  expect(rendered.code, rendered.stderr).toBe(0);
  const file = join(scratch, `rendered-${Math.random().toString(36).slice(2)}.yaml`);
  await writeFile(file, rendered.stdout);
  return { ...(await run(checker, [file])), rendered: rendered.stdout };
}

/** A copy of the chart with `from` replaced by `to` in one of its files. */
async function brokenChart(file: string, from: string, to: string): Promise<string> {
  const dir = join(scratch, `chart-${Math.random().toString(36).slice(2)}`);
  await cp(chart, dir, { recursive: true });
  const text = await readFile(join(dir, file), "utf8");
  expect(text, `${file} holds ${from}`).toContain(from);
  await writeFile(join(dir, file), text.replace(from, to));
  return dir;
}

/** The cluster version the chart is rendered for (a helm built from source assumes 1.20). */
const kubeVersion = ["--kube-version", "1.33.0"];

const valuesFiles = {
  default: [],
  "TLS and auth on, gateway, Prometheus Operator": ["-f", join(repoRoot, "deploy/helm/values/tls-auth.yaml")],
  "external PostgreSQL, two registry replicas on one S3 bucket": ["-f", join(repoRoot, "deploy/helm/values/external-postgresql.yaml")],
} as const;

describe("Helm chart", () => {
  it.each(Object.entries(valuesFiles))("passes helm lint --strict with the %s values", async (_name, args) => {
    const result = await run(helm, ["lint", "--strict", ...kubeVersion, chart, ...args]);
    expect(result.code, result.stdout + result.stderr).toBe(0);
    expect(result.stdout).toContain("1 chart(s) linted, 0 chart(s) failed");
  });

  it.each(Object.entries(valuesFiles))("renders valid Kubernetes objects with the %s values", async (_name, args) => {
    const result = await check(chart, ...args);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/^\d+ objects: valid/);
  }, 120_000);

  it("runs every service with probes on the health service, the Predictor ready only once its models are", async () => {
    const { rendered, code, stderr } = await check(chart);
    expect(code, stderr).toBe(0);
    for (const name of ["registry", "predictor", "batch", "batch-worker", "proxy", "monitor", "console"]) {
      expect(rendered).toContain(`kind: Deployment\nmetadata:\n  name: ${name}\n`);
    }
    // Liveness asks the whole server (""), readiness the service's own name.
    expect(rendered).toMatch(/readinessProbe:\n\s+grpc:\n\s+port: 50052\n\s+service: "mlmesh.predictor.v1.PredictorService"/);
    expect(rendered).toMatch(/livenessProbe:\n\s+grpc:\n\s+port: 50052\n\s+service: ""/);
    // The job runs in its workers, not in the batch service.
    expect(rendered).toMatch(/name: BATCH_RUN_JOB_IN_SERVICE\n\s+value: "false"/);
    expect(rendered).toContain("kind: HorizontalPodAutoscaler");
    expect(rendered).toContain("kind: StatefulSet"); // the bundled PostgreSQL
    // Over TLS the kubelet's gRPC probe cannot connect: `mlmesh health` asks instead.
    const tls = await check(chart, ...valuesFiles["TLS and auth on, gateway, Prometheus Operator"]);
    expect(tls.code, tls.stderr).toBe(0);
    expect(tls.rendered).toContain('command: ["node", "bin/mlmesh.js", "health", "127.0.0.1:50052", "mlmesh.predictor.v1.PredictorService"]');
    for (const kind of ["Certificate", "ServiceMonitor", "PrometheusRule", "NetworkPolicy"]) expect(tls.rendered).toContain(`kind: ${kind}\n`);
    expect(tls.rendered).toContain("name: mlmesh_rpc_in_flight");
    // The Prometheus Operator's kinds by default only where the cluster serves them.
    expect(rendered).not.toContain("kind: ServiceMonitor");
    const operator = await check(chart, "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor", "--api-versions", "monitoring.coreos.com/v1/PrometheusRule");
    expect(operator.code, operator.stderr).toBe(0);
    for (const kind of ["ServiceMonitor", "PrometheusRule"]) expect(operator.rendered).toContain(`kind: ${kind}\n`);
    const external = await check(chart, ...valuesFiles["external PostgreSQL, two registry replicas on one S3 bucket"]);
    expect(external.rendered).not.toContain("kind: StatefulSet");
    expect(external.rendered).toMatch(/name: ARTIFACT_S3_BUCKET\n\s+value: "mlmesh-artifacts"/);
    expect(external.rendered).toMatch(/name: DATABASE_URL\n\s+valueFrom:\n\s+secretKeyRef:\n\s+name: mlmesh-database/);
  }, 120_000);

  it("ships copies of envoy/envoy.yaml, its descriptor set and the alert rules that are identical to them", async () => {
    for (const [copy, original] of [
      ["files/envoy.yaml", "envoy/envoy.yaml"],
      ["files/mlmesh.binpb", "envoy/mlmesh.binpb"],
      ["files/alerts.yml", "monitoring/alerts.yml"],
    ]) {
      const same = Buffer.compare(await readFile(join(chart, copy)), await readFile(join(repoRoot, original))) === 0;
      expect(same, `${copy} differs from ${original}: run scripts/sync-helm-files.sh`).toBe(true);
    }
  });

  it("refuses a chart broken on purpose, naming the object and the field", async () => {
    const broken: [string, string, string, RegExp][] = [
      // A misspelt field of a core type, and of a custom resource.
      ["templates/_helpers.tpl", "revisionHistoryLimit: 5", "revisionHistoryLimits: 5", /Deployment\/registry: unknown field "spec.revisionHistoryLimits"/],
      ["templates/monitoring.yaml", "      interval: {{", "      intervall: {{", /ServiceMonitor\/mlmesh-mlmesh-registry: unknown field "spec.endpoints\[0\].intervall"/],
      // A field at the wrong place: a container's setting in the pod's security context.
      ["templates/database.yaml", "        runAsNonRoot: true\n        runAsUser: 999", "        readOnlyRootFilesystem: true\n        runAsUser: 999", /StatefulSet\/mlmesh-mlmesh-postgresql: unknown field "spec.template.spec.securityContext.readOnlyRootFilesystem"/],
      // The chart's own rules.
      ["templates/_helpers.tpl", "          readinessProbe:", "          readinessProbeOff:", /Deployment\/proxy: spec.template.spec.containers\[0\] \(proxy\).readinessProbe: missing/],
      ["templates/_helpers.tpl", "  type: ClusterIP\n  selector:", "  type: ClusterIP\n  selector:\n    tier: none", /Service\/monitor: spec.selector selects no pod the chart runs/],
      ["templates/predictor-hpa.yaml", "    name: predictor", "    name: predictors", /HorizontalPodAutoscaler\/predictor: spec.scaleTargetRef names Deployment\/predictors/],
    ];
    for (const [file, from, to, message] of broken) {
      const result = await check(await brokenChart(file, from, to), ...valuesFiles["TLS and auth on, gateway, Prometheus Operator"]);
      expect(result.code, to).not.toBe(0);
      expect(result.stderr, to).toMatch(message);
    }
    // Values that break the rules.
    const noResources = await check(chart, "--set", "proxy.resources=null");
    expect(noResources.code).not.toBe(0);
    expect(noResources.stderr).toMatch(/Deployment\/proxy: spec.template.spec.containers\[0\] \(proxy\).resources.requests: no cpu request/);
    const latestGateway = await check(chart, ...valuesFiles["TLS and auth on, gateway, Prometheus Operator"], "--set", "gateway.image=envoyproxy/envoy:latest");
    expect(latestGateway.code).not.toBe(0);
    expect(latestGateway.stderr).toMatch(/Deployment\/gateway: spec.template.spec.containers\[0\] \(envoy\).image: "envoyproxy\/envoy:latest" must name a version/);
    const rootPods = await check(chart, "--set", "podSecurityContext.runAsNonRoot=false");
    expect(rootPods.code).not.toBe(0);
    expect(rootPods.stderr).toMatch(/Deployment\/registry: spec.template.spec.securityContext.runAsNonRoot: must be true/);
    // What the chart refuses itself, before anything is rendered.
    const latest = await render(chart, "--set", "image.tag=latest");
    expect(latest.code).not.toBe(0);
    expect(latest.stderr).toContain('image.tag must name a version, not "latest"');
    const gatewayWithoutTls = await render(chart, "--set", "gateway.enabled=true");
    expect(gatewayWithoutTls.stderr).toContain("gateway.enabled needs tls.enabled");
    // helm lint on a chart without a version.
    const lint = await run(helm, ["lint", "--strict", ...kubeVersion, await brokenChart("Chart.yaml", "version: 0.1.0\n", "")]);
    expect(lint.code).not.toBe(0);
    expect(lint.stdout + lint.stderr).toMatch(/version is required/);
  }, 300_000);
});
