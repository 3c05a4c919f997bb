// The generated CRDs on a real apiserver: they apply, `kubectl explain` shows the zod descriptions, admission
// (OpenAPI + CEL) rejects every invalid case naming the field, defaults are applied, and immutable fields stay so.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import * as k8s from "@kubernetes/client-node";
import { parse } from "yaml";
import { INVALID_CASES, type Loose } from "../../operator/src/api/invalid-cases.ts";
import { CRDS, GROUP, VERSION } from "../../operator/src/api/v1alpha1/index.ts";
import { eventually, loadKubeConfig, makeNamespace, type TestNamespace } from "../cluster/testenv.ts";
import { REPO, run } from "../support/kubectl.ts";

const EXAMPLES: Record<string, Loose> = {
  TokenizerTraining: parse(readFileSync(path.join(REPO, "examples/tokenizer-training-demo.yaml"), "utf8")),
  ARTraining: parse(readFileSync(path.join(REPO, "examples/artraining-demo.yaml"), "utf8")),
  SamplingJob: parse(readFileSync(path.join(REPO, "examples/samplingjob-demo.yaml"), "utf8")),
};
const plural = (kind: string) => CRDS.find((c) => c.kind === kind)!.plural;

function apiMessage(e: unknown): { code: number; message: string } {
  const err = e as { code?: number; body?: unknown };
  const body = typeof err.body === "string" ? JSON.parse(err.body) : (err.body as { message?: string });
  return { code: err.code ?? 0, message: String(body?.message ?? e) };
}

describe("CRDs on a real apiserver", () => {
  let kc: k8s.KubeConfig;
  let custom: k8s.CustomObjectsApi;
  let ns: TestNamespace;

  before(async () => {
    kc = loadKubeConfig();
    custom = kc.makeApiClient(k8s.CustomObjectsApi);
    const applied = run("kubectl", ["apply", "-f", path.join(REPO, "crds")]);
    assert.equal(applied.status, 0, applied.stderr);
    const ext = kc.makeApiClient(k8s.ApiextensionsV1Api);
    for (const def of CRDS) {
      await eventually(
        async () => {
          const crd = await ext.readCustomResourceDefinition({ name: `${def.plural}.${GROUP}` });
          return crd.status?.conditions?.some((c) => c.type === "Established" && c.status === "True");
        },
        { timeoutMs: 30_000, message: `${def.plural} Established` },
      );
    }
    ns = await makeNamespace(kc, "crds");
  });
  after(async () => ns?.cleanup());

  it("kubectl apply --dry-run=client accepts every CRD", () => {
    const r = run("kubectl", ["apply", "--dry-run=client", "-f", path.join(REPO, "crds")]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(
      (r.stdout.match(/created \(dry run\)|configured \(dry run\)|unchanged \(dry run\)/g) ?? []).length,
      3,
      r.stdout,
    );
  });

  it("kubectl explain prints the schema descriptions", async () => {
    const r = await eventually(
      () => {
        const out = run("kubectl", ["explain", "tokenizertraining.spec"]);
        return out.status === 0 && out.stdout.includes("Tokenizer architecture") ? out : undefined;
      },
      { timeoutMs: 30_000, message: "kubectl explain" },
    );
    assert.match(r.stdout, /Desired state of a MergeVQ tokenizer training run/);
    const model = run("kubectl", ["explain", "tokenizertraining.spec.model.keepTokens"]);
    assert.match(model.stdout, /perfect square/);
  });

  for (const kind of Object.keys(EXAMPLES)) {
    it(`accepts the ${kind} example and applies defaults`, async () => {
      const body = structuredClone(EXAMPLES[kind]);
      const created = (await custom.createNamespacedCustomObject({
        group: GROUP,
        version: VERSION,
        namespace: ns.name,
        plural: plural(kind),
        body,
        dryRun: "All",
      })) as Loose;
      assert.equal(created.spec.runPolicy.backoffLimit ?? 3, created.spec.runPolicy.backoffLimit);
      assert.equal(created.spec.s3.region, "us-east-1");
      assert.equal(created.spec.trainer.terminationGracePeriodSeconds, 60);
      if (kind !== "SamplingJob") assert.equal(created.spec.rendezvous.port, 29500);
    });
  }

  for (const c of INVALID_CASES) {
    it(`admission rejects: ${c.name}`, async () => {
      const body = structuredClone(EXAMPLES[c.kind]);
      c.mutate(body);
      body.metadata = { name: "invalid" };
      await assert.rejects(
        custom.createNamespacedCustomObject({
          group: GROUP,
          version: VERSION,
          namespace: ns.name,
          plural: plural(c.kind),
          body,
          dryRun: "All",
        }),
        (e: unknown) => {
          const { code, message } = apiMessage(e);
          assert.equal(code, 422, message);
          assert.ok(message.includes(c.field), `apiserver message does not name ${c.field}: ${message}`);
          return true;
        },
      );
    });
  }

  it("keeps spec.model immutable (CEL transition rule)", async () => {
    const body = structuredClone(EXAMPLES.TokenizerTraining);
    body.metadata = { name: "immutable" };
    await custom.createNamespacedCustomObject({
      group: GROUP,
      version: VERSION,
      namespace: ns.name,
      plural: "tokenizertrainings",
      body,
    });
    const patch = [{ op: "replace", path: "/spec/model/preset", value: "T0" }];
    await assert.rejects(
      custom.patchNamespacedCustomObject({
        group: GROUP,
        version: VERSION,
        namespace: ns.name,
        plural: "tokenizertrainings",
        name: "immutable",
        body: patch,
      }),
      (e: unknown) => /model is immutable/.test(apiMessage(e).message),
    );
    // Fields outside the immutable set may change.
    await custom.patchNamespacedCustomObject({
      group: GROUP,
      version: VERSION,
      namespace: ns.name,
      plural: "tokenizertrainings",
      name: "immutable",
      body: [{ op: "replace", path: "/spec/runPolicy/backoffLimit", value: 5 }],
    });
  });
});
