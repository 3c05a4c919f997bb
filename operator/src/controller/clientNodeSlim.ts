// Keeps client-node's generated API layer out of the operator process. client-node's KubeConfig module
// (dist/config.js) imports dist/gen/index.js, which loads every API group client and 1,441 model classes, for a
// single method: makeApiClient. That import alone is ~48 MiB of the operator's RSS (bare Node 24 is ~43 MiB).
// The operator calls the apiserver through controller/kubeClient.ts and never calls makeApiClient, so its
// entry point (main.ts) installs a module resolve hook, before anything imports client-node, that answers that
// one import with a stub whose two names (createConfiguration, ServerConfiguration) throw a clear error if
// anything ever calls them. Everything else of client-node (auth plugins, Watch, types) loads as usual.
// If client-node moves that import, the hook matches nothing and the operator only loses the saving:
// clientNodeSlim.test.ts checks that the generated layer stays unloaded.
import { registerHooks } from "node:module";

const STUB_MESSAGE =
  "client-node's generated API clients are not loaded in the operator process (controller/clientNodeSlim.ts): " +
  "use controller/kubeClient.ts";

const STUB_SOURCE = `const m = ${JSON.stringify(STUB_MESSAGE)};
export function createConfiguration() { throw new Error(m); }
export class ServerConfiguration { constructor() { throw new Error(m); } }
`;

export const GEN_STUB_URL = `data:text/javascript,${encodeURIComponent(STUB_SOURCE)}`;

let installed = false;

/** True when `parentURL` is client-node's KubeConfig module. */
function fromClientNodeConfig(parentURL: string | undefined): boolean {
  return !!parentURL && /\/@kubernetes\/client-node\/dist\/config\.js$/.test(parentURL);
}

/** Installs the resolve hook (idempotent). Must run before the first import of @kubernetes/client-node. */
export function slimClientNode(): void {
  if (installed) return;
  installed = true;
  registerHooks({
    resolve(specifier, context, nextResolve) {
      if (specifier === "./gen/index.js" && fromClientNodeConfig(context.parentURL)) {
        return { url: GEN_STUB_URL, format: "module", shortCircuit: true };
      }
      return nextResolve(specifier, context);
    },
  });
}
