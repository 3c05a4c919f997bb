// Operator configuration from the environment: WRITE_CONCURRENCY is parsed, validated and reaches the Reconciler.
import assert from "node:assert/strict";
import { test } from "node:test";
import { KubeConfig } from "@kubernetes/client-node";
import { EnvError, parseEnv } from "../../common/src/env.ts";
import { createLogger } from "../../common/src/logger.ts";
import { Manager } from "./controller/manager.ts";
import { createMetrics } from "./controller/metrics.ts";
import { OperatorEnv } from "./operator.ts";
import { DEFAULT_WRITE_CONCURRENCY } from "./reconcile/reconciler.ts";
import { testContext } from "./testing/fixtures.ts";

test("WRITE_CONCURRENCY: a positive integer up to 256, default DEFAULT_WRITE_CONCURRENCY", () => {
  assert.equal(parseEnv(OperatorEnv, {}).WRITE_CONCURRENCY, DEFAULT_WRITE_CONCURRENCY);
  assert.equal(parseEnv(OperatorEnv, { WRITE_CONCURRENCY: "" }).WRITE_CONCURRENCY, DEFAULT_WRITE_CONCURRENCY);
  assert.equal(parseEnv(OperatorEnv, { WRITE_CONCURRENCY: "3" }).WRITE_CONCURRENCY, 3);
  for (const bad of ["0", "-1", "1.5", "four", "257"]) {
    assert.throws(
      () => parseEnv(OperatorEnv, { WRITE_CONCURRENCY: bad }),
      (e: unknown) => e instanceof EnvError && e.variable === "WRITE_CONCURRENCY",
      bad,
    );
  }
});

test("Manager hands writeConcurrency to its Reconciler (an invalid value fails at construction)", () => {
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: "c", server: "https://127.0.0.1:1" }],
    users: [{ name: "u" }],
    contexts: [{ name: "x", cluster: "c", user: "u" }],
    currentContext: "x",
  });
  const opts = {
    kc,
    ctx: testContext(),
    logger: createLogger({ component: "test" }, { level: "silent" }),
    namespaces: [],
    leaderElection: false,
    leaseNamespace: "default",
    identity: "test",
  };
  assert.ok(new Manager({ ...opts, metrics: createMetrics({ defaultMetrics: false }), writeConcurrency: 3 }));
  assert.throws(
    () => new Manager({ ...opts, metrics: createMetrics({ defaultMetrics: false }), writeConcurrency: 0 }),
    /WRITE_CONCURRENCY/,
  );
});
