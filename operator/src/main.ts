#!/usr/bin/env -S node --import tsx
// mergevq-operator entrypoint (configuration: operator.ts). The resolve hook that keeps client-node's generated
// API layer out of the process must be installed before the module graph that imports client-node is loaded,
// so the operator itself is imported dynamically, after it.
import { slimClientNode } from "./controller/clientNodeSlim.ts";

slimClientNode();
const { main } = await import("./operator.ts");
main().catch((err: unknown) => {
  process.stderr.write(`mergevq-operator: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
