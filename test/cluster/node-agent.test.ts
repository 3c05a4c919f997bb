// Unit tests of the node agent's pure helpers (no cluster needed).
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  DEFAULT_IMAGE_COMMANDS,
  expandVars,
  imageCommandsFromEnv,
  imageRepository,
  parseQuantity,
  resolveArgv,
} from "./node-agent.ts";

test("imageRepository strips tag and digest but keeps registry ports", () => {
  assert.equal(imageRepository("ghcr.io/acme/mergevq-k8s/trainer:0.1.0"), "ghcr.io/acme/mergevq-k8s/trainer");
  assert.equal(imageRepository("reg:5000/mergevq-k8s/operator@sha256:abc"), "reg:5000/mergevq-k8s/operator");
  assert.equal(imageRepository("busybox"), "busybox");
});

test("resolveArgv maps project images to local entrypoints and prepends them to args", () => {
  const t = resolveArgv(
    { image: "x/mergevq-k8s/trainer:1", args: ["train", "--steps=2"] },
    DEFAULT_IMAGE_COMMANDS,
    "/repo",
  );
  assert.deepEqual(t.slice(0, 2), ["node", "--import"]);
  assert.match(t[2], /tsx/);
  assert.deepEqual(t.slice(3), ["/repo/trainer/src/cli.ts", "train", "--steps=2"]);
  const alias = resolveArgv(
    { image: "mergevq-k8s/operator:dev", command: ["mergevq-operator", "--leader-elect"] },
    DEFAULT_IMAGE_COMMANDS,
    "/repo",
  );
  assert.deepEqual(alias.slice(3), ["/repo/operator/src/main.ts", "--leader-elect"]);
  // Other images: command + args as given.
  assert.deepEqual(
    resolveArgv({ image: "busybox", command: ["sh", "-c"], args: ["exit 1"] }, DEFAULT_IMAGE_COMMANDS, "/r"),
    ["sh", "-c", "exit 1"],
  );
  assert.deepEqual(resolveArgv({ image: "busybox" }, DEFAULT_IMAGE_COMMANDS, "/r"), []);
});

test("expandVars follows Kubernetes $(VAR) rules", () => {
  assert.equal(expandVars("a-$(X)-$(Y)-$$(X)", { X: "1" }), "a-1-$(Y)-$(X)");
});

test("parseQuantity handles binary/decimal suffixes and millicores", () => {
  assert.equal(parseQuantity("1Gi"), 2 ** 30);
  assert.equal(parseQuantity("500m"), 0.5);
  assert.equal(parseQuantity("2k"), 2000);
  assert.ok(Number.isNaN(parseQuantity("abc")));
});

test("image table from MERGEVQ_IMAGE_COMMANDS is validated", () => {
  const t = imageCommandsFromEnv({
    MERGEVQ_IMAGE_COMMANDS: '[{"repositorySuffix":"me/app","entrypoint":["python3","app.py"]}]',
  });
  assert.equal(t?.[0].repositorySuffix, "me/app");
  assert.throws(
    () => imageCommandsFromEnv({ MERGEVQ_IMAGE_COMMANDS: '[{"entrypoint":"x"}]' }),
    /MERGEVQ_IMAGE_COMMANDS/,
  );
  assert.equal(imageCommandsFromEnv({}), undefined);
});
