// Test helper: start a small cluster, print {id, ports} as one JSON line, then wait to be killed.
// Used by test/integration/cluster.test.ts to prove cleanup on SIGINT/SIGTERM and on SIGKILL (watchdog).
import { startCluster } from "./cluster.ts";

const c = await startCluster({ nodes: ["hold-node-0"], s3Secret: false });
const u = new URL(c.server);
process.stdout.write(
  `${JSON.stringify({ id: c.id, dir: c.dir, ports: [Number(u.port), c.controlPlane.etcdPort, Number(new URL(c.s3.endpoint).port), c.kubeletPort] })}\n`,
);
setInterval(() => {}, 1 << 30);
