// zod → CustomResourceDefinition. Converts a kind's zod schema with z.toJSONSchema (io: "input", so defaults
// are not "required") and reduces it to the structural OpenAPI v3 subset the apiserver accepts:
// no $schema/$ref, no additionalProperties next to properties, int-or-string for quantities,
// preserve-unknown-fields for free-form maps, safe-integer bounds dropped.
import { z } from "zod";
import { API_VERSION, type CrdDef, GROUP, VERSION } from "./v1alpha1/index.ts";

type Json = Record<string, unknown>;

const SAFE = Number.MAX_SAFE_INTEGER;
const QUANTITY_CEL = "type(self) == int || self.matches('^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$')";

function structural(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(structural);
  if (!node || typeof node !== "object") return node;
  const n = { ...(node as Json) };
  delete n.$schema;
  delete n.id;
  if (n.minimum === -SAFE) delete n.minimum;
  if (n.maximum === SAFE) delete n.maximum;
  if (n["x-kubernetes-int-or-string"]) {
    // Quantities: k8s accepts exactly anyOf [integer, string] under int-or-string; keep the pattern as CEL.
    const out: Json = {
      "x-kubernetes-int-or-string": true,
      anyOf: [{ type: "integer" }, { type: "string" }],
      "x-kubernetes-validations": [
        { rule: QUANTITY_CEL, message: "must be a Kubernetes quantity such as 500m or 8Gi" },
      ],
    };
    if (n.description) out.description = n.description;
    return out;
  }
  if (n["x-kubernetes-preserve-unknown-fields"]) {
    const out: Json = { type: "object", "x-kubernetes-preserve-unknown-fields": true };
    if (n.description) out.description = n.description;
    return out;
  }
  if ("const" in n) {
    n.enum = [n.const];
    delete n.const;
  }
  if (n.properties) {
    delete n.additionalProperties;
    const props: Json = {};
    for (const [k, v] of Object.entries(n.properties as Json)) props[k] = structural(v);
    n.properties = props;
    if (Array.isArray(n.required) && n.required.length === 0) delete n.required;
  } else if (n.additionalProperties && typeof n.additionalProperties === "object") {
    n.additionalProperties = structural(n.additionalProperties);
  }
  if (n.items) n.items = structural(n.items);
  if (n.anyOf) throw new Error(`unsupported anyOf in CRD schema: ${JSON.stringify(n).slice(0, 200)}`);
  return n;
}

/** The openAPIV3Schema of one kind. */
export function openApiSchema(def: CrdDef): Json {
  const js = z.toJSONSchema(def.schema, {
    io: "input",
    target: "openapi-3.0",
    unrepresentable: "throw",
    reused: "inline",
  }) as Json;
  const props = js.properties as Json;
  return {
    type: "object",
    description: `${def.kind} is a MergeVQ run (${API_VERSION}). See https://github.com/mergevq-k8s for the full reference.`,
    required: ["spec"],
    properties: {
      apiVersion: {
        type: "string",
        description: "APIVersion defines the versioned schema of this representation of an object.",
      },
      kind: {
        type: "string",
        description: "Kind is a string value representing the REST resource this object represents.",
      },
      metadata: { type: "object" },
      spec: structural(props.spec),
      status: structural(props.status),
    },
  };
}

export function crdObject(def: CrdDef): Json {
  return {
    apiVersion: "apiextensions.k8s.io/v1",
    kind: "CustomResourceDefinition",
    metadata: {
      name: `${def.plural}.${GROUP}`,
      labels: { "app.kubernetes.io/name": "mergevq-operator", "app.kubernetes.io/part-of": "mergevq" },
    },
    spec: {
      group: GROUP,
      names: {
        kind: def.kind,
        listKind: `${def.kind}List`,
        plural: def.plural,
        singular: def.singular,
        shortNames: [...def.shortNames],
        categories: ["mergevq"],
      },
      scope: "Namespaced",
      versions: [
        {
          name: VERSION,
          served: true,
          storage: true,
          subresources: { status: {} },
          additionalPrinterColumns: def.printerColumns.map((c) => ({ ...c })),
          schema: { openAPIV3Schema: openApiSchema(def) },
        },
      ],
    },
  };
}
