// Process group for data-parallel training across pods: TCP rendezvous on MASTER_PORT, a ring of direct
// neighbour connections, and collectives over length-prefixed binary frames (transport.ts).
//
// Rendezvous (rank 0 = "master"):
//   1. Rank 0 listens on MASTER_PORT (bound to MERGEVQ_DIST_BIND_ADDR, else the pod IP, else the resolved
//      MASTER_ADDR when it is a local address, else 0.0.0.0). Other ranks connect with retry (connection
//      refused, DNS not yet resolvable, …) until the rendezvous deadline. Connections that never send a
//      valid hello (TCP readiness probes, the operator's `nc -z` init container) are ignored.
//   2. Each rank opens its own ring listener on an ephemeral port on its own IP (MERGEVQ_POD_IP / POD_IP,
//      else the local address of its connection to rank 0) and sends a hello: global rank, world size,
//      NNODES, NPROC_PER_NODE, config hash, starting step, run and attempt, ring address.
//   3. Rank 0 verifies membership (same config hash, same step, same world size/topology, same run and
//      attempt, no duplicate rank). On a mismatch it tells every connected rank — and ranks joining in the
//      next 10 s — what differed, and all of them throw DistError("MEMBERSHIP_MISMATCH").
//   4. Rank 0 distributes all ring addresses; rank r connects to rank r+1 and accepts rank r−1; a barrier
//      over the ring completes the rendezvous. The star connections to rank 0 stay open (heartbeats, abort
//      propagation).
//
// Collectives run on the ring: all-reduce = reduce-scatter + all-gather (bandwidth-optimal: each rank sends
// 2(n−1)/n of the buffer), segmented into buckets (default 4 MB) with up to 4 buckets in flight so socket
// transfer overlaps the float adds and, in the fused form, the device→host copies of later gradients.
// Summation order is fixed by ring position (chunk c = ((x_c + x_{c+1}) + …) + x_{c−1}, then ÷ n on the
// owner), and the all-gather copies the owner's bytes to everyone: every rank ends with identical bytes,
// and the same inputs give the same bytes on every run.
//
// Failure semantics: a peer's socket closing (process killed, pod deleted) fails the group at once; the
// failing rank sends ABORT to its peers and closes its sockets, which cascades around the ring and the star.
// While waiting for a peer, silence (no bytes, heartbeats included; heartbeats are sent every second) longer
// than `silenceTimeoutMs` fails the group, and no single wait exceeds `opTimeoutMs` even while heartbeats
// arrive. Every collective then throws the DistError. With `exitOnFailure` (default) the process exit code
// is set (75, EXIT_CODE.PEER_FAILED, on the ranks another rank's failure took down; 1 on a rank that failed by
// itself) and the process is force-exited `exitGraceMs` later if something else keeps it alive.
// Note: heartbeats come from the event loop, so a rank inside one synchronous computation longer than the
// silence limit looks frozen to its neighbours: keep MERGEVQ_DIST_TIMEOUT_SECONDS above the slowest step.
import { createHash } from "node:crypto";
import dns from "node:dns/promises";
import net from "node:net";
import os from "node:os";
import { EXIT_CODE } from "../../../common/src/contract.ts";
import type { Logger } from "../../../common/src/logger.ts";
import { type DistEnv, resolveDistEnv } from "./env.ts";
import { Channel, type ChannelEvents, DistError, FrameType } from "./transport.ts";

export { DistError } from "./transport.ts";

const PROTOCOL_VERSION = 1;
const OP_RDZV = 0xfffffff0;
const OP_RING = 0xfffffff1;
const MISMATCH_GRACE_MS = 10_000;

export interface InitOptions {
  /** Environment to read (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** Arguments searched for `--local-rank` (default process.argv.slice(2)). */
  argv?: readonly string[];
  /** Local process index (overrides argv/env). */
  localRank?: number;
  /** Rendezvous deadline (default MERGEVQ_RENDEZVOUS_TIMEOUT_SECONDS, else 600 s). */
  timeoutMs?: number;
  /** Peer silence allowed while waiting in a collective (default MERGEVQ_DIST_TIMEOUT_SECONDS, else 60 s). */
  silenceTimeoutMs?: number;
  /** Hard limit on one wait (default MERGEVQ_DIST_OP_TIMEOUT_SECONDS, else 1800 s). */
  opTimeoutMs?: number;
  /** Hash of everything that must be identical on all ranks (see configHash()). */
  configHash: string;
  /** Optimiser step every rank starts (or resumes) from. */
  step: number;
  log?: Logger;
  /** All-reduce bucket size in bytes (default 4 MiB). */
  bucketBytes?: number;
  /** Buckets in flight at once (default 4). */
  maxInFlight?: number;
  /** Heartbeat interval (default 1000 ms). */
  heartbeatMs?: number;
  /**
   * On failure set process.exitCode (EXIT_CODE.PEER_FAILED when another rank caused it, else 1) and force exit
   * after `exitGraceMs` (default true, 10 s).
   */
  exitOnFailure?: boolean;
  exitGraceMs?: number;
  /** SIGTERM/SIGINT close the sockets (telling peers why) and exit 143/130 unless other handlers exist (default true). */
  handleSignals?: boolean;
}

interface Hello {
  v: number;
  rank: number;
  worldSize: number;
  nnodes: number;
  nprocPerNode: number;
  nodeRank: number;
  localRank: number;
  configHash: string;
  step: number;
  run: string | null;
  attempt: string | null;
  host: string;
  port: number;
  hostname: string;
  pid: number;
}

interface Peer {
  rank: number;
  host: string;
  port: number;
}

/** Stable hash of a JSON-able value (object keys sorted), for `configHash`. */
export function configHash(value: unknown): string {
  return createHash("sha256").update(stableStringify(value)).digest("hex").slice(0, 16);
}

function stableStringify(v: unknown): string {
  if (v === null || typeof v !== "object") return JSON.stringify(v) ?? "null";
  if (Array.isArray(v)) return `[${v.map(stableStringify).join(",")}]`;
  const o = v as Record<string, unknown>;
  return `{${Object.keys(o)
    .filter((k) => o[k] !== undefined)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${stableStringify(o[k])}`)
    .join(",")}}`;
}

const mod = (a: number, n: number) => ((a % n) + n) % n;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const stripV4Mapped = (a: string | undefined) => (a ?? "").replace(/^::ffff:/, "");

function abortPayload(code: DistError["code"], message: string): Buffer {
  return Buffer.from(JSON.stringify({ code, message }), "utf8");
}

function parseAbort(reason: string): { code: DistError["code"]; message: string } {
  try {
    const o = JSON.parse(reason) as { code?: DistError["code"]; message?: string };
    if (o && typeof o.message === "string") return { code: o.code ?? "ABORTED", message: o.message };
  } catch {
    // not JSON: a plain reason string
  }
  return { code: "ABORTED", message: reason };
}

/** A communicator over `worldSize` processes. Create it with initProcessGroup(). */
export class ProcessGroup {
  readonly rank: number;
  readonly worldSize: number;
  readonly localRank: number;
  readonly nodeRank: number;
  /** Rank 0: the only rank that writes checkpoints, progress.json and metrics.json. */
  readonly isMain: boolean;
  readonly bucketBytes: number;
  readonly maxInFlight: number;
  failure: DistError | undefined;
  private nextOp = 1;
  private readonly stagingPool: Float32Array[] = [];
  private timers: NodeJS.Timeout[] = [];
  private closedCleanly = false;
  private readonly failureListeners: ((e: DistError) => void)[] = [];
  private signalHandlers: [NodeJS.Signals, () => void][] = [];

  /** @internal use initProcessGroup() */
  constructor(
    readonly env: DistEnv,
    private readonly next: Channel | null,
    private readonly prev: Channel | null,
    private readonly star: Channel[],
    private readonly opts: Required<
      Pick<InitOptions, "silenceTimeoutMs" | "opTimeoutMs" | "heartbeatMs" | "exitOnFailure" | "exitGraceMs">
    > & {
      log?: Logger;
      bucketBytes: number;
      maxInFlight: number;
    },
  ) {
    this.rank = env.rank;
    this.worldSize = env.worldSize;
    this.localRank = env.localRank;
    this.nodeRank = env.nodeRank;
    this.isMain = env.rank === 0;
    this.bucketBytes = opts.bucketBytes;
    this.maxInFlight = opts.maxInFlight;
  }

  /** Alias of `rank` for data loaders (shard by global rank). */
  get globalRank(): number {
    return this.rank;
  }

  /** Remote addresses of the ring neighbours (host:port; null for a single process). */
  get neighbours(): { next: string; prev: string } | null {
    if (!this.next || !this.prev) return null;
    const a = (ch: Channel) => `${stripV4Mapped(ch.socket.remoteAddress)}:${ch.socket.remotePort}`;
    return { next: a(this.next), prev: a(this.prev) };
  }

  private get channels(): Channel[] {
    const s = new Set<Channel>(this.star);
    if (this.next) s.add(this.next);
    if (this.prev) s.add(this.prev);
    return [...s];
  }

  /** @internal */
  readonly events: ChannelEvents = {
    onAbort: (ch, reason) => {
      const a = parseAbort(reason);
      const mismatch = a.code === "MEMBERSHIP_MISMATCH";
      this.fail(
        new DistError(
          mismatch ? a.code : "ABORTED",
          `rank ${this.rank}: ${ch.label} aborted the group: ${a.message}`,
          !mismatch,
        ),
      );
    },
    onLost: (_ch, err) => this.fail(new DistError(err.code, `rank ${this.rank}: ${err.message}`, true)),
    onTimeout: (_ch, err) => this.fail(new DistError(err.code, `rank ${this.rank}: ${err.message}`, true)),
  };

  /** @internal start heartbeats, the silence watchdog and signal handlers */
  start(handleSignals: boolean): void {
    if (this.worldSize === 1) return;
    const hb = setInterval(() => {
      const now = Date.now();
      for (const ch of this.channels) {
        if (ch.socket.writableLength === 0 && now - ch.lastSend >= this.opts.heartbeatMs / 2)
          ch.trySend(FrameType.HEARTBEAT);
      }
    }, this.opts.heartbeatMs);
    const wd = setInterval(() => this.checkSilence(), Math.min(1000, Math.max(100, this.opts.silenceTimeoutMs / 4)));
    hb.unref();
    wd.unref();
    this.timers.push(hb, wd);
    if (handleSignals) {
      for (const [sig, code] of [
        ["SIGTERM", 143],
        ["SIGINT", 130],
      ] as const) {
        const h = () => {
          this.fail(new DistError("ABORTED", `rank ${this.rank} received ${sig}`), false);
          if (process.listenerCount(sig) === 0) process.exit(code);
        };
        process.once(sig, h);
        this.signalHandlers.push([sig, h]);
      }
    }
  }

  private checkSilence(): void {
    if (this.failure) return;
    const now = Date.now();
    for (const ch of this.channels) {
      for (const w of ch.pendingWaits) {
        const quiet = now - Math.max(ch.lastRecv, w.since);
        if (quiet > this.opts.silenceTimeoutMs) {
          this.fail(
            new DistError(
              "TIMEOUT",
              `rank ${this.rank}: no bytes (not even heartbeats) from ${ch.label} at ${ch.address} for ` +
                `${(quiet / 1000).toFixed(1)} s while waiting for ${w.what}: the peer is frozen, stuck in a long ` +
                "synchronous computation, or the network is partitioned (raise MERGEVQ_DIST_TIMEOUT_SECONDS if " +
                "steps are legitimately this slow)",
              true,
            ),
          );
          return;
        }
      }
    }
  }

  /** Register a callback run once when the group fails. */
  onFailure(cb: (e: DistError) => void): void {
    if (this.failure) cb(this.failure);
    else this.failureListeners.push(cb);
  }

  /** Fail the group: reject all waits, tell every peer why, close sockets. Idempotent. */
  fail(err: DistError, exit = true): void {
    if (this.failure || this.closedCleanly) return;
    this.failure = err;
    this.opts.log?.error({ rank: this.rank, code: err.code, err: err.message }, "process group failed");
    const payload = abortPayload(err.code, err.message).toString("utf8");
    for (const ch of this.channels) {
      ch.rejectAll(err);
      ch.close({ abortReason: payload });
    }
    this.stopTimers();
    for (const cb of this.failureListeners.splice(0)) {
      try {
        cb(err);
      } catch {
        // listeners must not break failure handling
      }
    }
    if (exit && this.opts.exitOnFailure) {
      const code = err.fromPeer ? EXIT_CODE.PEER_FAILED : EXIT_CODE.FAILED;
      process.exitCode = code;
      const t = setTimeout(() => {
        process.stderr.write(
          `process group failed and the process did not exit within ${this.opts.exitGraceMs} ms; exiting ${code}: ${err.message}\n`,
        );
        process.exit(code);
      }, this.opts.exitGraceMs);
      t.unref();
    }
  }

  /** Abort the group from user code (e.g. a non-finite loss on this rank), telling every peer why. */
  abort(reason: string): void {
    this.fail(new DistError("ABORTED", `rank ${this.rank}: ${reason}`));
  }

  private stopTimers(): void {
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    for (const [sig, h] of this.signalHandlers) process.removeListener(sig, h);
    this.signalHandlers = [];
  }

  private check(): void {
    if (this.failure) throw this.failure;
    if (this.closedCleanly) throw new DistError("CLOSED", `rank ${this.rank}: process group is closed`);
  }

  private allocOps(count: number): number[] {
    const ops: number[] = [];
    for (let i = 0; i < count; i++) ops.push(this.nextOp++);
    if (this.nextOp >= OP_RDZV) this.nextOp = 1;
    return ops;
  }

  private sendNext(op: number, seq: number, data: Uint8Array | Float32Array): Promise<void> {
    const bytes = data instanceof Uint8Array ? data : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    return (this.next as Channel).send(FrameType.DATA, op, seq, bytes);
  }

  private async recvPrev(op: number, seq: number, what: string, expectBytes?: number): Promise<Buffer> {
    const buf = await (this.prev as Channel).recv(FrameType.DATA, op, seq, what, this.opts.opTimeoutMs);
    if (expectBytes !== undefined && buf.length !== expectBytes) {
      const e = new DistError(
        "PROTOCOL",
        `rank ${this.rank}: ${what}: expected ${expectBytes} bytes from rank ${mod(this.rank - 1, this.worldSize)}, got ` +
          `${buf.length} (buffer sizes or gradient layouts differ between ranks)`,
      );
      this.fail(e);
      throw e;
    }
    return buf;
  }

  private async pool(count: number, fn: (i: number) => Promise<void>): Promise<void> {
    let nextIdx = 0;
    let err: unknown;
    const worker = async () => {
      while (nextIdx < count && err === undefined) {
        const i = nextIdx++;
        try {
          await fn(i);
        } catch (e) {
          err ??= e;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.maxInFlight, count) }, worker));
    if (err !== undefined) throw err;
  }

  /** Ring reduce-scatter + all-gather of `work` in place (mean when `mean`). */
  private async ringAllReduce(work: Float32Array, op: number, mean: boolean): Promise<void> {
    const n = this.worldSize;
    const r = this.rank;
    const len = work.length;
    const lo = (i: number) => Math.floor((i * len) / n);
    const chunk = (i: number) => work.subarray(lo(i), lo(i + 1));
    const lastWrite: (Promise<void> | undefined)[] = new Array(n);
    const writes: Promise<void>[] = [];
    const send = (seq: number, i: number) => {
      const p = this.sendNext(op, seq, chunk(i));
      lastWrite[i] = p;
      writes.push(p);
    };
    for (let s = 0; s < n - 1; s++) {
      send(s, mod(r - s, n));
      const ri = mod(r - s - 1, n);
      const dst = chunk(ri);
      const buf = await this.recvPrev(op, s, `all-reduce #${op} reduce-scatter step ${s}`, dst.byteLength);
      const src = new Float32Array(buf.buffer, buf.byteOffset, dst.length);
      for (let i = 0; i < dst.length; i++) dst[i] = src[i] + dst[i];
      (this.prev as Channel).release(buf);
    }
    if (mean) {
      const own = chunk(mod(r + 1, n));
      for (let i = 0; i < own.length; i++) own[i] = own[i] / n;
    }
    for (let s = 0; s < n - 1; s++) {
      send(n - 1 + s, mod(r + 1 - s, n));
      const ri = mod(r - s, n);
      const dst = chunk(ri);
      const buf = await this.recvPrev(op, n - 1 + s, `all-reduce #${op} all-gather step ${s}`, dst.byteLength);
      await lastWrite[ri]; // the chunk may still be queued for sending from the reduce-scatter phase
      dst.set(new Float32Array(buf.buffer, buf.byteOffset, dst.length));
      (this.prev as Channel).release(buf);
    }
    await Promise.all(writes);
  }

  /**
   * Elementwise mean over all ranks. Returns a new array (the input is not modified) unless `inPlace`
   * (then `x` is overwritten and returned: no output allocation). Bit-identical on every rank.
   */
  async allReduceMean(x: Float32Array, opts: { inPlace?: boolean } = {}): Promise<Float32Array> {
    if (opts.inPlace) {
      this.check();
      if (this.worldSize === 1) return x;
      const B = Math.max(1, Math.floor(this.bucketBytes / 4));
      const nb = Math.ceil(x.length / B);
      const ops = this.allocOps(nb);
      await this.pool(nb, (b) => this.ringAllReduce(x.subarray(b * B, Math.min(x.length, (b + 1) * B)), ops[b], true));
      return x;
    }
    return (await this.allReduceMeanFused([{ size: x.length, data: x }]))[0];
  }

  /** Elementwise sum over all ranks (same algorithm and guarantees as allReduceMean). */
  async allReduceSum(x: Float32Array): Promise<Float32Array> {
    return (await this.allReduceFused([{ size: x.length, data: x }], false))[0];
  }

  /**
   * Mean of a list of arrays, fused into `bucketBytes` buckets (arrays may span buckets). `data` may be a
   * promise (e.g. `tensor.data()`): a bucket starts reducing as soon as the arrays it covers are ready, so
   * transfers overlap the device→host copies of later arrays. All ranks must pass the same sizes in the
   * same order. Returns new arrays.
   */
  async allReduceMeanFused(
    items: readonly { size: number; data: Float32Array | Promise<Float32Array> }[],
  ): Promise<Float32Array[]> {
    return this.allReduceFused(items, true);
  }

  private async allReduceFused(
    items: readonly { size: number; data: Float32Array | Promise<Float32Array> }[],
    mean: boolean,
  ): Promise<Float32Array[]> {
    this.check();
    const outs = items.map((it) => new Float32Array(it.size));
    const starts: number[] = [];
    let total = 0;
    for (const it of items) {
      starts.push(total);
      total += it.size;
    }
    const B = Math.max(1, Math.floor(this.bucketBytes / 4));
    const nb = Math.ceil(total / B);
    const ops = this.worldSize > 1 ? this.allocOps(nb) : [];
    const ready = items.map(async (it, k) => {
      const d = await it.data;
      if (d.length !== it.size)
        throw new DistError("CONFIG", `array ${k}: declared size ${it.size}, data has ${d.length}`);
      return d;
    });
    for (const p of ready) p.catch(() => undefined);
    await this.pool(nb, async (b) => {
      const start = b * B;
      const end = Math.min(total, start + B);
      // A bucket inside one array is reduced in place in that array's output; others are staged in a
      // reused bucket buffer (fresh pages cost more than the copies).
      const single = items.findIndex((it, k) => starts[k] <= start && end <= starts[k] + it.size);
      if (single >= 0) {
        const d = await ready[single];
        const seg = outs[single].subarray(start - starts[single], end - starts[single]);
        seg.set(d.subarray(start - starts[single], end - starts[single]));
        if (this.worldSize > 1) {
          this.check();
          await this.ringAllReduce(seg, ops[b], mean);
        }
        return;
      }
      const staging = this.stagingPool.pop() ?? new Float32Array(B);
      const buf = staging.subarray(0, end - start);
      const covering: number[] = [];
      for (let k = 0; k < items.length; k++) {
        const s = starts[k];
        const e = s + items[k].size;
        if (e <= start || s >= end || items[k].size === 0) continue;
        covering.push(k);
        const d = await ready[k];
        const a = Math.max(s, start);
        const z = Math.min(e, end);
        buf.set(d.subarray(a - s, z - s), a - start);
      }
      if (this.worldSize > 1) {
        this.check();
        await this.ringAllReduce(buf, ops[b], mean);
      }
      for (const k of covering) {
        const s = starts[k];
        const a = Math.max(s, start);
        const z = Math.min(s + items[k].size, end);
        outs[k].set(buf.subarray(a - start, z - start), a - s);
      }
      if (staging.length === B && this.stagingPool.length < this.maxInFlight) this.stagingPool.push(staging);
    });
    return outs;
  }

  /**
   * Broadcast from `root` into the same-shaped arrays on every rank (filled in place and returned).
   * Pipelined along the ring in ≤ 1 MiB frames. Sizes are verified against the root's.
   */
  async broadcast(arrays: Float32Array[], root = 0): Promise<Float32Array[]> {
    this.check();
    if (this.worldSize === 1) return arrays;
    const [op] = this.allocOps(1);
    const n = this.worldSize;
    const isRoot = this.rank === root;
    const forward = mod(this.rank + 1, n) !== root;
    const layout = Uint32Array.from([arrays.length, ...arrays.map((a) => a.length)]);
    const writes: Promise<void>[] = [];
    if (isRoot) writes.push(this.sendNext(op, 0, new Uint8Array(layout.buffer)));
    else {
      const buf = await this.recvPrev(op, 0, `broadcast #${op} layout`);
      const theirs = new Uint32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length));
      const diff = describeLayoutDiff(theirs, layout);
      if (diff) {
        const e = new DistError("PROTOCOL", `rank ${this.rank}: broadcast from rank ${root}: ${diff}`);
        this.fail(e);
        throw e;
      }
      if (forward) writes.push(this.sendNext(op, 0, new Uint8Array(buf.buffer, buf.byteOffset, buf.length)));
    }
    const CH = 1 << 18; // floats per frame (1 MiB)
    let seq = 1;
    for (const a of arrays) {
      for (let o = 0; o < a.length; o += CH) {
        const piece = a.subarray(o, Math.min(a.length, o + CH));
        if (!isRoot) {
          const buf = await this.recvPrev(op, seq, `broadcast #${op} frame ${seq}`, piece.byteLength);
          piece.set(new Float32Array(buf.buffer, buf.byteOffset, piece.length));
        }
        if (isRoot || forward) writes.push(this.sendNext(op, seq, piece));
        seq++;
      }
    }
    await Promise.all(writes);
    return arrays;
  }

  /** Broadcast an opaque byte string from `root` (other ranks pass null or anything; they get the root's bytes). */
  async broadcastBytes(bytes: Uint8Array | null, root = 0): Promise<Uint8Array> {
    this.check();
    if (this.worldSize === 1) return bytes ?? new Uint8Array(0);
    const [op] = this.allocOps(1);
    const isRoot = this.rank === root;
    const forward = mod(this.rank + 1, this.worldSize) !== root;
    const CH = 1 << 20;
    const writes: Promise<void>[] = [];
    let data: Uint8Array;
    if (isRoot) {
      if (!bytes) throw new DistError("CONFIG", `rank ${this.rank}: broadcastBytes root must pass the bytes`);
      data = bytes;
      const hdr = new Float64Array([data.length]);
      writes.push(this.sendNext(op, 0, new Uint8Array(hdr.buffer)));
    } else {
      const hdr = await this.recvPrev(op, 0, `broadcastBytes #${op} header`, 8);
      const len = new Float64Array(hdr.buffer.slice(hdr.byteOffset, hdr.byteOffset + 8))[0];
      data = new Uint8Array(len);
      if (forward) writes.push(this.sendNext(op, 0, hdr));
    }
    let seq = 1;
    for (let o = 0; o < data.length; o += CH) {
      const piece = data.subarray(o, Math.min(data.length, o + CH));
      if (!isRoot) piece.set(await this.recvPrev(op, seq, `broadcastBytes #${op} frame ${seq}`, piece.length));
      if (isRoot || forward) writes.push(this.sendNext(op, seq, piece));
      seq++;
    }
    await Promise.all(writes);
    return data;
  }

  /** Every rank's bytes, indexed by rank (ring all-gather; blocks may differ in length). */
  async allGather(bytes: Uint8Array): Promise<Uint8Array[]> {
    this.check();
    const n = this.worldSize;
    const blocks: Uint8Array[] = new Array(n);
    blocks[this.rank] = bytes;
    if (n === 1) return blocks;
    const [op] = this.allocOps(1);
    const writes: Promise<void>[] = [];
    for (let s = 0; s < n - 1; s++) {
      writes.push(this.sendNext(op, s, blocks[mod(this.rank - s, n)]));
      blocks[mod(this.rank - s - 1, n)] = await this.recvPrev(op, s, `all-gather #${op} step ${s}`);
    }
    await Promise.all(writes);
    return blocks;
  }

  /**
   * Reduce a few numbers (losses, metrics) over all ranks in float64, summed in rank order 0…n−1 so every
   * rank gets identical values. `op` "mean" (default) or "sum".
   */
  async allReduceScalars(values: readonly number[], op: "mean" | "sum" = "mean"): Promise<number[]> {
    const mine = Float64Array.from(values);
    const all = await this.allGather(new Uint8Array(mine.buffer));
    const out = new Float64Array(values.length);
    for (let r = 0; r < all.length; r++) {
      const b = all[r];
      if (b.length !== mine.byteLength) {
        const e = new DistError(
          "PROTOCOL",
          `rank ${this.rank}: allReduceScalars: rank ${r} sent ${b.length / 8} values, this rank ${values.length}`,
        );
        this.fail(e);
        throw e;
      }
      const v = new Float64Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.length));
      for (let i = 0; i < out.length; i++) out[i] += v[i];
    }
    if (op === "mean") for (let i = 0; i < out.length; i++) out[i] /= all.length;
    return [...out];
  }

  /** Returns once every rank has called barrier(). */
  async barrier(): Promise<void> {
    await this.allGather(new Uint8Array(0));
  }

  /** Leave the group cleanly: barrier (unless `barrier: false`), BYE to every peer, close sockets. */
  async close(opts: { barrier?: boolean } = {}): Promise<void> {
    if (this.failure || this.closedCleanly) {
      this.stopTimers();
      return;
    }
    if (opts.barrier !== false && this.worldSize > 1) await this.barrier();
    this.closedCleanly = true;
    this.stopTimers();
    for (const ch of this.channels) ch.close({ bye: true });
  }
}

function describeLayoutDiff(root: Uint32Array, mine: Uint32Array): string | null {
  if (root[0] !== mine[0]) return `root has ${root[0]} arrays, this rank ${mine[0]}`;
  for (let i = 1; i < root.length; i++) {
    if (root[i] !== mine[i]) return `array ${i - 1} has ${root[i]} elements on the root, ${mine[i]} here`;
  }
  return null;
}

// ---------------------------------------------------------------------------------------------------------
// Rendezvous

function listen(server: net.Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const onErr = (e: Error) => {
      server.removeListener("listening", onOk);
      reject(e);
    };
    const onOk = () => {
      server.removeListener("error", onErr);
      resolve();
    };
    server.once("error", onErr);
    server.once("listening", onOk);
    server.listen({ host, port, exclusive: true });
  });
}

async function listenMaster(d: DistEnv, deadline: number, log?: Logger): Promise<net.Server> {
  const candidates: string[] = [];
  if (d.bindAddr) candidates.push(d.bindAddr);
  else {
    if (d.podIp) candidates.push(d.podIp);
    try {
      const { address } = await dns.lookup(d.masterAddr);
      if (!candidates.includes(address)) candidates.push(address);
    } catch {
      // MASTER_ADDR not resolvable yet (headless Service DNS lags the pod): fall through to 0.0.0.0
    }
    candidates.push("0.0.0.0");
  }
  let lastErr: Error | undefined;
  for (;;) {
    for (const host of candidates) {
      const server = net.createServer();
      try {
        await listen(server, host, d.masterPort);
        log?.info({ host, port: d.masterPort }, "rank 0 listening for rendezvous");
        return server;
      } catch (e) {
        lastErr = e as Error;
        server.close();
        const code = (e as NodeJS.ErrnoException).code;
        if (code === "EADDRINUSE") break; // retry the same preference order after a pause
      }
    }
    if (Date.now() > deadline) {
      throw new DistError(
        "RENDEZVOUS_TIMEOUT",
        `rank 0: cannot listen on MASTER_PORT=${d.masterPort} (tried ${candidates.join(", ")}): ${lastErr?.message}`,
      );
    }
    await sleep(500);
  }
}

function connectOnce(host: string, port: number, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host, port });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(Object.assign(new Error(`connect to ${host}:${port} timed out`), { code: "ETIMEDOUT" }));
    }, timeoutMs);
    sock.once("connect", () => {
      clearTimeout(timer);
      sock.removeAllListeners("error");
      resolve(sock);
    });
    sock.once("error", (e) => {
      clearTimeout(timer);
      sock.destroy();
      reject(e);
    });
  });
}

/** Connect with retry (refused, unresolvable, unreachable, reset) until `deadline`. */
async function connectRetry(
  host: string,
  port: number,
  deadline: number,
  what: string,
  rank: number,
  timeoutS: number,
): Promise<net.Socket> {
  let delay = 100;
  let lastErr: Error | undefined;
  let attempts = 0;
  while (Date.now() < deadline) {
    attempts++;
    try {
      return await connectOnce(host, port, Math.max(100, Math.min(5000, deadline - Date.now())));
    } catch (e) {
      lastErr = e as Error;
    }
    await sleep(Math.min(delay, Math.max(0, deadline - Date.now())));
    delay = Math.min(2000, delay * 1.5);
  }
  throw new DistError(
    "RENDEZVOUS_TIMEOUT",
    `rank ${rank}: rendezvous timed out after ${timeoutS} s: could not connect to ${what} at ${host}:${port} ` +
      `(${attempts} attempts; last error: ${(lastErr as NodeJS.ErrnoException | undefined)?.code ?? ""} ${lastErr?.message ?? "none"})`,
  );
}

function helloOf(d: DistEnv, cfgHash: string, step: number, host: string, port: number): Hello {
  return {
    v: PROTOCOL_VERSION,
    rank: d.rank,
    worldSize: d.worldSize,
    nnodes: d.nnodes,
    nprocPerNode: d.nprocPerNode,
    nodeRank: d.nodeRank,
    localRank: d.localRank,
    configHash: cfgHash,
    step,
    run: d.run ?? null,
    attempt: d.attempt ?? null,
    host,
    port,
    hostname: os.hostname(),
    pid: process.pid,
  };
}

function membershipDiff(mine: Hello, theirs: Hello): string[] {
  const diffs: string[] = [];
  const fields = ["v", "worldSize", "nnodes", "nprocPerNode", "configHash", "step", "run", "attempt"] as const;
  const names: Record<(typeof fields)[number], string> = {
    v: "protocol version",
    worldSize: "WORLD_SIZE",
    nnodes: "NNODES",
    nprocPerNode: "NPROC_PER_NODE",
    configHash: "config hash",
    step: "starting step",
    run: "MERGEVQ_RUN",
    attempt: "MERGEVQ_ATTEMPT",
  };
  for (const f of fields) {
    if (mine[f] !== theirs[f])
      diffs.push(`${names[f]} ${JSON.stringify(theirs[f])} ≠ rank 0's ${JSON.stringify(mine[f])}`);
  }
  return diffs;
}

const describeRank = (h: Hello) =>
  `rank ${h.rank} (node ${h.nodeRank}, local ${h.localRank}, ${h.hostname} pid ${h.pid})`;

function openRingListener(host: string): Promise<net.Server> {
  const server = net.createServer();
  return listen(server, host, 0).then(() => server);
}

/**
 * Join the process group described by the rendezvous env. With WORLD_SIZE 1 (or unset) it returns a
 * trivial group at once (collectives return copies), so trainers can call it unconditionally.
 */
export async function initProcessGroup(opts: InitOptions): Promise<ProcessGroup> {
  const d = resolveDistEnv({ env: opts.env, argv: opts.argv, localRank: opts.localRank });
  const timeoutMs = opts.timeoutMs ?? d.rendezvousTimeoutMs;
  const pgOpts = {
    silenceTimeoutMs: opts.silenceTimeoutMs ?? d.silenceTimeoutMs,
    opTimeoutMs: opts.opTimeoutMs ?? d.opTimeoutMs,
    heartbeatMs: opts.heartbeatMs ?? 1000,
    exitOnFailure: opts.exitOnFailure ?? true,
    exitGraceMs: opts.exitGraceMs ?? 10_000,
    log: opts.log,
    bucketBytes: opts.bucketBytes ?? 4 << 20,
    maxInFlight: opts.maxInFlight ?? 4,
  };
  if (d.worldSize === 1) return new ProcessGroup(d, null, null, [], pgOpts);
  const t0 = Date.now();
  const deadline = t0 + timeoutMs;
  const timeoutS = Math.round(timeoutMs / 1000);
  const log = opts.log;
  // Channel events are routed through this holder: before the group exists, failures reject the pending
  // rendezvous waits; afterwards they fail the group.
  let group: ProcessGroup | null = null;
  const setupEvents: ChannelEvents = {
    onAbort: (ch, reason) => {
      if (group) return group.events.onAbort(ch, reason);
      const a = parseAbort(reason);
      ch.rejectAll(new DistError(a.code, `rank ${d.rank}: ${ch.label} aborted the rendezvous: ${a.message}`));
    },
    onLost: (ch, err) =>
      group ? group.events.onLost(ch, err) : ch.rejectAll(new DistError(err.code, `rank ${d.rank}: ${err.message}`)),
    onTimeout: (ch, err) => (group ? group.events.onTimeout(ch, err) : ch.rejectAll(err)),
  };
  const allChannels: Channel[] = [];
  const servers: net.Server[] = [];
  const cleanup = (reason?: DistError) => {
    for (const s of servers) s.close();
    for (const ch of allChannels) {
      ch.rejectAll(reason ?? new DistError("CLOSED", "rendezvous ended"));
      ch.close(reason ? { abortReason: abortPayload(reason.code, reason.message).toString("utf8") } : {});
    }
  };
  const remaining = () => Math.max(1, deadline - Date.now());
  const n = d.worldSize;
  const nextRank = mod(d.rank + 1, n);
  const prevRank = mod(d.rank - 1, n);
  // Accept rank−1 on the ring listener. Installed as soon as the listener exists: the neighbour may
  // connect before this rank has even received the peer list.
  const acceptPrev = (ringServer: net.Server) => {
    const p = new Promise<Channel>((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(
            new DistError(
              "RENDEZVOUS_TIMEOUT",
              `rank ${d.rank}: rendezvous timed out after ${timeoutS} s: rank ${prevRank} never connected to this rank's ring port`,
            ),
          ),
        remaining(),
      );
      timer.unref();
      ringServer.on("connection", (sock) => {
        const ch = new Channel(sock, -1, `ring connection from ${stripV4Mapped(sock.remoteAddress)}`, setupEvents);
        ch.recv(FrameType.CONTROL, OP_RING, 0, "ring hello", remaining()).then(
          (buf) => {
            const h = JSON.parse(buf.toString("utf8")) as { rank: number; configHash: string };
            if (h.rank !== prevRank || h.configHash !== opts.configHash) {
              ch.close();
              return;
            }
            clearTimeout(timer);
            allChannels.push(ch);
            resolve(relabel(ch, prevRank, `rank ${prevRank} (ring prev)`));
          },
          () => ch.close(),
        );
      });
    });
    p.catch(() => undefined);
    return p;
  };

  try {
    let peers: Peer[];
    let star: Channel[];
    let ringServer: net.Server;
    let prevP: Promise<Channel>;
    if (d.rank === 0) {
      const master = await listenMaster(d, deadline, log);
      servers.push(master);
      const joined = new Map<number, { ch: Channel; hello: Hello }>();
      const mismatches: string[] = [];
      let mismatchDeadline = Number.POSITIVE_INFINITY;
      let firstLocal: string | undefined;
      let wake: () => void = () => undefined;
      const mineProbe = helloOf(d, opts.configHash, opts.step, "", 0);
      master.on("connection", (sock) => {
        const ch = new Channel(sock, -1, `connection from ${stripV4Mapped(sock.remoteAddress)}`, setupEvents);
        ch.recv(FrameType.CONTROL, OP_RDZV, 0, "hello", remaining()).then(
          (buf) => {
            let hello: Hello;
            try {
              hello = JSON.parse(buf.toString("utf8")) as Hello;
            } catch {
              ch.close();
              return;
            }
            const label = describeRank(hello);
            const diffs = membershipDiff(mineProbe, hello);
            if (!Number.isInteger(hello.rank) || hello.rank < 1 || hello.rank >= d.worldSize)
              diffs.push(`global rank ${hello.rank} is outside 1…${d.worldSize - 1}`);
            else if (joined.has(hello.rank))
              diffs.push(
                `global rank ${hello.rank} already joined from ${describeRank(joined.get(hello.rank)!.hello)}`,
              );
            if (diffs.length) {
              mismatches.push(`${label} differs: ${diffs.join("; ")}`);
              mismatchDeadline = Math.min(mismatchDeadline, Date.now() + MISMATCH_GRACE_MS);
              const msg = `membership mismatch: ${mismatches.join(" | ")}`;
              for (const j of [...joined.values()].map((x) => x.ch).concat(ch)) {
                j.close({ abortReason: abortPayload("MEMBERSHIP_MISMATCH", msg).toString("utf8") });
              }
              wake();
              return;
            }
            if (mismatches.length) {
              ch.close({
                abortReason: abortPayload(
                  "MEMBERSHIP_MISMATCH",
                  `membership mismatch: ${mismatches.join(" | ")}`,
                ).toString("utf8"),
              });
              return;
            }
            firstLocal ??= stripV4Mapped(sock.localAddress);
            joined.set(hello.rank, { ch, hello });
            allChannels.push(ch);
            wake();
          },
          () => ch.close(), // probe connection or garbage: ignore
        );
      });
      // Wait for everyone (or a mismatch grace period, or the deadline).
      while (joined.size < d.worldSize - 1 && mismatches.length === 0 && Date.now() < deadline) {
        await new Promise<void>((r) => {
          wake = r;
          setTimeout(r, Math.min(500, remaining())).unref();
        });
      }
      if (mismatches.length) {
        while (Date.now() < Math.min(mismatchDeadline, deadline) && joined.size + mismatches.length < d.worldSize - 1) {
          await new Promise<void>((r) => {
            wake = r;
            setTimeout(r, 200).unref();
          });
        }
        throw new DistError("MEMBERSHIP_MISMATCH", `rank 0: membership mismatch: ${mismatches.join(" | ")}`);
      }
      if (joined.size < d.worldSize - 1) {
        const missing = [];
        for (let r = 1; r < d.worldSize; r++) if (!joined.has(r)) missing.push(r);
        throw new DistError(
          "RENDEZVOUS_TIMEOUT",
          `rank 0: rendezvous timed out after ${timeoutS} s: ${joined.size + 1}/${d.worldSize} ranks joined; ` +
            `missing global ranks ${missing.join(", ")} (nodes ${[...new Set(missing.map((r) => Math.floor(r / d.nprocPerNode)))].join(", ")})`,
        );
      }
      master.close(); // no more joiners; established connections stay open
      const host = d.podIp ?? firstLocal ?? "127.0.0.1";
      ringServer = await openRingListener(host);
      servers.push(ringServer);
      prevP = acceptPrev(ringServer);
      const port = (ringServer.address() as net.AddressInfo).port;
      peers = [{ rank: 0, host, port }];
      for (const { hello } of joined.values()) peers.push({ rank: hello.rank, host: hello.host, port: hello.port });
      peers.sort((a, b) => a.rank - b.rank);
      star = [];
      for (const { ch, hello } of [...joined.values()].sort((a, b) => a.hello.rank - b.hello.rank)) {
        star.push(relabel(ch, hello.rank, `rank ${hello.rank} (star)`));
        await ch.send(FrameType.CONTROL, OP_RDZV, 1, Buffer.from(JSON.stringify({ peers }), "utf8"));
      }
    } else {
      const sock = await connectRetry(
        d.masterAddr,
        d.masterPort,
        deadline,
        `rank 0 (MASTER_ADDR:MASTER_PORT)`,
        d.rank,
        timeoutS,
      );
      const ch = new Channel(sock, 0, "rank 0 (star)", setupEvents);
      allChannels.push(ch);
      const host = d.podIp ?? stripV4Mapped(sock.localAddress);
      ringServer = await openRingListener(host);
      servers.push(ringServer);
      prevP = acceptPrev(ringServer);
      const port = (ringServer.address() as net.AddressInfo).port;
      await ch.send(
        FrameType.CONTROL,
        OP_RDZV,
        0,
        Buffer.from(JSON.stringify(helloOf(d, opts.configHash, opts.step, host, port)), "utf8"),
      );
      let welcome: Buffer;
      try {
        welcome = await ch.recv(FrameType.CONTROL, OP_RDZV, 1, "the peer list from rank 0", remaining());
      } catch (e) {
        if (e instanceof DistError && e.code === "TIMEOUT") {
          throw new DistError(
            "RENDEZVOUS_TIMEOUT",
            `rank ${d.rank}: rendezvous timed out after ${timeoutS} s: connected to rank 0 but not all ${d.worldSize} ranks joined`,
          );
        }
        throw e;
      }
      peers = (JSON.parse(welcome.toString("utf8")) as { peers: Peer[] }).peers;
      star = [ch];
    }

    // Ring: connect to rank+1 (rank−1 is accepted by acceptPrev).
    const np = peers.find((p) => p.rank === nextRank);
    if (!np) throw new DistError("PROTOCOL", `rank ${d.rank}: rank 0's peer list has no rank ${nextRank}`);
    const nextSock = await connectRetry(np.host, np.port, deadline, `rank ${nextRank}'s ring port`, d.rank, timeoutS);
    const nextCh = new Channel(nextSock, nextRank, `rank ${nextRank} (ring next)`, setupEvents);
    allChannels.push(nextCh);
    await nextCh.send(
      FrameType.CONTROL,
      OP_RING,
      0,
      Buffer.from(JSON.stringify({ rank: d.rank, configHash: opts.configHash }), "utf8"),
    );
    const prevCh = await prevP;
    ringServer.close();
    group = new ProcessGroup(d, nextCh, prevCh, star, pgOpts);
    group.start(opts.handleSignals ?? true);
    await group.barrier();
    log?.info(
      { rank: d.rank, worldSize: n, nodeRank: d.nodeRank, localRank: d.localRank, next: np, ms: Date.now() - t0 },
      "process group ready",
    );
    return group;
  } catch (e) {
    const err =
      e instanceof DistError
        ? e
        : new DistError("PROTOCOL", `rank ${d.rank}: rendezvous failed: ${(e as Error).message ?? String(e)}`);
    if (group) group.fail(err, false);
    cleanup(err);
    log?.error({ rank: d.rank, code: err.code, err: err.message }, "rendezvous failed");
    throw err;
  }
}

/** Channel identity is fixed at construction; the hello-time channel becomes a rank's channel here. */
function relabel(ch: Channel, rank: number, label: string): Channel {
  Object.assign(ch as unknown as { peerRank: number; label: string }, { peerRank: rank, label });
  return ch;
}
