import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { describe, it } from "node:test";
import { createLogger } from "./logger.ts";

function capture() {
  const lines: Record<string, unknown>[] = [];
  const destination = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split("\n").filter(Boolean)) lines.push(JSON.parse(l));
      cb();
    },
  });
  return { lines, destination };
}

describe("createLogger", () => {
  it("writes JSON with component/run/rank bindings and a string level", async () => {
    const { lines, destination } = capture();
    const log = createLogger({ component: "trainer", run: "ns/demo", rank: 1 }, { level: "info", destination });
    log.info({ step: 3 }, "progress");
    await new Promise((r) => setImmediate(r));
    assert.equal(lines.length, 1);
    assert.equal(lines[0].component, "trainer");
    assert.equal(lines[0].run, "ns/demo");
    assert.equal(lines[0].rank, 1);
    assert.equal(lines[0].level, "info");
    assert.equal(lines[0].step, 3);
    assert.equal(lines[0].msg, "progress");
  });

  it("redacts secrets wherever they appear", async () => {
    const { lines, destination } = capture();
    const log = createLogger({ component: "operator" }, { level: "info", destination });
    log.info(
      { env: { AWS_SECRET_ACCESS_KEY: "hunter2", AWS_REGION: "us-east-1" }, s3: { secretAccessKey: "xyz" } },
      "pod env",
    );
    await new Promise((r) => setImmediate(r));
    const text = JSON.stringify(lines[0]);
    assert.ok(!text.includes("hunter2") && !text.includes("xyz"), text);
    assert.ok(text.includes("us-east-1"));
  });

  it("honours the level and rejects an unknown LOG_LEVEL naming the variable", async () => {
    const { lines, destination } = capture();
    const log = createLogger({ component: "x" }, { level: "warn", destination });
    log.info("dropped");
    log.warn("kept");
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(
      lines.map((l) => l.msg),
      ["kept"],
    );
    assert.throws(() => createLogger({ component: "x" }, { level: "loud" }), /LOG_LEVEL: invalid log level "loud"/);
  });
});
