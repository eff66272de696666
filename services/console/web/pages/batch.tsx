import { durationMs } from "@bufbuild/protobuf/wkt";
import { useLocation, useRoute } from "preact-iso";
import { useEffect, useState } from "preact/hooks";
import { ItemState, type Item } from "../../../../gen/mlmesh/batch/v1/batch_pb.js";
import { PageTitle } from "../components/page-title";
import { Done, ErrorBanner, Unreachable } from "../components/status";
import { useClients } from "../lib/clients";
import { shownError, type ShownError } from "../lib/errors";
import { utc } from "../lib/format";
import { useSettings } from "../lib/settings";
import { useAction, useLoad } from "../lib/use-load";

const states = [
  { value: ItemState.UNSPECIFIED, label: "all" },
  { value: ItemState.PENDING, label: "pending" },
  { value: ItemState.PREDICTED, label: "predicted" },
  { value: ItemState.FAILED, label: "failed" },
];
const stateName = (s: ItemState) => ItemState[s];
const pageSize = 50;

/** The batch job: its schedule, backlog and runs, items by state, and registering new ones. */
export function BatchPage() {
  const { batch } = useClients();
  const { endpoints } = useSettings();
  const service = { name: "batch service", url: endpoints.batchUrl };
  const location = useLocation();
  const state = Number(location.query.state ?? 0) as ItemState;
  const [pageTokens, setPageTokens] = useState<string[]>([""]);
  const status = useLoad((signal) => batch.getJobStatus({ recentRuns: 20 }, { signal }), [batch], { service, refreshMs: 3000 });
  const items = useLoad((signal) => batch.listItems({ state, pageSize, pageToken: pageTokens.at(-1)! }, { signal }), [batch, state, pageTokens], { service, refreshMs: 5000 });
  const runNow = useAction(service);
  useEffect(() => setPageTokens([""]), [state]);
  return (
    <section>
      <PageTitle title="Batch" />
      <Unreachable error={status.error} what="Batch service" />
      {status.data ? (
        <p data-testid="job-counts">
          Every {Number(durationMs(status.data.interval!)) / 1000} s · {String(status.data.pendingItems)} pending, {String(status.data.predictedItems)} predicted,{" "}
          {String(status.data.failedItems)} failed
        </p>
      ) : null}
      <div class="buttons">
        <button
          type="button"
          data-testid="run-job"
          disabled={runNow.busy}
          onClick={() =>
            void runNow.run(async () => {
              const { run } = await batch.runJobNow({});
              status.reload();
              items.reload();
              return run ? `run ${run.id.slice(0, 8)}: ${run.predicted} predicted, ${run.failed} failed` : "ran";
            })
          }
        >
          Run the job now
        </button>
      </div>
      <ErrorBanner error={runNow.error} testId="run-error" />
      <Done text={runNow.done} testId="run-done" />

      <h2>Recent runs</h2>
      <div class="table-wrap" tabIndex={0}>
        <table data-testid="runs">
          <caption class="visually-hidden">The job's recent runs, newest first</caption>
          <thead>
            <tr>
              <th scope="col">started (UTC)</th>
              <th scope="col">worker</th>
              <th scope="col">outcome</th>
              <th scope="col">claimed</th>
              <th scope="col">predicted</th>
              <th scope="col">failed</th>
              <th scope="col">released</th>
              <th scope="col">took</th>
            </tr>
          </thead>
          <tbody>
            {(status.data?.recentRuns ?? []).map((r) => (
              <tr>
                <td>{utc(r.startTime)}</td>
                <td class="small">{r.worker}</td>
                <td>{r.endTime === undefined ? "running" : r.error ? `stopped: ${r.error}` : "ok"}</td>
                <td>{r.claimed}</td>
                <td>{r.predicted}</td>
                <td>{r.failed}</td>
                <td>{r.released}</td>
                <td>{r.duration ? `${Number(durationMs(r.duration)).toFixed(0)} ms` : "—"}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>

      <h2>Items</h2>
      <div class="toolbar">
        <label>
          State{" "}
          <select data-testid="item-state" value={state} onChange={(e) => location.route(`/batch${e.currentTarget.value === "0" ? "" : `?state=${e.currentTarget.value}`}`)}>
            {states.map((s) => (
              <option value={s.value}>{s.label}</option>
            ))}
          </select>
        </label>
        <button type="button" disabled={pageTokens.length === 1} onClick={() => setPageTokens(pageTokens.slice(0, -1))}>
          Previous page
        </button>
        <button type="button" disabled={!items.data?.nextPageToken} onClick={() => setPageTokens([...pageTokens, items.data!.nextPageToken])}>
          Next page
        </button>
      </div>
      <Unreachable error={items.error} what="Batch service" />
      <ItemTable items={items.data?.items ?? []} testId="items" />

      <h2>Register items</h2>
      <RegisterItems onRegistered={() => (status.reload(), items.reload())} />
    </section>
  );
}

function ItemTable({ items, testId }: { items: readonly Item[]; testId: string }) {
  return (
    <div class="table-wrap" tabIndex={0}>
      <table data-testid={testId}>
        <caption class="visually-hidden">Batch items</caption>
        <thead>
          <tr>
            <th scope="col">item</th>
            <th scope="col">state</th>
            <th scope="col">label</th>
            <th scope="col">detail</th>
            <th scope="col">registered (UTC)</th>
          </tr>
        </thead>
        <tbody>
          {items.map((item) => (
            <tr>
              <td>
                <a href={`/batch/items/${item.id}`}>{item.id.slice(0, 13)}…</a>
              </td>
              <td>{stateName(item.state)}</td>
              <td>{item.label}</td>
              <td class="small">{item.state === ItemState.FAILED ? item.error : item.probabilities.map((p) => p.toFixed(4)).join(" / ")}</td>
              <td>{utc(item.createTime)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

/** Registers rows as items and follows each with its WatchItem stream until the job decides it. */
function RegisterItems({ onRegistered }: { onRegistered: () => void }) {
  const { batch } = useClients();
  const { endpoints } = useSettings();
  const action = useAction({ name: "batch service", url: endpoints.batchUrl });
  const [text, setText] = useState("5.1, 3.5, 1.4, 0.2\n6.3, 3.3, 6.0, 2.5");
  const [followed, setFollowed] = useState<Item[]>([]);
  return (
    <form
      data-testid="register-form"
      onSubmit={(e) => {
        e.preventDefault();
        void action.run(async () => {
          setFollowed([]);
          // A value that is no number goes out as NaN, for the service to refuse precisely.
          const rows = text
            .split("\n")
            .map((l) => l.trim())
            .filter((l) => l !== "")
            .map((l) => ({ values: l.split(",").map((v) => (v.trim() === "" ? Number.NaN : Number(v))) }));
          const { items } = await batch.registerItems({ items: rows });
          const current = [...items];
          setFollowed([...current]);
          onRegistered();
          await Promise.all(
            items.map(async (item, i) => {
              for await (const update of batch.watchItem({ itemId: item.id })) {
                current[i] = update.item!;
                setFollowed([...current]);
              }
            }),
          );
          onRegistered();
          return `${items.length} items decided`;
        });
      }}
    >
      <label for="register-rows">Rows, one per line, comma-separated features</label>
      <textarea id="register-rows" data-testid="register-rows" rows={4} value={text} onInput={(e) => setText(e.currentTarget.value)} />
      <div class="buttons">
        <button type="submit" class="primary" data-testid="register" disabled={action.busy}>
          Register and follow
        </button>
      </div>
      <ErrorBanner error={action.error} testId="register-error" />
      <Done text={action.done} testId="register-done" />
      {followed.length > 0 ? <ItemTable items={followed} testId="followed-items" /> : null}
    </form>
  );
}

/** One item followed with its WatchItem stream: every state it passes through, as it happens. */
export function WatchItemPage() {
  const { params } = useRoute();
  const { batch } = useClients();
  const { endpoints } = useSettings();
  const [updates, setUpdates] = useState<{ at: Date; item: Item }[]>([]);
  const [error, setError] = useState<ShownError | undefined>(undefined);
  const [ended, setEnded] = useState(false);
  useEffect(() => {
    const controller = new AbortController();
    setUpdates([]);
    setError(undefined);
    setEnded(false);
    void (async () => {
      try {
        for await (const update of batch.watchItem({ itemId: params.id }, { signal: controller.signal })) {
          setUpdates((u) => [...u, { at: new Date(), item: update.item! }]);
        }
        setEnded(true);
      } catch (err) {
        if (!controller.signal.aborted) setError(shownError(err, { name: "batch service", url: endpoints.batchUrl }));
      }
    })();
    return () => controller.abort();
  }, [batch, params.id]);
  const last = updates.at(-1)?.item;
  return (
    <section>
      <PageTitle title={`Item ${params.id}`}>
        <p>
          <a href="/batch">All items</a>
        </p>
      </PageTitle>
      <ErrorBanner error={error} />
      <p role="status" data-testid="watch-state">
        {last ? `${stateName(last.state)}${ended ? " (final)" : ", watching"}` : error ? "" : "waiting for the first update"}
      </p>
      {last ? (
        <dl class="facts">
          <dt>values</dt>
          <dd>{last.values.map((v) => Number(v.toPrecision(6))).join(", ")}</dd>
          <dt>model</dt>
          <dd>{last.model ? `${last.model} v${last.modelVersion}` : "—"}</dd>
          <dt>label</dt>
          <dd data-testid="watch-label">{last.label || "—"}</dd>
          <dt>attempts</dt>
          <dd>{last.attempts}</dd>
          {last.error ? (
            <>
              <dt>error</dt>
              <dd>{last.error}</dd>
            </>
          ) : null}
        </dl>
      ) : null}
      <h2>Updates</h2>
      <ol data-testid="watch-updates">
        {updates.map((u) => (
          <li>
            {utc(u.at)} {stateName(u.item.state)}
          </li>
        ))}
      </ol>
    </section>
  );
}
