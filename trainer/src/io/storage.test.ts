import assert from "node:assert/strict";
import { test } from "node:test";
import { rankFromEnv } from "../data/rank.ts";
import { backoffDelay, JitterRetryStrategy, s3SettingsFromEnv } from "./s3.ts";
import { joinUri, parseUri } from "./uri.ts";

test("parseUri / joinUri", () => {
  assert.deepEqual(parseUri("s3://my-bucket/a/b.tar"), { scheme: "s3", bucket: "my-bucket", key: "a/b.tar" });
  assert.deepEqual(parseUri("s3://my-bucket"), { scheme: "s3", bucket: "my-bucket", key: "" });
  assert.deepEqual(parseUri("file:///tmp/x"), { scheme: "file", path: "/tmp/x" });
  assert.deepEqual(parseUri("/tmp/x"), { scheme: "file", path: "/tmp/x" });
  assert.throws(() => parseUri("s3://Bad_Bucket/x"), /invalid S3 bucket/);
  assert.throws(() => parseUri("relative/path"), /unsupported URI/);
  assert.equal(joinUri("s3://b/p/", "/x", "y"), "s3://b/p/x/y");
});

test("S3 settings from env: endpoint → path-style, MinIO test variable fallback, validation", () => {
  const s = s3SettingsFromEnv({
    MERGEVQ_S3_ENDPOINT: "http://127.0.0.1:9000",
    AWS_ACCESS_KEY_ID: "k",
    AWS_SECRET_ACCESS_KEY: "s",
  });
  assert.equal(s.endpoint, "http://127.0.0.1:9000");
  assert.equal(s.forcePathStyle, true);
  assert.equal(s.region, "us-east-1");
  assert.equal(s3SettingsFromEnv({}).forcePathStyle, false);
  assert.equal(
    s3SettingsFromEnv({ AWS_ENDPOINT_URL: "http://h:1", AWS_S3_FORCE_PATH_STYLE: "false" }).forcePathStyle,
    false,
  );
  assert.throws(() => s3SettingsFromEnv({ AWS_ENDPOINT_URL: "h:1" }), /AWS_ENDPOINT_URL/);
  assert.throws(() => s3SettingsFromEnv({ AWS_MAX_ATTEMPTS: "0" }), /AWS_MAX_ATTEMPTS/);
});

test("backoff is full-jitter exponential and capped", () => {
  const o = { baseDelayMs: 100, maxDelayMs: 1000 };
  assert.equal(
    backoffDelay(3, o, () => 0.999999),
    799,
  );
  assert.equal(
    backoffDelay(10, o, () => 0.999999),
    999,
  );
  assert.equal(
    backoffDelay(10, o, () => 0),
    0,
  );
});

test("retry strategy retries server/throttling/transient errors up to maxAttempts, never client errors", async () => {
  const st = new JitterRetryStrategy({ maxAttempts: 3, baseDelayMs: 1, maxDelayMs: 10 });
  let t = await st.acquireInitialRetryToken("s3");
  t = await st.refreshRetryTokenForRetry(t, { errorType: "THROTTLING" });
  t = await st.refreshRetryTokenForRetry(t, { errorType: "TRANSIENT" });
  assert.equal(t.getRetryCount(), 2);
  await assert.rejects(st.refreshRetryTokenForRetry(t, { errorType: "SERVER_ERROR" }));
  await assert.rejects(
    st.refreshRetryTokenForRetry(await st.acquireInitialRetryToken("s3"), { errorType: "CLIENT_ERROR" }),
  );
});

test("global rank from NODE_RANK / NPROC_PER_NODE / local index over WORLD_SIZE", () => {
  assert.deepEqual(rankFromEnv(1, { NODE_RANK: "2", NPROC_PER_NODE: "2", WORLD_SIZE: "6" }), {
    rank: 5,
    worldSize: 6,
    nodeRank: 2,
    localIndex: 1,
    nprocPerNode: 2,
  });
  assert.equal(rankFromEnv(0, {}).worldSize, 1);
  assert.throws(() => rankFromEnv(2, { NPROC_PER_NODE: "2", WORLD_SIZE: "2" }), /local process index/);
  assert.throws(() => rankFromEnv(0, { NODE_RANK: "3", NPROC_PER_NODE: "1", WORLD_SIZE: "2" }), /WORLD_SIZE/);
  assert.throws(() => rankFromEnv(0, { NODE_RANK: "x" }), /NODE_RANK/);
});
