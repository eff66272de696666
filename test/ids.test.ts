// newId: UUIDv7 layout and strict order within one process.
import { describe, expect, it } from "vitest";
import { newId } from "../services/runtime/storage/ids.js";

describe("newId", () => {
  it("makes RFC 9562 version-7 UUIDs that strictly increase, even within one millisecond", () => {
    const ids = Array.from({ length: 10_000 }, () => newId());
    for (const id of ids) expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect([...ids].sort()).toEqual(ids);
    expect(new Set(ids).size).toBe(ids.length);
  });
});
