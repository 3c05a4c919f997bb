// The operator process loads client-node without its generated API layer (clientNodeSlim.ts), and nothing of the
// trainer or the heavy libraries at start. Checked in a child process started like the operator's entry point:
// the hook goes in first, then the operator's whole module graph is imported, and every resolved module URL is
// recorded.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const here = fileURLToPath(new URL(".", import.meta.url));

const CHILD = `
import { registerHooks } from "node:module";
import { slimClientNode } from "./clientNodeSlim.ts";
slimClientNode();
const urls = [];
registerHooks({ resolve(s, c, next) { const r = next(s, c); urls.push(r.url); return r; } });
await import("../operator.ts");
const { KubeConfig } = await import("@kubernetes/client-node/dist/config.js");
const kc = new KubeConfig();
kc.loadFromOptions({
  clusters: [{ name: "c", server: "https://127.0.0.1:6443", skipTLSVerify: false }],
  users: [{ name: "u", token: "secret-token" }],
  contexts: [{ name: "x", cluster: "c", user: "u" }],
  currentContext: "x",
});
const opts = {};
await kc.applyToHTTPSOptions(opts);
let makeApiClient = "no error";
try { kc.makeApiClient(class {}); } catch (e) { makeApiClient = e.message; }
process.stdout.write(JSON.stringify({ urls, authorization: opts.headers?.Authorization, makeApiClient }));
`;

test("the operator's module graph loads client-node's KubeConfig and Watch without the generated layer", () => {
  const r = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", CHILD], {
    cwd: here,
    encoding: "utf8",
  });
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { urls: string[]; authorization?: string; makeApiClient: string };
  const clientNode = out.urls.filter((u) => u.includes("/@kubernetes/client-node/"));
  assert.ok(
    clientNode.some((u) => u.endsWith("/dist/config.js")),
    "KubeConfig loaded",
  );
  assert.ok(
    clientNode.some((u) => u.endsWith("/dist/watch.js")),
    "Watch loaded",
  );
  assert.deepEqual(
    clientNode.filter((u) => u.includes("/dist/gen/")),
    [],
    "no module of the generated API layer",
  );
  assert.ok(
    out.urls.some((u) => u.startsWith("data:text/javascript")),
    "the stub answered dist/gen/index.js",
  );
  assert.equal(out.authorization, "Bearer secret-token", "client-node's auth still applies");
  assert.match(out.makeApiClient, /not loaded in the operator process.*kubeClient\.ts/);
  const heavy = out.urls.filter((u) => /@aws-sdk|@tensorflow|onnxruntime|\/sharp\/|\/trainer\/src\//.test(u));
  assert.deepEqual(heavy, [], "no trainer, tfjs, ORT, sharp or AWS SDK module at start");
});
