// Length-prefixed binary frames over TCP, and a Channel (one socket to one peer) with keyed receive,
// per-wait timeouts and liveness bookkeeping for heartbeats.
//
// Frame = 16-byte header + payload (little endian):
//   u32 payload bytes | u8 type | u8 flags (0) | u16 magic 0x4D56 ("MV") | u32 op | u32 seq
// Tensor payloads are raw float32/float64 bytes (never JSON); CONTROL frames (rendezvous only) carry UTF-8
// JSON. A connection whose first header has the wrong magic (a TCP readiness probe, `nc -z`, a stray HTTP
// client) is dropped without affecting the group.
import type net from "node:net";

export const FrameType = {
  DATA: 1,
  HEARTBEAT: 2,
  ABORT: 3,
  CONTROL: 4,
  BYE: 5,
} as const;
export type FrameType = (typeof FrameType)[keyof typeof FrameType];

export const HEADER_BYTES = 16;
export const MAGIC = 0x4d56;
/** Largest accepted payload: a guard against garbage lengths, far above any bucket. */
export const MAX_PAYLOAD = 1 << 30;

export interface Frame {
  type: FrameType;
  op: number;
  seq: number;
  payload: Buffer;
}

export class DistError extends Error {
  constructor(
    readonly code:
      | "RENDEZVOUS_TIMEOUT"
      | "MEMBERSHIP_MISMATCH"
      | "PEER_LOST"
      | "TIMEOUT"
      | "ABORTED"
      | "PROTOCOL"
      | "CLOSED"
      | "CONFIG",
    message: string,
    /**
     * The group failed because of another rank (its socket closed, it aborted the group, it went silent),
     * not because of anything this rank did: the process exits EXIT_CODE.PEER_FAILED so the operator looks for
     * the rank that failed first. Set by the ProcessGroup for failures after rendezvous.
     */
    readonly fromPeer = false,
  ) {
    super(message);
    this.name = "DistError";
  }
}

/** A DistError caused by another rank, anywhere in `e`'s cause chain. */
export function isPeerFailure(e: unknown): boolean {
  for (let c: unknown = e, depth = 0; c instanceof Error && depth < 8; c = c.cause, depth++) {
    if (c instanceof DistError) return c.fromPeer;
  }
  return false;
}

export function encodeHeader(type: FrameType, op: number, seq: number, payloadBytes: number): Buffer {
  const h = Buffer.allocUnsafe(HEADER_BYTES);
  h.writeUInt32LE(payloadBytes, 0);
  h.writeUInt8(type, 4);
  h.writeUInt8(0, 5);
  h.writeUInt16LE(MAGIC, 6);
  h.writeUInt32LE(op >>> 0, 8);
  h.writeUInt32LE(seq >>> 0, 12);
  return h;
}

/**
 * Incremental frame parser. Payloads are copied once into their own (non-pooled, 8-byte aligned)
 * buffer, so `new Float32Array(payload.buffer, payload.byteOffset, n)` views are always valid.
 */
export class FrameReader {
  private header = Buffer.alloc(HEADER_BYTES);
  private headerFill = 0;
  private payload: Buffer | null = null;
  private payloadFill = 0;
  private cur: { type: FrameType; op: number; seq: number } | null = null;

  constructor(
    private readonly onFrame: (f: Frame) => void,
    private readonly alloc: (len: number) => Buffer = (len) => Buffer.allocUnsafeSlow(len),
  ) {}

  /** Feed bytes; throws DistError("PROTOCOL") on a malformed header. */
  push(chunk: Buffer): void {
    let off = 0;
    while (off < chunk.length) {
      if (!this.cur) {
        const n = Math.min(HEADER_BYTES - this.headerFill, chunk.length - off);
        chunk.copy(this.header, this.headerFill, off, off + n);
        this.headerFill += n;
        off += n;
        if (this.headerFill < HEADER_BYTES) return;
        this.headerFill = 0;
        const len = this.header.readUInt32LE(0);
        const type = this.header.readUInt8(4) as FrameType;
        if (this.header.readUInt16LE(6) !== MAGIC)
          throw new DistError("PROTOCOL", "bad frame magic (not a MergeVQ dist peer)");
        if (type < FrameType.DATA || type > FrameType.BYE)
          throw new DistError("PROTOCOL", `unknown frame type ${type}`);
        if (len > MAX_PAYLOAD)
          throw new DistError("PROTOCOL", `frame payload of ${len} bytes exceeds the ${MAX_PAYLOAD} limit`);
        this.cur = { type, op: this.header.readUInt32LE(8), seq: this.header.readUInt32LE(12) };
        this.payload = len === 0 ? EMPTY : this.alloc(len);
        this.payloadFill = 0;
      }
      const p = this.payload as Buffer;
      const n = Math.min(p.length - this.payloadFill, chunk.length - off);
      if (n > 0) {
        chunk.copy(p, this.payloadFill, off, off + n);
        this.payloadFill += n;
        off += n;
      }
      if (this.payloadFill === p.length) {
        const cur = this.cur;
        this.cur = null;
        this.payload = null;
        this.onFrame({ ...cur, payload: p });
      }
    }
  }
}

const EMPTY = Buffer.alloc(0);

interface Waiter {
  resolve: (b: Buffer) => void;
  reject: (e: Error) => void;
  since: number;
  what: string;
  timer: NodeJS.Timeout | null;
}

export interface ChannelEvents {
  /** The peer sent ABORT with a reason. */
  onAbort(ch: Channel, reason: string): void;
  /** The socket closed or errored without a prior BYE, or the peer violated the protocol. */
  onLost(ch: Channel, err: DistError): void;
  /** A receive waited longer than allowed. */
  onTimeout(ch: Channel, err: DistError): void;
}

/**
 * One TCP connection to one peer. Frames of type DATA/CONTROL are delivered by key (type, op, seq): a
 * receive either takes an already-arrived frame or waits for it. Every wait has a hard limit; silence
 * (no bytes at all, heartbeats included) while waiting is checked by the group's watchdog via `lastRecv`.
 */
export class Channel {
  lastRecv = Date.now();
  lastSend = Date.now();
  byeReceived = false;
  closed = false;
  private readonly inbox = new Map<string, Buffer>();
  private readonly waiters = new Map<string, Waiter>();
  private readonly reader: FrameReader;
  /** Reusable payload buffers by size: fresh pages cost far more than the copy itself. */
  private readonly pool = new Map<number, Buffer[]>();

  constructor(
    readonly socket: net.Socket,
    readonly peerRank: number,
    readonly label: string,
    private readonly events: ChannelEvents,
    initial?: Buffer,
  ) {
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 10_000);
    this.reader = new FrameReader(
      (f) => this.onFrame(f),
      (len) => this.pool.get(len)?.pop() ?? Buffer.allocUnsafeSlow(len),
    );
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", (e) => this.lost(new DistError("PEER_LOST", `${label}: socket error: ${e.message}`)));
    socket.on("close", () => {
      if (!this.closed && !this.byeReceived) {
        this.lost(new DistError("PEER_LOST", `${label}: connection closed by the peer (process died or was killed?)`));
      } else if (this.byeReceived && !this.closed && this.waiters.size > 0) {
        this.lost(
          new DistError(
            "PEER_LOST",
            `${label}: peer left the group (closed cleanly) while this rank still waited for it`,
          ),
        );
      }
      this.closed = true;
    });
    if (initial?.length) this.onData(initial);
  }

  get address(): string {
    return `${this.socket.remoteAddress ?? "?"}:${this.socket.remotePort ?? "?"}`;
  }

  get pendingWaits(): readonly Waiter[] {
    return [...this.waiters.values()];
  }

  private onData(chunk: Buffer): void {
    this.lastRecv = Date.now();
    try {
      this.reader.push(chunk);
    } catch (e) {
      this.lost(e instanceof DistError ? e : new DistError("PROTOCOL", String(e)));
    }
  }

  private onFrame(f: Frame): void {
    switch (f.type) {
      case FrameType.HEARTBEAT:
        return;
      case FrameType.ABORT:
        this.events.onAbort(this, f.payload.toString("utf8"));
        return;
      case FrameType.BYE:
        this.byeReceived = true;
        return;
      default: {
        const key = keyOf(f.type, f.op, f.seq);
        const w = this.waiters.get(key);
        if (w) {
          this.waiters.delete(key);
          if (w.timer) clearTimeout(w.timer);
          w.resolve(f.payload);
        } else if (this.inbox.has(key)) {
          this.lost(new DistError("PROTOCOL", `${this.label}: duplicate frame op=${f.op} seq=${f.seq}`));
        } else {
          this.inbox.set(key, f.payload);
        }
      }
    }
  }

  private lost(err: DistError): void {
    if (this.closed) return;
    this.events.onLost(this, err);
  }

  /** Send one frame; resolves when the bytes were handed to the kernel. `payload` must not change until then. */
  send(type: FrameType, op: number, seq: number, payload?: Uint8Array): Promise<void> {
    if (this.closed || this.socket.destroyed) {
      return Promise.reject(new DistError("CLOSED", `${this.label}: cannot send, connection is closed`));
    }
    const len = payload ? payload.byteLength : 0;
    this.lastSend = Date.now();
    const p = new Promise<void>((resolve, reject) => {
      const done = (e?: Error | null) =>
        e ? reject(new DistError("PEER_LOST", `${this.label}: write failed: ${e.message}`)) : resolve();
      if (!payload || len === 0) {
        this.socket.write(encodeHeader(type, op, seq, 0), done);
        return;
      }
      this.socket.write(encodeHeader(type, op, seq, len));
      this.socket.write(Buffer.from(payload.buffer, payload.byteOffset, len), done);
    });
    // Callers await it later (or never, when the group fails first): never an unhandled rejection.
    p.catch(() => undefined);
    return p;
  }

  /** Best-effort send that never rejects (heartbeats, aborts, byes). */
  trySend(type: FrameType, payload?: Uint8Array): void {
    if (this.closed || this.socket.destroyed) return;
    this.send(type, 0, 0, payload).catch(() => undefined);
  }

  /**
   * Receive the DATA/CONTROL frame with this key. Rejects after `hardTimeoutMs` (0 = no hard limit; the
   * group's silence watchdog still applies) via the onTimeout event, or when the group fails.
   */
  recv(type: FrameType, op: number, seq: number, what: string, hardTimeoutMs: number): Promise<Buffer> {
    const key = keyOf(type, op, seq);
    const have = this.inbox.get(key);
    if (have) {
      this.inbox.delete(key);
      return Promise.resolve(have);
    }
    if (this.closed)
      return Promise.reject(new DistError("CLOSED", `${this.label}: connection is closed (waiting for ${what})`));
    if (this.waiters.has(key)) return Promise.reject(new DistError("PROTOCOL", `${this.label}: two waits for ${what}`));
    return new Promise<Buffer>((resolve, reject) => {
      const w: Waiter = { resolve, reject, since: Date.now(), what, timer: null };
      if (hardTimeoutMs > 0) {
        w.timer = setTimeout(() => {
          this.events.onTimeout(
            this,
            new DistError(
              "TIMEOUT",
              `${this.label}: waited ${(hardTimeoutMs / 1000).toFixed(1)} s for ${what}; the peer is alive ` +
                `(last bytes ${((Date.now() - this.lastRecv) / 1000).toFixed(1)} s ago) but never sent it — ` +
                "ranks are out of step or one is hung",
            ),
          );
        }, hardTimeoutMs);
        w.timer.unref();
      }
      this.waiters.set(key, w);
    });
  }

  /** Hand a received payload back for reuse once its contents were consumed. */
  release(buf: Buffer): void {
    if (buf.length < 4096 || buf.byteOffset !== 0) return;
    let list = this.pool.get(buf.length);
    if (!list) {
      list = [];
      this.pool.set(buf.length, list);
    }
    if (list.length < 8) list.push(buf);
  }

  /** Reject every pending receive with `err`. */
  rejectAll(err: Error): void {
    for (const w of this.waiters.values()) {
      if (w.timer) clearTimeout(w.timer);
      w.reject(err);
    }
    this.waiters.clear();
  }

  /** Close: optionally tell the peer why (ABORT) or that we are leaving (BYE), then end the socket. */
  close(opts: { abortReason?: string; bye?: boolean } = {}): void {
    if (this.closed) return;
    if (opts.abortReason !== undefined) this.trySend(FrameType.ABORT, Buffer.from(opts.abortReason, "utf8"));
    else if (opts.bye) this.trySend(FrameType.BYE);
    this.closed = true;
    this.socket.end();
    // A peer that never reads must not keep this process alive.
    setTimeout(() => this.socket.destroy(), 2000).unref();
  }
}

const keyOf = (type: number, op: number, seq: number) => `${type}:${op}:${seq}`;
