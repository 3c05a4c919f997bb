// Pure parts of the operator's REST client.
import assert from "node:assert/strict";
import { test } from "node:test";
import { resourceOf } from "./kubeClient.ts";

test("resourceOf names the collection and subresource of core, group and cluster-scoped paths", () => {
  assert.equal(resourceOf("/api/v1/namespaces/ns/pods"), "pods");
  assert.equal(resourceOf("/api/v1/namespaces/ns/pods/p-0"), "pods");
  assert.equal(resourceOf("/api/v1/pods?labelSelector=x"), "pods");
  assert.equal(resourceOf("/api/v1/namespaces/ns/events"), "events");
  assert.equal(
    resourceOf("/apis/mergevq.ai/v1alpha1/namespaces/ns/tokenizertrainings/r/status"),
    "tokenizertrainings/status",
  );
  assert.equal(resourceOf("/apis/mergevq.ai/v1alpha1/tokenizertrainings"), "tokenizertrainings");
  assert.equal(resourceOf("/apis/coordination.k8s.io/v1/namespaces/ns/leases/l"), "leases");
  assert.equal(resourceOf("/api/v1/namespaces/ns"), "namespaces");
});
