// Informer protocol handling that a real apiserver cannot be made to produce on demand: a watch answered with
// an ERROR 410 (Expired) event or an HTTP 410 must relist (and emit the deletes missed meanwhile); an HTTP
// 500 on list must be retried with backoff. A scripted local HTTP endpoint plays the list/watch server.
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { test } from "node:test";
import { KubeConfig, type V1ConfigMap, type V1ConfigMapList } from "@kubernetes/client-node";
import { createLogger } from "../../../common/src/logger.ts";
import { Informer } from "./informer.ts";

const logger = createLogger({ component: "informer-unit" }, { level: "silent" });
const cm = (name: string, rv: string): V1ConfigMap => ({ metadata: { name, namespace: "ns", resourceVersion: rv } });

interface Script {
  lists: Array<{ status?: number; items?: V1ConfigMap[]; rv?: string }>;
  watches: Array<{ status?: number; lines?: unknown[] }>;
}

async function serve(script: Script) {
  const seen = { lists: 0, watches: [] as string[] };
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    if (url.searchParams.get("watch") === "true") {
      seen.watches.push(url.searchParams.get("resourceVersion") ?? "");
      const w = script.watches.shift() ?? { lines: [] };
      if (w.status && w.status !== 200) {
        res.writeHead(w.status).end("{}");
        return;
      }
      res.writeHead(200, { "content-type": "application/json" });
      for (const l of w.lines ?? []) res.write(`${JSON.stringify(l)}\n`);
      // Keep the last (scripted-empty) watch open; end the others so the informer reconnects.
      if (script.watches.length === 0 && (w.lines ?? []).length === 0) return;
      res.end();
      return;
    }
    seen.lists++;
    const l = script.lists.shift() ?? script.lists[0] ?? { items: [] };
    if (l.status && l.status !== 200) {
      res.writeHead(l.status).end("{}");
      return;
    }
    res.writeHead(200, { "content-type": "application/json" });
    res.end(
      JSON.stringify({
        apiVersion: "v1",
        kind: "ConfigMapList",
        metadata: { resourceVersion: l.rv ?? "10" },
        items: l.items ?? [],
      }),
    );
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as AddressInfo).port;
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: "c", server: `http://127.0.0.1:${port}`, skipTLSVerify: true }],
    users: [{ name: "u" }],
    contexts: [{ name: "x", cluster: "c", user: "u" }],
    currentContext: "x",
  });
  return {
    kc,
    seen,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

async function listVia(kc: KubeConfig): Promise<V1ConfigMapList> {
  const { CoreV1Api } = await import("@kubernetes/client-node");
  return kc.makeApiClient(CoreV1Api).listNamespacedConfigMap({ namespace: "ns" });
}

const until = async (f: () => boolean, ms = 5000) => {
  const end = Date.now() + ms;
  while (!f()) {
    if (Date.now() > end) throw new Error("timeout");
    await new Promise((r) => setTimeout(r, 20));
  }
};

test("watch ERROR 410 (Expired) → relist from scratch; deletes missed while disconnected are emitted", async () => {
  const srv = await serve({
    lists: [
      { items: [cm("a", "5"), cm("b", "6")], rv: "10" },
      { items: [cm("b", "6"), cm("c", "12")], rv: "20" },
    ],
    watches: [
      {
        lines: [
          {
            type: "ERROR",
            object: { kind: "Status", code: 410, reason: "Expired", message: "too old resource version" },
          },
        ],
      },
      { lines: [] },
    ],
  });
  const restarts: string[] = [];
  const events: string[] = [];
  const inf = new Informer<V1ConfigMap>({
    name: "cm",
    kc: srv.kc,
    path: "/api/v1/namespaces/ns/configmaps",
    list: () => listVia(srv.kc),
    logger,
    resyncMs: 0,
    onRestart: (_n, c) => restarts.push(c),
  });
  inf.on((ev, o) => events.push(`${ev}:${o.metadata!.name}`));
  try {
    await inf.start();
    // The relist fills the cache before the second watch is opened: wait for both, not just the cache.
    await until(() => srv.seen.lists === 2 && inf.get("ns/c") !== undefined && srv.seen.watches.length === 2);
    assert.deepEqual(restarts, ["gone"]);
    assert.deepEqual(srv.seen.watches, ["10", "20"], "second watch starts from the relisted resourceVersion");
    assert.equal(inf.get("ns/a"), undefined);
    assert.ok(events.includes("delete:a") && events.includes("add:c"), events.join(","));
    assert.ok(!events.includes("update:b"), "unchanged objects are not re-delivered as updates");
  } finally {
    await inf.stop();
    await srv.close();
  }
});

test("HTTP 410 on watch and HTTP 500 on list: retried with backoff until the cache converges", async () => {
  const srv = await serve({
    lists: [{ items: [cm("a", "5")], rv: "10" }, { status: 500 }, { items: [cm("z", "30")], rv: "30" }],
    watches: [{ status: 410 }, { lines: [] }],
  });
  const restarts: string[] = [];
  const inf = new Informer<V1ConfigMap>({
    name: "cm",
    kc: srv.kc,
    path: "/api/v1/namespaces/ns/configmaps",
    list: () => listVia(srv.kc),
    logger,
    resyncMs: 0,
    backoffBaseMs: 50,
    onRestart: (_n, c) => restarts.push(c),
  });
  try {
    await inf.start();
    await until(() => inf.get("ns/z") !== undefined);
    assert.deepEqual(restarts, ["gone", "error"]);
    assert.equal(inf.size, 1);
  } finally {
    await inf.stop();
    await srv.close();
  }
});

test("cached and delivered objects carry no managedFields (list pages and watch events); a custom transform replaces the default", async () => {
  const withMf = (name: string, rv: string): V1ConfigMap => ({
    ...cm(name, rv),
    metadata: { ...cm(name, rv).metadata, managedFields: [{ manager: "kubectl", operation: "Apply" }] },
  });
  const srv = await serve({
    lists: [
      { items: [withMf("a", "5")], rv: "10" },
      { items: [withMf("a", "5")], rv: "10" },
    ],
    watches: [{ lines: [{ type: "ADDED", object: withMf("b", "11") }] }, { lines: [] }],
  });
  const delivered: V1ConfigMap[] = [];
  const inf = new Informer<V1ConfigMap>({
    name: "cm",
    kc: srv.kc,
    path: "/api/v1/namespaces/ns/configmaps",
    list: () => listVia(srv.kc),
    logger,
    resyncMs: 0,
  });
  inf.on((_ev, o) => delivered.push(o));
  const tagged = new Informer<V1ConfigMap>({
    name: "cm2",
    kc: srv.kc,
    path: "/api/v1/namespaces/ns/configmaps",
    list: () => listVia(srv.kc),
    logger,
    resyncMs: 0,
    transform: (o) => ({ ...o, data: { seen: "yes" } }),
  });
  try {
    await inf.start();
    await until(() => inf.get("ns/b") !== undefined);
    for (const key of ["ns/a", "ns/b"]) assert.equal(inf.get(key)?.metadata?.managedFields, undefined, key);
    assert.deepEqual(
      delivered.map((o) => [o.metadata?.name, o.metadata?.managedFields]),
      [
        ["a", undefined],
        ["b", undefined],
      ],
    );
    await tagged.start();
    await until(() => tagged.get("ns/a") !== undefined);
    assert.deepEqual(tagged.get("ns/a")?.data, { seen: "yes" });
  } finally {
    await inf.stop();
    await tagged.stop();
    await srv.close();
  }
});
