// Reconciler.writeConcurrency: the configured value bounds how many pod create/delete calls one reconcile has in
// flight. The API clients are fakes that count in-flight calls; no cluster is involved.
import assert from "node:assert/strict";
import { test } from "node:test";
import type { V1Pod } from "@kubernetes/client-node";
import { createLogger } from "../../../common/src/logger.ts";
import type { CoreApi, CustomApi } from "../controller/kubeClient.ts";
import { makeTokenizerTraining, testContext } from "../testing/fixtures.ts";
import { forEachLimit } from "./apply.ts";
import type { Caches } from "./observe.ts";
import { DEFAULT_WRITE_CONCURRENCY, Reconciler, resourceVersionAtLeast, runKeyOf } from "./reconciler.ts";
import { StatusReader } from "./statusReader.ts";

const logger = createLogger({ component: "test" }, { level: "silent" });

/** Counts calls of the wrapped async function that are in flight at once. */
function inFlightCounter() {
  let now = 0;
  const c = { max: 0, calls: 0 };
  const wrap = async <T>(v: T): Promise<T> => {
    c.calls++;
    now++;
    c.max = Math.max(c.max, now);
    // Several macrotask turns, so that every worker that can start a call does so before any finishes.
    for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));
    now--;
    return v;
  };
  return { c, wrap };
}

/** The S3 Secret the fixture runs reference. */
const readNamespacedSecret = async () => ({
  data: {
    AWS_ACCESS_KEY_ID: Buffer.from("id").toString("base64"),
    AWS_SECRET_ACCESS_KEY: Buffer.from("key").toString("base64"),
  },
});

function fakeCache<T>(items: T[] = []) {
  return { get: (): unknown => undefined, list: () => items, byIndex: () => items };
}

/** A Reconciler over fake clients serving one raw run; pod writes go through `counter`. */
function harness(raw: Record<string, unknown>, writeConcurrency: number | undefined, ownedPods: V1Pod[] = []) {
  const counter = inFlightCounter();
  const core = {
    readNamespacedSecret,
    createNamespacedService: async () => ({}),
    createNamespacedPod: () => counter.wrap({}),
    deleteNamespacedPod: () => counter.wrap({}),
    deleteNamespacedService: async () => ({}),
    createNamespacedEvent: async () => ({}),
  } as unknown as CoreApi;
  const custom = {
    getNamespacedCustomObject: async () => structuredClone(raw),
    patchNamespacedCustomObjectStatus: async () => ({}),
  } as unknown as CustomApi;
  const reconciler = newReconciler(core, custom, fakeCache(), ownedPods, writeConcurrency);
  return { reconciler, counter: counter.c };
}

/** A Reconciler over fake clients; `runCache` is the TokenizerTraining informer cache. */
function newReconciler(
  core: CoreApi,
  custom: CustomApi,
  runCache: ReturnType<typeof fakeCache>,
  ownedPods: V1Pod[] = [],
  writeConcurrency?: number,
) {
  const caches = {
    runs: { TokenizerTraining: runCache, ARTraining: fakeCache(), SamplingJob: fakeCache() },
    pods: fakeCache(ownedPods),
    services: fakeCache(),
  } as unknown as Caches;
  return new Reconciler({
    core,
    custom,
    caches,
    ctx: testContext(),
    reader: new StatusReader(),
    logger,
    now: () => Date.parse("2026-01-01T00:00:10Z"),
    writeConcurrency,
  });
}

const key = runKeyOf("TokenizerTraining", "ns", "t");

test("writeConcurrency 3: a 10-node attempt's pods are created with at most 3 creates in flight", async () => {
  const raw = makeTokenizerTraining("t").nodes(10).raw_();
  const { reconciler, counter } = harness(raw, 3);
  await reconciler.reconcile(key);
  assert.equal(counter.calls, 10);
  assert.equal(counter.max, 3);
});

test("unset writeConcurrency: the default (16) applies, so 10 creates all run at once", async () => {
  assert.equal(DEFAULT_WRITE_CONCURRENCY, 16);
  const raw = makeTokenizerTraining("t").nodes(10).raw_();
  const { reconciler, counter } = harness(raw, undefined);
  await reconciler.reconcile(key);
  assert.equal(counter.calls, 10);
  assert.equal(counter.max, 10);
});

test("writeConcurrency 2: a deleted run's pods are deleted with at most 2 deletes in flight", async () => {
  const raw = makeTokenizerTraining("t").nodes(6).set("metadata.deletionTimestamp", "2026-01-01T00:00:05Z").raw_();
  const pods: V1Pod[] = Array.from({ length: 6 }, (_, i) => ({
    metadata: { name: `t-node-${i}-a1`, namespace: "ns" },
  }));
  const { reconciler, counter } = harness(raw, 2, pods);
  await reconciler.reconcile(key);
  assert.equal(counter.calls, 6);
  assert.equal(counter.max, 2);
});

test("writeConcurrency must be a positive integer; the error names the setting", () => {
  const raw = makeTokenizerTraining("t").raw_();
  for (const bad of [0, -1, 1.5, Number.NaN]) {
    assert.throws(() => harness(raw, bad), /writeConcurrency \(WRITE_CONCURRENCY\) must be a positive integer/);
  }
});

test("forEachLimit: never more than `limit` calls in flight, every item tried, first error thrown", async () => {
  for (const limit of [1, 4, 50]) {
    const { c, wrap } = inFlightCounter();
    const seen: number[] = [];
    await forEachLimit(
      Array.from({ length: 20 }, (_, i) => i),
      limit,
      async (i) => {
        seen.push(i);
        await wrap(i);
      },
    );
    assert.equal(c.calls, 20);
    assert.equal(c.max, Math.min(limit, 20));
    assert.deepEqual(
      seen.sort((a, b) => a - b),
      Array.from({ length: 20 }, (_, i) => i),
    );
  }
  let tried = 0;
  await assert.rejects(
    forEachLimit([1, 2, 3], 2, async (i) => {
      tried++;
      if (i === 2) throw new Error("boom");
    }),
    /boom/,
  );
  assert.equal(tried, 3);
  await assert.rejects(
    forEachLimit([1], 0, async () => {}),
    RangeError,
  );
});

test("resourceVersionAtLeast: decimal revisions compare as integers; anything else is not known", () => {
  assert.equal(resourceVersionAtLeast("12", undefined), true);
  assert.equal(resourceVersionAtLeast(undefined, undefined), true);
  assert.equal(resourceVersionAtLeast("12", "12"), true);
  assert.equal(resourceVersionAtLeast("100", "99"), true, "not a string comparison");
  assert.equal(resourceVersionAtLeast("99", "100"), false);
  assert.equal(resourceVersionAtLeast(undefined, "5"), false);
  assert.equal(resourceVersionAtLeast("abc", "5"), false);
  assert.equal(resourceVersionAtLeast("18446744073709551617", "18446744073709551616"), true, "beyond 2^53");
});

test("the run is planned from the informer cache, and read live while the cache is older than our last status write", async () => {
  let cachedRun: Record<string, unknown> | undefined;
  const live = { gets: 0 };
  let writeRv = "20";
  const core = {
    readNamespacedSecret,
    createNamespacedService: async () => ({}),
    createNamespacedPod: async () => ({}),
    createNamespacedEvent: async () => ({}),
  } as unknown as CoreApi;
  const custom = {
    getNamespacedCustomObject: async () => {
      live.gets++;
      return structuredClone(cachedRun);
    },
    patchNamespacedCustomObjectStatus: async () => ({ metadata: { resourceVersion: writeRv } }),
  } as unknown as CustomApi;
  const runCache = { get: () => cachedRun, list: () => [], byIndex: () => [] };
  const reconciler = newReconciler(core, custom, runCache);
  // First reconcile of a new run: the cache has it, so no GET; the status write returns resourceVersion 20.
  cachedRun = makeTokenizerTraining("t").set("metadata.resourceVersion", "19").raw_();
  await reconciler.reconcile(key);
  assert.equal(live.gets, 0, "planned from the cache");
  // The cache still holds 19 < 20 (our own write not yet seen): read live.
  await reconciler.reconcile(key);
  assert.equal(live.gets, 1, "stale cache → live read");
  // The cache has caught up: no GET again, and the remembered write is dropped.
  writeRv = "21";
  cachedRun = { ...cachedRun, metadata: { ...(cachedRun.metadata as object), resourceVersion: "20" } };
  await reconciler.reconcile(key);
  assert.equal(live.gets, 1, "fresh cache → no live read");
  // Not in the cache at all (e.g. deleted, or not listed yet): the live read decides.
  cachedRun = undefined;
  await reconciler.reconcile(key);
  assert.equal(live.gets, 2);
});
