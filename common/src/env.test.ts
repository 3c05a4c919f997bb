import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { z } from "zod";
import { EnvError, envBool, envInt, envUri, parseEnv } from "./env.ts";

const Schema = z.object({
  WORLD_SIZE: envInt({ min: 1 }),
  NODE_RANK: envInt({ min: 0 }).default(0),
  LEADER_ELECTION: envBool().default(true),
  CHECKPOINT_DIR: envUri(),
});

describe("parseEnv", () => {
  it("parses and applies defaults", () => {
    const env = parseEnv(Schema, { WORLD_SIZE: "4", CHECKPOINT_DIR: "s3://bucket/run" });
    assert.deepEqual(env, { WORLD_SIZE: 4, NODE_RANK: 0, LEADER_ELECTION: true, CHECKPOINT_DIR: "s3://bucket/run" });
  });
  it("names a missing variable", () => {
    assert.throws(
      () => parseEnv(Schema, { CHECKPOINT_DIR: "/x" }),
      (e: unknown) => e instanceof EnvError && e.variable === "WORLD_SIZE" && /is required/.test(e.message),
    );
  });
  it("names a malformed variable and says what is wrong", () => {
    assert.throws(
      () => parseEnv(Schema, { WORLD_SIZE: "two", CHECKPOINT_DIR: "/x" }),
      (e: unknown) => e instanceof EnvError && e.variable === "WORLD_SIZE" && /integer/.test(e.message),
    );
    assert.throws(
      () => parseEnv(Schema, { WORLD_SIZE: "0", CHECKPOINT_DIR: "/x" }),
      (e: unknown) => e instanceof EnvError && e.variable === "WORLD_SIZE",
    );
    assert.throws(
      () => parseEnv(Schema, { WORLD_SIZE: "1", CHECKPOINT_DIR: "http://x" }),
      (e: unknown) => e instanceof EnvError && e.variable === "CHECKPOINT_DIR",
    );
    assert.throws(
      () => parseEnv(Schema, { WORLD_SIZE: "1", CHECKPOINT_DIR: "/x", LEADER_ELECTION: "yes" }),
      (e: unknown) => e instanceof EnvError && e.variable === "LEADER_ELECTION",
    );
  });
  it("treats empty strings as unset", () => {
    assert.equal(parseEnv(Schema, { WORLD_SIZE: "2", NODE_RANK: "", CHECKPOINT_DIR: "/x" }).NODE_RANK, 0);
  });
});
