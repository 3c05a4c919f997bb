// readDocuments: when the operator must read the trainer's progress.json fresh (bypassing the read cache).
import assert from "node:assert/strict";
import { test } from "node:test";
import type { V1Pod } from "@kubernetes/client-node";
import { makeTokenizerTraining, testContext, withPhase } from "../testing/fixtures.ts";
import { resolveAccelerator } from "./accelerator.ts";
import { desiredNodePods } from "./desired.ts";
import { bucketByAttempt, readDocuments, type Snapshot } from "./observe.ts";
import type { Run } from "./run.ts";
import type { StatusReader } from "./statusReader.ts";

/** A reader that records the `fresh` flag of every read and finds nothing. */
function recordingReader() {
  const fresh: boolean[] = [];
  const reader = {
    async readJson(_uri: string, _schema: unknown, _creds: unknown, f = false) {
      fresh.push(f);
      return undefined;
    },
  };
  // readDocuments only calls readJson; the class's private members are not part of the behaviour under test.
  return { fresh, reader: reader as unknown as StatusReader };
}

function snapshot(pods: V1Pod[], attempt: number): Snapshot {
  const run = makeTokenizerTraining("t").nodes(2).status({ phase: "Running", attempt }).obj() as unknown as Run;
  return { run, raw: {}, pods, byAttempt: bucketByAttempt(pods), serviceExists: true };
}

const acc = () => {
  const r = resolveAccelerator({ vendor: "cpu" }, {}, 2);
  assert.ok(r.ok);
  return r.value;
};

test("progress.json is read fresh when the attempt's pods are missing, deleting or terminal, cached otherwise", async () => {
  const run = makeTokenizerTraining("t").nodes(2).obj();
  const pods = desiredNodePods(run, acc(), testContext(), { attempt: 2 }).map((p) => withPhase(p, "Running"));
  const cases: [string, V1Pod[], boolean][] = [
    ["both ranks running", pods, false],
    // The next attempt is about to be created: a SIGTERM-stopped trainer's last checkpoint must be seen.
    ["no pods yet for the attempt", [], true],
    ["one rank gone", [pods[0]], true],
    [
      "one rank being deleted",
      [pods[0], { ...pods[1], metadata: { ...pods[1].metadata, deletionTimestamp: new Date() } }],
      true,
    ],
    ["one rank failed", [pods[0], withPhase(pods[1], "Failed", { exitCode: 137 })], true],
  ];
  for (const [name, cur, want] of cases) {
    const { fresh, reader } = recordingReader();
    await readDocuments(reader, snapshot(cur, 2));
    assert.deepEqual(fresh, [want], name);
  }
});
