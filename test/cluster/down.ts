// `hack/cluster-down.sh`: stop the background cluster started by up.ts. Idempotent.
import path from "node:path";
import { killMarked, removeDir, sleep } from "./proc.ts";
import { alive, readState, stateDir } from "./state.ts";

const dir = stateDir();
const st = readState(dir);
if (st?.pid && alive(st.pid)) {
  process.kill(st.pid, "SIGTERM");
  const deadline = Date.now() + 30_000;
  while (alive(st.pid) && Date.now() < deadline) await sleep(200);
  if (alive(st.pid)) process.kill(st.pid, "SIGKILL");
}
const killed = st?.id ? killMarked(st.id) : 0;
removeDir(path.join(dir, "run"));
removeDir(dir);
process.stderr.write(
  st ? `cluster stopped${killed ? ` (${killed} stray processes killed)` : ""}\n` : "no cluster running\n",
);
