// The operator's API client reuses keep-alive TLS connections (operator/src/controller/kubeConfig.ts) against the
// real apiserver: client-node alone opens one connection, with a full client-certificate handshake, per request.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import * as k8s from "@kubernetes/client-node";
import { PooledKubeConfig } from "../../operator/src/controller/kubeConfig.ts";
import { testEnv } from "../cluster/testenv.ts";

const kc = new PooledKubeConfig();
kc.loadFromFile(testEnv().kubeconfigPath);
after(() => kc.closeConnections());

test("sequential API calls share one connection; concurrent calls open at most one each, then reuse them", async () => {
  const core = kc.makeApiClient(k8s.CoreV1Api);
  for (let i = 0; i < 30; i++) {
    const ns = await core.listNamespace();
    assert.ok(ns.items.some((n) => n.metadata?.name === "default"));
  }
  assert.equal(kc.connectionsOpened, 1, "30 sequential requests over one connection");
  await Promise.all(Array.from({ length: 8 }, () => core.readNamespace({ name: "default" })));
  const afterBurst = kc.connectionsOpened;
  assert.ok(afterBurst <= 8, `8 concurrent requests opened ${afterBurst - 1} more connections`);
  await Promise.all(Array.from({ length: 8 }, () => core.readNamespace({ name: "default" })));
  assert.equal(kc.connectionsOpened, afterBurst, "a second burst reuses the open connections");
});

test("every API group client made from the same config shares the pool (writes included)", async () => {
  const before = kc.connectionsOpened;
  const coord = kc.makeApiClient(k8s.CoordinationV1Api);
  const core = kc.makeApiClient(k8s.CoreV1Api);
  const name = `conn-${process.pid}`;
  await coord.createNamespacedLease({
    namespace: "default",
    body: { metadata: { name }, spec: { holderIdentity: "t" } },
  });
  await core.readNamespace({ name: "default" });
  await coord.deleteNamespacedLease({ namespace: "default", name });
  assert.equal(kc.connectionsOpened, before, "no new connection for three requests of two clients");
});
