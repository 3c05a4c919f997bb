// The hardened informer against the real apiserver: paginated list + watch with label selector, add/update/
// delete delivery, owner index, inactivity watchdog → relist (changes made meanwhile are not lost), periodic
// resync, stop(). 410 Gone handling is unit-tested in operator/src/controller/informer.test.ts (a compacted
// resourceVersion cannot be produced deterministically through the API alone).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import * as k8s from "@kubernetes/client-node";
import { createLogger } from "../../common/src/logger.ts";
import { Informer, type InformerEvent } from "../../operator/src/controller/informer.ts";
import { eventually, loadKubeConfig, makeNamespace, type TestNamespace } from "../cluster/testenv.ts";

const kc = loadKubeConfig();
const core = kc.makeApiClient(k8s.CoreV1Api);
const logger = createLogger({ component: "informer-test" }, { level: "silent" });
let ns: TestNamespace;

const cm = (name: string, labels: Record<string, string>, data: Record<string, string> = {}): k8s.V1ConfigMap => ({
  metadata: { name, labels },
  data,
});

function informer(opts: { pageSize?: number; inactivityMs?: number; resyncMs?: number; restarts?: string[] }) {
  return new Informer<k8s.V1ConfigMap>({
    name: "configmaps",
    kc,
    path: `/api/v1/namespaces/${ns.name}/configmaps`,
    labelSelector: "informer-test=yes",
    list: (o) =>
      core.listNamespacedConfigMap({
        namespace: ns.name,
        labelSelector: o.labelSelector,
        limit: o.limit,
        _continue: o.continueToken,
      }),
    logger,
    pageSize: opts.pageSize,
    inactivityMs: opts.inactivityMs,
    resyncMs: opts.resyncMs ?? 0,
    backoffBaseMs: 100,
    onRestart: (_n, cause) => opts.restarts?.push(cause),
  });
}

before(async () => {
  ns = await makeNamespace(kc, "op-inf");
});
after(() => ns?.cleanup());

test("paginated list honours the label selector; watch delivers add/update/delete; index follows", async () => {
  for (let i = 0; i < 5; i++)
    await core.createNamespacedConfigMap({
      namespace: ns.name,
      body: cm(`a${i}`, { "informer-test": "yes", owner: i % 2 ? "odd" : "even" }),
    });
  await core.createNamespacedConfigMap({ namespace: ns.name, body: cm("other", { "informer-test": "no" }) });
  const inf = informer({ pageSize: 2 });
  inf.addIndex("owner", (o) => (o.metadata?.labels?.owner ? [o.metadata.labels.owner] : []));
  const events: Array<[InformerEvent, string]> = [];
  inf.on((ev, o) => events.push([ev, o.metadata!.name!]));
  await inf.start();
  try {
    assert.equal(inf.hasSynced(), true);
    assert.deepEqual(
      inf
        .list()
        .map((o) => o.metadata!.name)
        .sort(),
      ["a0", "a1", "a2", "a3", "a4"],
    );
    assert.equal(inf.byIndex("owner", "even").length, 3);
    await core.createNamespacedConfigMap({
      namespace: ns.name,
      body: cm("a5", { "informer-test": "yes", owner: "odd" }),
    });
    await core.patchNamespacedConfigMap(
      { namespace: ns.name, name: "a0", body: { data: { k: "v" } } },
      k8s.setHeaderOptions("Content-Type", k8s.PatchStrategy.MergePatch),
    );
    await core.deleteNamespacedConfigMap({ namespace: ns.name, name: "a1" });
    await eventually(
      () => inf.get(`${ns.name}/a1`) === undefined && inf.get(`${ns.name}/a0`)?.data?.k === "v" && inf.size === 5,
    );
    assert.ok(events.some(([e, n]) => e === "add" && n === "a5"));
    assert.ok(events.some(([e, n]) => e === "update" && n === "a0"));
    assert.ok(events.some(([e, n]) => e === "delete" && n === "a1"));
    assert.deepEqual(
      inf
        .byIndex("owner", "odd")
        .map((o) => o.metadata!.name)
        .sort(),
      ["a3", "a5"],
    );
  } finally {
    await inf.stop();
  }
});

test("watchdog: a watch without events for inactivityMs is restarted and the cache stays correct", async () => {
  const restarts: string[] = [];
  const inf = informer({ inactivityMs: 1500, restarts });
  await inf.start();
  try {
    await core.deleteNamespacedConfigMap({ namespace: ns.name, name: "a2" });
    await eventually(() => restarts.includes("watchdog"), { timeoutMs: 15_000, message: "watchdog fired" });
    await core.createNamespacedConfigMap({ namespace: ns.name, body: cm("c0", { "informer-test": "yes" }) });
    assert.equal(inf.get(`${ns.name}/a2`), undefined);
    await eventually(() => inf.get(`${ns.name}/c0`) !== undefined, {
      timeoutMs: 15_000,
      message: "events after restart",
    });
  } finally {
    await inf.stop();
  }
});

test("periodic resync re-delivers every cached object", async () => {
  const inf = informer({ resyncMs: 300 });
  const resynced = new Set<string>();
  inf.on((ev, o) => {
    if (ev === "resync") resynced.add(o.metadata!.name!);
  });
  await inf.start();
  try {
    await eventually(() => resynced.size === inf.size && inf.size > 0, { timeoutMs: 5000 });
  } finally {
    await inf.stop();
  }
});
