// The operator's API client (operator/src/controller/kubeClient.ts) against the real apiserver: keep-alive TLS
// connections are reused (client-node alone opens one connection, with a full client-certificate handshake,
// per request), and its calls speak the apiserver's protocol: merge-patched status, list paging, error codes.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { KubeConfig } from "@kubernetes/client-node";
import { ApiException, KubeClient } from "../../operator/src/controller/kubeClient.ts";
import { testEnv } from "../cluster/testenv.ts";

const kc = new KubeConfig();
kc.loadFromFile(testEnv().kubeconfigPath);
const client = new KubeClient(kc);
after(() => client.close());

test("sequential API calls share one connection; concurrent calls open at most one each, then reuse them", async () => {
  for (let i = 0; i < 30; i++) {
    const pods = await client.core.listNamespacedPod({ namespace: "default", limit: 1 });
    assert.equal(pods.kind, "PodList");
  }
  assert.equal(client.connectionsOpened, 1, "30 sequential requests over one connection");
  const burst = () =>
    Promise.all(Array.from({ length: 8 }, () => client.core.listNamespacedService({ namespace: "default" })));
  await burst();
  const afterBurst = client.connectionsOpened;
  assert.ok(afterBurst <= 9, `8 concurrent requests opened ${afterBurst - 1} more connections`);
  await burst();
  assert.equal(client.connectionsOpened, afterBurst, "a second burst reuses the open connections");
});

test("every API group shares the pool (writes included); a missing object is an ApiException with code 404", async () => {
  const before = client.connectionsOpened;
  const name = `conn-${process.pid}`;
  const lease = await client.leases.createNamespacedLease({
    namespace: "default",
    body: { metadata: { name }, spec: { holderIdentity: "t" } },
  });
  assert.equal(lease.spec?.holderIdentity, "t");
  const read = await client.leases.readNamespacedLease({ namespace: "default", name });
  const replaced = await client.leases.replaceNamespacedLease({
    namespace: "default",
    name,
    body: { ...read, spec: { ...read.spec, holderIdentity: "u" } },
  });
  assert.equal(replaced.spec?.holderIdentity, "u");
  await assert.rejects(
    client.leases.replaceNamespacedLease({ namespace: "default", name, body: read }),
    (e: unknown) => e instanceof ApiException && e.code === 409,
    "a replace from a stale resourceVersion is a conflict",
  );
  await client.request("DELETE", `/apis/coordination.k8s.io/v1/namespaces/default/leases/${name}`);
  await assert.rejects(
    client.leases.readNamespacedLease({ namespace: "default", name }),
    (e: unknown) =>
      e instanceof ApiException && e.code === 404 && (e.body as { reason?: string }).reason === "NotFound",
  );
  await assert.rejects(
    client.core.readNamespacedSecret({ namespace: "default", name: "no-such-secret" }),
    (e: unknown) => e instanceof ApiException && e.code === 404 && /no-such-secret/.test(e.message),
  );
  assert.equal(client.connectionsOpened, before, "no new connection for requests of three API groups");
});

test("lists page with limit/continue and filter by label selector", async () => {
  const ns = "default";
  const names = Array.from({ length: 5 }, (_, i) => `page-${process.pid}-${i}`);
  await Promise.all(
    names.map((name) =>
      client.request("POST", `/api/v1/namespaces/${ns}/configmaps`, {
        body: { metadata: { name, labels: { "conn-test": String(process.pid) } } },
      }),
    ),
  );
  try {
    const seen: string[] = [];
    let cont: string | undefined;
    let pages = 0;
    do {
      const page = await client.request<{ items: { metadata: { name: string } }[]; metadata: { continue?: string } }>(
        "GET",
        `/api/v1/namespaces/${ns}/configmaps`,
        { query: { labelSelector: `conn-test=${process.pid}`, limit: 2, continue: cont } },
      );
      seen.push(...page.items.map((i) => i.metadata.name));
      cont = page.metadata.continue || undefined;
      pages++;
    } while (cont);
    assert.deepEqual(seen.sort(), [...names].sort());
    assert.equal(pages, 3, "5 objects in pages of 2");
  } finally {
    await Promise.all(names.map((name) => client.request("DELETE", `/api/v1/namespaces/${ns}/configmaps/${name}`)));
  }
});
