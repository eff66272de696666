import type { MessageInitShape } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { ItemState, type BatchJobService, type ItemSchema, type JobRunSchema } from "../../gen/mlmesh/batch/v1/batch_pb.js";
import type { PartialServiceImpl } from "../runtime/serve/registration.js";
import type { TraceSpan } from "../runtime/observability/tracing.js";
import { callIdentityOf } from "../runtime/serve/pipeline.js";
import { decodePageToken, defaultPageSize, encodePageToken } from "../runtime/serve/pagination.js";
import type { Item, ItemState as StoredState, ItemStore, JobRun } from "./item-store.js";
import type { JobRunOutcome } from "./job.js";
import { ItemWatcher } from "./item-watcher.js";
import { itemsRegistered, recordRun } from "./metrics.js";

/** How often the items of WatchItem streams are polled, all in one query (see ItemWatcher). */
const watchPollMs = 200;

const storedStates: Record<number, StoredState | undefined> = {
  [ItemState.PENDING]: "PENDING",
  [ItemState.PREDICTED]: "PREDICTED",
  [ItemState.FAILED]: "FAILED",
};

/**
 * The BatchJobService handlers. `runJob` runs the batch job once in this process (RunJobNow);
 * scheduled runs happen elsewhere (bree), and claims keep them from overlapping on items.
 */
export function createBatchService(deps: {
  store: ItemStore;
  intervalMs: number;
  runJob: (trace: TraceSpan | undefined) => Promise<JobRunOutcome>;
  /** Aborted when the server starts draining: watch streams end then. */
  stopping: () => AbortSignal;
}): PartialServiceImpl<typeof BatchJobService> {
  const { store } = deps;
  const watcher = new ItemWatcher(store, watchPollMs);
  let running = false;
  return {
    async registerItem(request) {
      const [item] = await store.register([request.item!.values]);
      itemsRegistered.inc();
      return { item: itemOut(item) };
    },
    async registerItems(request) {
      const items = await store.register(request.items.map((i) => i.values));
      itemsRegistered.inc(items.length);
      return { items: items.map(itemOut) };
    },
    async getItem(request) {
      return { item: itemOut(await store.get(request.itemId)) };
    },
    async listItems(request) {
      const page = await store.list(
        storedStates[request.state],
        request.pageSize || defaultPageSize,
        request.pageToken === "" ? undefined : decodePageToken(request.pageToken),
      );
      return { items: page.items.map(itemOut), nextPageToken: page.lastId ? encodePageToken(page.lastId) : "" };
    },
    async getJobStatus(request) {
      const [counts, runs] = await Promise.all([store.counts(), store.recentRuns(request.recentRuns || 10)]);
      return {
        interval: durationFromMs(deps.intervalMs),
        pendingItems: BigInt(counts.pending),
        predictedItems: BigInt(counts.predicted),
        failedItems: BigInt(counts.failed),
        recentRuns: runs.map(runOut),
      };
    },
    async runJobNow(_request, ctx) {
      if (running) throw new ConnectError("a RunJobNow run of this service is already under way", Code.FailedPrecondition);
      running = true;
      try {
        const { run, recordError } = await deps.runJob(callIdentityOf(ctx)?.span);
        recordRun(run);
        if (recordError !== undefined) {
          // The items' results are stored; the run's record, which GetJobStatus shows, is not.
          throw new ConnectError(`the run ended (${run.predicted} predicted, ${run.failed} failed) but its record could not be stored: ${recordError}`, Code.Unavailable);
        }
        return { run: runOut(run) };
      } finally {
        running = false;
      }
    },
    async *watchItem(request, ctx) {
      const signal = AbortSignal.any([ctx.signal, deps.stopping()]);
      let item = await store.get(request.itemId);
      let last = "";
      for (;;) {
        const seen = `${item.state}:${item.attempts}:${item.updatedAt.getTime()}`;
        if (seen !== last) {
          last = seen;
          yield { item: itemOut(item) };
        }
        if (item.state !== "PENDING") return;
        let next: Item | undefined;
        try {
          next = await watcher.nextPoll(item.id, signal);
        } catch (err) {
          if (signal.aborted) return; // the client went away or the server is stopping
          throw err;
        }
        if (next === undefined) throw new ConnectError(`item ${item.id} no longer exists`, Code.NotFound);
        item = next;
      }
    },
  };
}

function itemOut(item: Item): MessageInitShape<typeof ItemSchema> {
  return {
    id: item.id,
    values: item.values as number[],
    state: ItemState[item.state as keyof typeof ItemState] ?? ItemState.UNSPECIFIED,
    probabilities: (item.probabilities as number[] | null) ?? [],
    labels: (item.labels as string[] | null) ?? [],
    label: item.label,
    model: item.model,
    modelVersion: item.modelVersion,
    error: item.error,
    attempts: item.attempts,
    createTime: timestampOf(item.createdAt),
    updateTime: timestampOf(item.updatedAt),
    predictTime: item.predictedAt ? timestampFromDate(item.predictedAt) : undefined,
  };
}

let lastDate: Date | undefined;
let lastTimestamp: Timestamp | undefined;

/** A Date as a Timestamp, the last one kept: the items of one registration share their Date. */
function timestampOf(date: Date): Timestamp {
  if (date !== lastDate || lastTimestamp === undefined) {
    lastDate = date;
    lastTimestamp = timestampFromDate(date);
  }
  return lastTimestamp;
}

function runOut(run: JobRun): MessageInitShape<typeof JobRunSchema> {
  return {
    id: run.id,
    worker: run.worker,
    startTime: timestampFromDate(run.startedAt),
    endTime: run.endedAt ? timestampFromDate(run.endedAt) : undefined,
    claimed: run.claimed,
    predicted: run.predicted,
    failed: run.failed,
    released: run.released,
    duration: run.endedAt ? durationFromMs(run.endedAt.getTime() - run.startedAt.getTime()) : undefined,
    error: run.error,
  };
}
