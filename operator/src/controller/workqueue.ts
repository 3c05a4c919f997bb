// Keyed, de-duplicating work queue with controller-runtime semantics
// (kubernetes-sigs/controller-runtime/pkg/reconcile/reconcile.go, client-go util/workqueue):
// - a key is queued at most once; adding a queued key is a no-op;
// - at most one reconcile per key is in flight; a key added while in flight is re-queued when it finishes;
// - a thrown error re-queues the key with per-key exponential backoff; success forgets the backoff;
// - `requeueAfterMs` schedules a delayed re-queue (deadlines, TTL, stall checks);
// - a `TerminalError` is not retried;
// - two lanes: "high" for keys whose running work changed (a child pod's status), "normal" for the rest (new
//   objects, delayed re-queues, retries). Workers take up to HIGH_BURST high keys per normal key, so a burst of
//   thousands of new runs cannot starve the status updates of running ones, nor they the new runs. Adding a
//   queued normal key as high promotes it.
// Handlers enqueue keys only; reconcile reads the current state itself (level-triggered).

/** An error that must not be retried (e.g. an invalid spec): the key is forgotten. */
export class TerminalError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "TerminalError";
  }
}

export interface ReconcileResult {
  /** Re-queue the key after this many milliseconds (the earliest of competing requests wins). */
  requeueAfterMs?: number;
}

export type ReconcileFn = (key: string) => Promise<ReconcileResult | undefined> | Promise<void>;

export interface WorkQueueOptions {
  /** First retry delay after an error (ms). Default 100. */
  baseDelayMs?: number;
  /** Upper bound of the per-key retry delay (ms). Default 5 minutes. */
  maxDelayMs?: number;
  /** Number of keys reconciled concurrently. Default 4. */
  concurrency?: number;
  /** Clock for tests. */
  now?: () => number;
  /** Called after each reconcile: duration, outcome. */
  onResult?: (
    key: string,
    outcome: "success" | "error" | "terminal" | "requeue",
    seconds: number,
    err?: unknown,
  ) => void;
}

export type Lane = "high" | "normal";
/** High-lane keys served before one normal-lane key when both lanes are non-empty. */
export const HIGH_BURST = 4;

export class WorkQueue {
  /** FIFO per lane; an entry is live only while `queued` maps its key to that lane (promotion leaves a stale one). */
  private readonly lanes: Record<Lane, string[]> = { high: [], normal: [] };
  private readonly queued = new Map<string, Lane>();
  private servedHigh = 0;
  private readonly processing = new Set<string>();
  /** Keys added while in flight; re-queued (in the highest lane asked for) when their reconcile ends. */
  private readonly dirty = new Map<string, Lane>();
  private readonly failures = new Map<string, number>();
  private readonly timers = new Map<string, { at: number; timer: NodeJS.Timeout }>();
  private readonly waiters: Array<() => void> = [];
  private readonly inFlight = new Set<Promise<void>>();
  private shuttingDown = false;
  private workers: Promise<void>[] = [];
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly concurrency: number;
  private readonly now: () => number;
  private readonly onResult: WorkQueueOptions["onResult"];

  constructor(opts: WorkQueueOptions = {}) {
    this.baseDelayMs = opts.baseDelayMs ?? 100;
    this.maxDelayMs = opts.maxDelayMs ?? 5 * 60_000;
    this.concurrency = opts.concurrency ?? 4;
    this.now = opts.now ?? Date.now;
    this.onResult = opts.onResult;
  }

  /** Queue a key now (no-op when already queued in this or a higher lane; deferred while in flight). */
  add(key: string, lane: Lane = "normal"): void {
    if (this.shuttingDown) return;
    if (this.processing.has(key)) {
      if (this.dirty.get(key) !== "high") this.dirty.set(key, lane);
      return;
    }
    const current = this.queued.get(key);
    if (current === "high" || current === lane) return;
    this.queued.set(key, lane);
    this.lanes[lane].push(key);
    if (current === undefined) this.waiters.shift()?.();
  }

  /** Queue a key after a delay; an earlier pending delay for the same key is kept. */
  addAfter(key: string, delayMs: number): void {
    if (this.shuttingDown) return;
    if (delayMs <= 0) {
      this.add(key);
      return;
    }
    const at = this.now() + delayMs;
    const existing = this.timers.get(key);
    if (existing && existing.at <= at) return;
    if (existing) clearTimeout(existing.timer);
    const timer = setTimeout(() => {
      this.timers.delete(key);
      this.add(key);
    }, delayMs);
    timer.unref?.();
    this.timers.set(key, { at, timer });
  }

  /** Queue a key with its per-key exponential backoff and count the failure. */
  addRateLimited(key: string): number {
    const n = this.failures.get(key) ?? 0;
    this.failures.set(key, n + 1);
    const delay = Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** n);
    this.addAfter(key, delay);
    return delay;
  }

  /** Reset a key's backoff (after a successful reconcile). */
  forget(key: string): void {
    this.failures.delete(key);
  }

  /** Number of failures recorded for a key since its last success. */
  numRequeues(key: string): number {
    return this.failures.get(key) ?? 0;
  }

  get length(): number {
    return this.queued.size;
  }

  /** Keys currently queued or in flight (for tests and metrics). */
  get depth(): number {
    return this.queued.size + this.processing.size;
  }

  isInFlight(key: string): boolean {
    return this.processing.has(key);
  }

  private async next(): Promise<string | undefined> {
    while (this.queued.size === 0) {
      if (this.shuttingDown) return undefined;
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
    const order: Lane[] = this.servedHigh >= HIGH_BURST ? ["normal", "high"] : ["high", "normal"];
    for (const lane of order) {
      const q = this.lanes[lane];
      while (q.length > 0) {
        const key = q.shift() as string;
        if (this.queued.get(key) !== lane) continue; // promoted to the high lane meanwhile
        this.queued.delete(key);
        this.servedHigh = lane === "high" ? this.servedHigh + 1 : 0;
        return key;
      }
    }
    throw new Error("work queue: a queued key is in no lane");
  }

  /** Start `concurrency` workers calling `fn` for each key. */
  start(fn: ReconcileFn): void {
    for (let i = 0; i < this.concurrency; i++) this.workers.push(this.worker(fn));
  }

  private async worker(fn: ReconcileFn): Promise<void> {
    for (;;) {
      const key = await this.next();
      if (key === undefined) return;
      this.processing.add(key);
      const p = this.process(key, fn);
      this.inFlight.add(p);
      await p;
      this.inFlight.delete(p);
    }
  }

  private async process(key: string, fn: ReconcileFn): Promise<void> {
    const started = this.now();
    try {
      const res = await fn(key);
      const secs = (this.now() - started) / 1000;
      this.forget(key);
      if (res?.requeueAfterMs !== undefined) {
        this.onResult?.(key, "requeue", secs);
        this.addAfter(key, res.requeueAfterMs);
      } else {
        this.onResult?.(key, "success", secs);
      }
    } catch (err) {
      const secs = (this.now() - started) / 1000;
      if (err instanceof TerminalError) {
        this.forget(key);
        this.onResult?.(key, "terminal", secs, err);
      } else {
        this.onResult?.(key, "error", secs, err);
        this.addRateLimited(key);
      }
    } finally {
      this.processing.delete(key);
      const lane = this.dirty.get(key);
      if (lane) {
        this.dirty.delete(key);
        this.add(key, lane);
      }
    }
  }

  /** Stop accepting keys, drop pending delays and wait for in-flight reconciles to finish. */
  async shutdown(): Promise<void> {
    this.shuttingDown = true;
    for (const { timer } of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
    this.lanes.high.length = 0;
    this.lanes.normal.length = 0;
    this.queued.clear();
    for (const w of this.waiters.splice(0)) w();
    await Promise.all([...this.inFlight]);
    await Promise.all(this.workers);
  }
}
