import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { parse, parseAllDocuments } from "yaml";
import type { z } from "zod";
import { openApiSchema } from "../crd.ts";
import { driftedFiles } from "../generate.ts";
import { INVALID_CASES, type Loose } from "../invalid-cases.ts";
import { ARTraining, CRDS, SamplingJob, TokenizerTraining } from "./index.ts";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../..");
const SCHEMAS: Record<string, z.ZodType> = { TokenizerTraining, ARTraining, SamplingJob };
const load = (f: string) => parse(readFileSync(path.join(ROOT, "examples", f), "utf8"));
const BASE: Record<string, unknown> = {
  TokenizerTraining: load("tokenizer-training-demo.yaml"),
  ARTraining: load("artraining-demo.yaml"),
  SamplingJob: load("samplingjob-demo.yaml"),
};

describe("examples/", () => {
  const files = readdirSync(path.join(ROOT, "examples")).filter((f) => f.endsWith(".yaml"));
  it("has an example of every kind", () => {
    const kinds = new Set(
      files.flatMap((f) =>
        parseAllDocuments(readFileSync(path.join(ROOT, "examples", f), "utf8")).map((d) => d.toJS().kind),
      ),
    );
    for (const k of Object.keys(SCHEMAS)) assert.ok(kinds.has(k), `no example of ${k}`);
  });
  for (const f of files) {
    it(`accepts ${f}`, () => {
      for (const doc of parseAllDocuments(readFileSync(path.join(ROOT, "examples", f), "utf8"))) {
        const obj = doc.toJS();
        const res = SCHEMAS[obj.kind].safeParse(obj);
        assert.ok(res.success, `${f}: ${res.success ? "" : JSON.stringify(res.error.issues)}`);
      }
    });
  }
});

describe("defaults", () => {
  it("fills run policy, rendezvous and resources defaults", () => {
    const tt = TokenizerTraining.parse(BASE.TokenizerTraining);
    assert.equal(tt.spec.rendezvous.port, 29500);
    assert.equal(tt.spec.rendezvous.compat, "none");
    assert.equal(tt.spec.runPolicy.cleanPodPolicy, "Running");
    assert.equal(tt.spec.runPolicy.suspend, false);
    assert.equal(tt.spec.s3?.region, "us-east-1");
    assert.equal(tt.spec.s3?.secretRef.accessKeyIdKey, "AWS_ACCESS_KEY_ID");
    assert.equal(tt.spec.checkpoint.saveOnSigterm, true);
  });
});

describe("invalid specs are rejected naming the field", () => {
  assert.ok(INVALID_CASES.length >= 20);
  for (const c of INVALID_CASES) {
    it(c.name, () => {
      const obj = structuredClone(BASE[c.kind]) as Loose;
      c.mutate(obj);
      const res = SCHEMAS[c.kind].safeParse(obj);
      assert.equal(res.success, false, `${c.name}: expected rejection`);
      if (res.success) return;
      const rendered = res.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ");
      assert.ok(rendered.includes(c.field), `${c.name}: "${rendered}" does not name ${c.field}`);
    });
  }
});

describe("generated CRDs", () => {
  it("are committed and match the zod schemas (drift check)", () => {
    assert.deepEqual(driftedFiles(), []);
  });

  for (const def of CRDS) {
    it(`${def.kind}: every field has a description and the schema is structural`, () => {
      const missing: string[] = [];
      const walk = (node: Loose, at: string) => {
        if (node.anyOf && !node["x-kubernetes-int-or-string"]) missing.push(`${at}: anyOf outside int-or-string`);
        if (node.properties && node.additionalProperties) missing.push(`${at}: properties + additionalProperties`);
        if ("$ref" in node || "$schema" in node) missing.push(`${at}: $ref/$schema`);
        for (const [k, v] of Object.entries(node.properties ?? {})) {
          const child = v as Loose;
          if (at !== "" || !["apiVersion", "kind", "metadata"].includes(k)) {
            if (!child.description) missing.push(`${at}.${k}: no description`);
          }
          if (!child.type && !child["x-kubernetes-int-or-string"]) missing.push(`${at}.${k}: no type`);
          walk(child, `${at}.${k}`);
        }
        if (node.items) walk(node.items, `${at}[]`);
        if (node.additionalProperties && typeof node.additionalProperties === "object")
          walk(node.additionalProperties, `${at}{}`);
      };
      walk(openApiSchema(def), "");
      assert.deepEqual(missing, []);
    });
  }

  it("carry the CEL rules, printer columns, status subresource and short names", () => {
    const crd = parse(readFileSync(path.join(ROOT, "crds/mergevq.ai_tokenizertrainings.yaml"), "utf8"));
    const v = crd.spec.versions[0];
    assert.deepEqual(v.subresources, { status: {} });
    assert.ok(crd.spec.names.shortNames.includes("tt"));
    const cols = v.additionalPrinterColumns.map((c: { name: string }) => c.name);
    for (const c of ["Phase", "Progress", "rFID", "Age"]) assert.ok(cols.includes(c), `missing column ${c}`);
    const text = JSON.stringify(v.schema);
    assert.ok(text.includes("has(self.preset) != has(self.variant)"));
    assert.ok(text.includes("self == oldSelf"));
    const sj = parse(readFileSync(path.join(ROOT, "crds/mergevq.ai_samplingjobs.yaml"), "utf8"));
    const sjCols = sj.spec.versions[0].additionalPrinterColumns.map((c: { name: string }) => c.name);
    assert.ok(sjCols.includes("gFID") && sjCols.includes("IS"));
  });
});
