// ItemWatcher with a fake store: every stream's item polled in one query per tick.
import { describe, expect, it } from "vitest";
import type { Item } from "../services/batch/item-store.js";
import { ItemWatcher } from "../services/batch/item-watcher.js";

function fakeStore(fails?: Error) {
  const queries: string[][] = [];
  return {
    queries,
    store: {
      async getMany(ids: readonly string[]) {
        queries.push([...ids]);
        if (fails) throw fails;
        return ids.filter((id) => id !== "gone").map((id) => ({ id, state: "PENDING" }) as Item);
      },
    },
  };
}

describe("ItemWatcher", () => {
  it("polls every watched item in one query per tick, however many streams wait", async () => {
    const { store, queries } = fakeStore();
    const watcher = new ItemWatcher(store, 10);
    const signal = () => new AbortController().signal; // one per stream, as in the service
    const ids = Array.from({ length: 100 }, (_, i) => `item-${i % 20}`); // 5 streams per item
    const found = await Promise.all(ids.map((id) => watcher.nextPoll(id, signal())));
    expect(found.map((item) => item?.id)).toEqual(ids);
    expect(queries).toHaveLength(1);
    expect([...queries[0]].sort()).toEqual([...new Set(ids)].sort());
    expect(await watcher.nextPoll("gone", signal())).toBeUndefined();
    expect(queries).toHaveLength(2);
  });

  it("drops a waiter whose stream ended, and polls nothing for it", async () => {
    const { store, queries } = fakeStore();
    const watcher = new ItemWatcher(store, 10);
    const controller = new AbortController();
    const waiting = watcher.nextPoll("item-1", controller.signal);
    controller.abort(new Error("client went away"));
    await expect(waiting).rejects.toThrow("client went away");
    await new Promise((resolve) => setTimeout(resolve, 30));
    expect(queries).toEqual([]);
  });

  it("passes the store's error to every waiter of the tick", async () => {
    const { store } = fakeStore(new Error("database unreachable"));
    const watcher = new ItemWatcher(store, 10);
    const signal = new AbortController().signal;
    const results = await Promise.allSettled([watcher.nextPoll("a", signal), watcher.nextPoll("b", signal)]);
    expect(results.map((r) => r.status)).toEqual(["rejected", "rejected"]);
  });
});
