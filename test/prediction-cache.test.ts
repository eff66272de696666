// The prediction cache: its rules with a fake model (keys, TTL, bytes, coalescing), then real
// Predictor processes sharing a real Redis (Debian's redis-server), which may stop or stall
// without failing or holding up a prediction.
import { spawn, type ChildProcess } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PredictorService } from "../gen/mlmesh/predictor/v1/predictor_pb.js";
import { createLogger } from "../services/runtime/observability/logger.js";
import { PredictionCache, type CacheCodec } from "../services/predictor/prediction-cache.js";
import type { LoadedVersion } from "../services/predictor/serving-table.js";
import { clientFor } from "./support/clients.js";
import { freePort, repoRoot, run, type ServiceProcess, startService } from "./support/service-process.js";

const codec: CacheCodec<string, { value: string }> = {
  key: (input) => [input],
  encode: (answer) => Buffer.from(answer.value),
  decode: (bytes) => ({ value: Buffer.from(bytes).toString() }),
};
const version = (sha256: string) => ({ name: "m", sha256 }) as LoadedVersion;
const logger = createLogger("cache-test", "silent");

describe("the prediction cache's rules", () => {
  it("answers a repeated input from memory, never across versions, and runs concurrent identical requests once", async () => {
    const cache = new PredictionCache({ models: new Set(["m"]), maxBytes: 1000, ttlMs: 60_000, redisUrl: undefined, redisTimeoutMs: 25 }, logger);
    let computed = 0;
    const compute = (value: string) => async () => {
      computed++;
      await new Promise((resolve) => setTimeout(resolve, 10));
      return { value };
    };
    const v1 = version("a".repeat(64));
    const first = await Promise.all([1, 2, 3].map(() => cache.through(v1, "k", codec, "x", compute("one"))));
    expect(first.map((a) => a.value)).toEqual(["one", "one", "one"]);
    expect(computed).toBe(1);
    expect((await cache.through(v1, "k", codec, "x", compute("again"))).value).toBe("one");
    // Another version (an alias moved): its own answer, even for the same input.
    expect((await cache.through(version("b".repeat(64)), "k", codec, "x", compute("two"))).value).toBe("two");
    // Another kind of request, or parts that would run together if joined: misses.
    expect((await cache.through(v1, "other", codec, "x", compute("three"))).value).toBe("three");
    expect(computed).toBe(3);
    expect(cache.enabledFor("m")).toBe(true);
    expect(cache.enabledFor("n")).toBe(false);
  });

  it("keeps at most max_bytes (least recently used out first) and forgets entries after their TTL", async () => {
    const cache = new PredictionCache({ models: "*", maxBytes: 10, ttlMs: 50, redisUrl: undefined, redisTimeoutMs: 25 }, logger);
    const v = version("c".repeat(64));
    let computed = 0;
    const get = (key: string) => cache.through(v, "k", codec, key, async () => (computed++, { value: "12345" }));
    await get("a");
    await get("b");
    await get("a"); // a is the most recent now
    await get("c"); // 15 bytes: b goes
    expect(computed).toBe(3);
    await get("a");
    expect(computed).toBe(3);
    await get("b");
    expect(computed).toBe(4);
    await new Promise((resolve) => setTimeout(resolve, 80));
    await get("b");
    expect(computed).toBe(5);
  });
});


async function startRedis(port: number): Promise<ChildProcess> {
  // Debian's redis-server (scripts/install-system-packages.sh); no persistence, loopback only;
  // DEBUG SLEEP (from loopback) stalls it on purpose.
  const redis = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--enable-debug-command", "local"], { stdio: "ignore" });
  for (let i = 0; i < 100; i++) {
    if ((await run("redis-cli", ["-p", String(port), "ping"])).stdout.trim() === "PONG") return redis;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error("redis-server did not start");
}

const lookups = async (predictor: ServiceProcess) => {
  const text = await (await fetch(`${predictor.baseUrl}/metrics`)).text();
  const count = (result: string) => Number(new RegExp(`^mlmesh_predictor_cache_lookups_total\\{model="digits_image",result="${result}"\\} (\\S+)$`, "m").exec(text)?.[1] ?? 0);
  return { hit: count("hit"), shared: count("shared_hit"), miss: count("miss") };
};

describe("Predictors sharing a prediction cache in Redis", () => {
  let redisPort: number;
  let redis: ChildProcess;
  const predictors: ServiceProcess[] = [];
  let image: Buffer;

  beforeAll(async () => {
    redisPort = await freePort();
    redis = await startRedis(redisPort);
    const env = { PREDICTOR_CACHE_MODELS: "digits_image", PREDICTOR_CACHE_REDIS_URL: `redis://127.0.0.1:${redisPort}`, PREDICTOR_CACHE_REDIS_TIMEOUT: "25ms" };
    for (let i = 0; i < 2; i++) predictors.push(await startService("predictor", env));
    const { digits_image: digits } = JSON.parse(await readFile(join(repoRoot, "test/fixtures/tensor-models.json"), "utf8")) as { digits_image: { levels: number; images: { pixels: number[] }[] } };
    image = await sharp(Buffer.from(digits.images[0].pixels.map((v) => Math.round((v * 255) / digits.levels))), { raw: { width: 8, height: 8, channels: 1 } }).png().toBuffer();
  });
  afterAll(async () => {
    await Promise.all(predictors.map((p) => p.stop()));
    redis?.kill();
  });

  it("answers a replica's repeat from its memory and the other replica from Redis, with the same answer", async () => {
    const [a, b] = predictors.map((p) => clientFor(PredictorService, p.baseUrl, "grpc"));
    // The replicas connect to Redis as they start: wait until a write from A is seen by B.
    const computed = await a.classifyImages({ model: "digits_image", images: [image] });
    expect(await a.classifyImages({ model: "digits_image", images: [image] })).toEqual(computed);
    expect(await lookups(predictors[0])).toMatchObject({ miss: 1, hit: 1 });
    await expect.poll(async () => (await b.classifyImages({ model: "digits_image", images: [image] }), (await lookups(predictors[1])).shared), { timeout: 10_000 }).toBeGreaterThanOrEqual(1);
    expect(await b.classifyImages({ model: "digits_image", images: [image] })).toEqual(computed);
    // Not for a model the cache is not on for.
    const predictor = clientFor(PredictorService, predictors[0].baseUrl, "grpc");
    await predictor.predict({ model: "iris_svc", rows: [{ values: [5.1, 3.5, 1.4, 0.2] }] });
    expect(await (await fetch(`${predictors[0].baseUrl}/metrics`)).text()).not.toMatch(/mlmesh_predictor_cache_lookups_total\{model="iris_svc"/);
  });

  it("computes instead while Redis stalls or is gone: no prediction fails or waits for it", async () => {
    const client = clientFor(PredictorService, predictors[1].baseUrl, "grpc");
    const other = await sharp(image).negate().png().toBuffer();
    // Redis blocked for 3 s: answers arrive while it sleeps, computed, not waited for.
    const sleeping = run("redis-cli", ["-p", String(redisPort), "debug", "sleep", "3"]);
    await new Promise((resolve) => setTimeout(resolve, 200));
    let answeredDuringSleep = 0;
    let sleepEnded = false;
    void sleeping.then(() => (sleepEnded = true));
    for (let i = 0; i < 5; i++) {
      const { results } = await client.classifyImages({ model: "digits_image", images: [i % 2 === 0 ? other : image], topK: 1 });
      expect(results[0].top).toHaveLength(1);
      if (!sleepEnded) answeredDuringSleep++;
    }
    expect(answeredDuringSleep).toBe(5);
    await sleeping;
    // Redis gone: still answered.
    redis.kill("SIGKILL");
    await new Promise((resolve) => setTimeout(resolve, 200));
    const fresh = await sharp(image).rotate(90).png().toBuffer();
    expect((await client.classifyImages({ model: "digits_image", images: [fresh] })).results).toHaveLength(1);
    const metrics = await (await fetch(`${predictors[1].baseUrl}/metrics`)).text();
    expect(Number(/^mlmesh_predictor_cache_redis_failures_total\{operation="get"\} (\S+)$/m.exec(metrics)?.[1] ?? 0)).toBeGreaterThan(0);
  });
});
