// Hardened list+watch cache (operator-design §12, §13). Replaces client-node's ListWatch because that one
// stops for good on any error but 410 (src/cache.ts), sends no bookmarks, lists unpaginated and has no
// watchdog. This one:
// - lists in pages (limit/continue) with the same label selector it watches with;
// - watches with allowWatchBookmarks and a jittered server-side timeoutSeconds, so every watch is renewed
//   periodically even when the TCP connection silently died;
// - restarts on any error with jittered exponential backoff; 410 Gone (HTTP or ERROR event) → relist;
// - a watchdog aborts a watch that has seen no event or bookmark for `inactivityMs` and relists;
// - a periodic resync re-delivers every cached object to the handlers (level-triggered reconcile).
// Handlers receive objects only to derive keys; reconcile re-reads the cache.
import type { KubeConfig, KubernetesListObject, KubernetesObject } from "@kubernetes/client-node";
import { Watch } from "@kubernetes/client-node/dist/watch.js";
import type { Logger } from "../../../common/src/logger.ts";

export type InformerEvent = "add" | "update" | "delete" | "resync";
export type InformerHandler<T> = (event: InformerEvent, obj: T) => void;

export interface ListPageOptions {
  labelSelector?: string;
  limit: number;
  continueToken?: string;
}

export type ListPageFn<T extends KubernetesObject> = (opts: ListPageOptions) => Promise<KubernetesListObject<T>>;

export interface InformerOptions<T extends KubernetesObject> {
  /** Name for logs and metrics, e.g. "pods" or "tokenizertrainings". */
  name: string;
  kc: KubeConfig;
  /** Watch path, e.g. `/api/v1/pods` or `/apis/mergevq.ai/v1alpha1/namespaces/ns/tokenizertrainings`. */
  path: string;
  list: ListPageFn<T>;
  labelSelector?: string;
  pageSize?: number;
  /** Re-deliver all cached objects this often (ms). Default 5 min. 0 disables. */
  resyncMs?: number;
  /** Server-side watch timeout range (s); a random value in [min, 2·min) per watch. Default 300. */
  watchTimeoutSeconds?: number;
  /** Watchdog: abort and relist when no event/bookmark arrives for this long (ms). Default 10 min. */
  inactivityMs?: number;
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  logger: Logger;
  /** Called on each restart with its cause (metrics). */
  onRestart?: (name: string, cause: "error" | "gone" | "watchdog") => void;
  /**
   * Applied to every object before it is cached or delivered (list pages and watch events), e.g. to drop
   * fields no handler reads. Default: stripManagedFields.
   */
  transform?: (obj: T) => T;
}

/**
 * Drop `metadata.managedFields` (server-side apply bookkeeping: often half of an object's JSON; the operator never
 * reads it), as client-go's TransformStripManagedFields does for controller caches.
 */
export function stripManagedFields<T extends KubernetesObject>(obj: T): T {
  if (obj.metadata?.managedFields) delete obj.metadata.managedFields;
  return obj;
}

interface WatchEventObject {
  type: string;
  object: KubernetesObject & { code?: number; reason?: string; message?: string };
}

export function objectKey(obj: KubernetesObject): string {
  const ns = obj.metadata?.namespace;
  return ns ? `${ns}/${obj.metadata?.name}` : `${obj.metadata?.name}`;
}

function jitter(ms: number): number {
  return Math.round(ms * (0.8 + Math.random() * 0.4));
}

function statusCode(err: unknown): number | undefined {
  if (err && typeof err === "object") {
    const e = err as { statusCode?: unknown; code?: unknown };
    if (typeof e.statusCode === "number") return e.statusCode;
    if (typeof e.code === "number") return e.code;
  }
  return undefined;
}

export class Informer<T extends KubernetesObject> {
  private readonly cache = new Map<string, T>();
  /** Secondary indexes: name → (index value → object keys). */
  private readonly indexFns = new Map<string, (obj: T) => string[]>();
  private readonly indexes = new Map<string, Map<string, Set<string>>>();
  private readonly handlers: InformerHandler<T>[] = [];
  private resourceVersion = "";
  private stopped = true;
  private synced = false;
  private abort: AbortController | undefined;
  private loop: Promise<void> | undefined;
  private resyncTimer: NodeJS.Timeout | undefined;
  private watchdogTimer: NodeJS.Timeout | undefined;
  private lastActivity = Date.now();
  private failures = 0;
  private wake: (() => void) | undefined;
  /** Gives up on a watch request still waiting for its response headers. */
  private cancelPending: (() => void) | undefined;
  /** Set by restartWatch: the resourceVersion the next watch must start from. */
  private restartFrom: string | undefined;
  private readonly watch: Watch;
  private readonly o: Required<Omit<InformerOptions<T>, "labelSelector" | "onRestart">> &
    Pick<InformerOptions<T>, "labelSelector" | "onRestart">;

  constructor(opts: InformerOptions<T>) {
    this.o = {
      pageSize: 500,
      resyncMs: 5 * 60_000,
      watchTimeoutSeconds: 300,
      inactivityMs: 10 * 60_000,
      backoffBaseMs: 500,
      backoffMaxMs: 30_000,
      transform: stripManagedFields,
      ...opts,
    };
    this.watch = new Watch(opts.kc);
  }

  on(handler: InformerHandler<T>): void {
    this.handlers.push(handler);
  }

  /** Add a secondary index (e.g. owner UID); must be called before start(). */
  addIndex(name: string, fn: (obj: T) => string[]): void {
    this.indexFns.set(name, fn);
    this.indexes.set(name, new Map());
  }

  /** Objects whose index `name` contains `value`. */
  byIndex(name: string, value: string): T[] {
    const keys = this.indexes.get(name)?.get(value);
    if (!keys) return [];
    const out: T[] = [];
    for (const k of keys) {
      const o = this.cache.get(k);
      if (o) out.push(o);
    }
    return out;
  }

  private put(key: string, obj: T | undefined): void {
    const old = this.cache.get(key);
    for (const [name, fn] of this.indexFns) {
      const idx = this.indexes.get(name)!;
      if (old) {
        for (const v of fn(old)) {
          const set = idx.get(v);
          set?.delete(key);
          if (set && set.size === 0) idx.delete(v);
        }
      }
      if (obj) {
        for (const v of fn(obj)) {
          const set = idx.get(v) ?? new Set<string>();
          set.add(key);
          idx.set(v, set);
        }
      }
    }
    if (obj) this.cache.set(key, obj);
    else this.cache.delete(key);
  }

  get(key: string): T | undefined {
    return this.cache.get(key);
  }

  list(namespace?: string): T[] {
    const out: T[] = [];
    for (const o of this.cache.values()) if (!namespace || o.metadata?.namespace === namespace) out.push(o);
    return out;
  }

  hasSynced(): boolean {
    return this.synced;
  }

  get size(): number {
    return this.cache.size;
  }

  /** Start the list/watch loop; resolves after the first successful list. */
  async start(): Promise<void> {
    if (!this.stopped) return;
    this.stopped = false;
    let firstSync!: () => void;
    const synced = new Promise<void>((r) => {
      firstSync = r;
    });
    this.loop = this.run(firstSync);
    if (this.o.resyncMs > 0) {
      this.resyncTimer = setInterval(() => this.resync(), this.o.resyncMs);
      this.resyncTimer.unref?.();
    }
    this.watchdogTimer = setInterval(
      () => {
        if (Date.now() - this.lastActivity > this.o.inactivityMs && (this.abort || this.cancelPending)) {
          this.o.logger.warn({ informer: this.o.name }, "watch inactive: restarting");
          this.o.onRestart?.(this.o.name, "watchdog");
          this.resourceVersion = "";
          this.lastActivity = Date.now();
          this.abortCurrent();
        }
      },
      Math.max(1000, Math.min(30_000, this.o.inactivityMs / 4)),
    );
    this.watchdogTimer.unref?.();
    await synced;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.resyncTimer) clearInterval(this.resyncTimer);
    if (this.watchdogTimer) clearInterval(this.watchdogTimer);
    this.abortCurrent();
    this.wake?.();
    await this.loop;
  }

  private abortCurrent(): void {
    if (this.abort) this.abort.abort();
    else this.cancelPending?.();
    this.cancelPending = undefined;
  }

  /**
   * Abort the current watch and continue from `resourceVersion` (default: relist). Used by tests to force an
   * expired resourceVersion (410 Gone) and available for manual recovery.
   */
  restartWatch(resourceVersion = ""): void {
    this.resourceVersion = resourceVersion;
    this.restartFrom = resourceVersion;
    this.abortCurrent();
  }

  /** Re-deliver every cached object (periodic resync). */
  resync(): void {
    for (const obj of this.cache.values()) this.emit("resync", obj);
  }

  private emit(event: InformerEvent, obj: T): void {
    for (const h of this.handlers) {
      try {
        h(event, obj);
      } catch (err) {
        this.o.logger.error({ err, informer: this.o.name }, "informer handler threw");
      }
    }
  }

  private async sleep(ms: number): Promise<void> {
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, ms);
      this.wake = () => {
        clearTimeout(t);
        resolve();
      };
    });
    this.wake = undefined;
  }

  private async run(firstSync: () => void): Promise<void> {
    while (!this.stopped) {
      try {
        if (!this.resourceVersion) {
          await this.relist();
          this.synced = true;
          firstSync();
        }
        const outcome = await this.watchOnce();
        if (this.restartFrom !== undefined) {
          // restartWatch(): the aborted watch may have advanced resourceVersion; use the requested one.
          this.resourceVersion = this.restartFrom;
          this.restartFrom = undefined;
        }
        if (outcome === "gone") {
          this.o.onRestart?.(this.o.name, "gone");
          this.resourceVersion = "";
          continue;
        }
        this.failures = 0;
      } catch (err) {
        if (this.stopped) break;
        const code = statusCode(err);
        if (code === 410) {
          this.o.onRestart?.(this.o.name, "gone");
          this.resourceVersion = "";
          continue;
        }
        this.failures++;
        const delay = jitter(Math.min(this.o.backoffMaxMs, this.o.backoffBaseMs * 2 ** (this.failures - 1)));
        this.o.logger.warn({ err, informer: this.o.name, delayMs: delay }, "list/watch failed: retrying");
        this.o.onRestart?.(this.o.name, "error");
        // Relist after an error: events may have been missed while disconnected.
        this.resourceVersion = "";
        await this.sleep(delay);
      }
    }
  }

  /** Paginated list; replaces the cache and emits add/update/delete for the difference. */
  private async relist(): Promise<void> {
    const items: T[] = [];
    let continueToken: string | undefined;
    let rv = "";
    do {
      const page = await this.o.list({
        labelSelector: this.o.labelSelector,
        limit: this.o.pageSize,
        continueToken,
      });
      for (const item of page.items) items.push(this.o.transform(item));
      rv = page.metadata?.resourceVersion ?? rv;
      continueToken = page.metadata?._continue || undefined;
    } while (continueToken && !this.stopped);
    const seen = new Set<string>();
    for (const item of items) {
      const key = objectKey(item);
      seen.add(key);
      const old = this.cache.get(key);
      this.put(key, item);
      if (!old) this.emit("add", item);
      else if (old.metadata?.resourceVersion !== item.metadata?.resourceVersion) this.emit("update", item);
    }
    for (const [key, old] of [...this.cache]) {
      if (!seen.has(key)) {
        this.put(key, undefined);
        this.emit("delete", old);
      }
    }
    this.resourceVersion = rv;
    this.lastActivity = Date.now();
    this.o.logger.debug({ informer: this.o.name, count: items.length, rv }, "listed");
  }

  /** One watch from the current resourceVersion until the server closes it or an error occurs. */
  private watchOnce(): Promise<"closed" | "gone"> {
    return new Promise((resolve, reject) => {
      let gone = false;
      let finished = false;
      // A request that never gets response headers cannot be aborted through the Watch API (it hands out its
      // AbortController only after the headers arrive): let stop()/the watchdog give up on it instead.
      this.cancelPending = () => resolve("closed");
      const timeoutSeconds = this.o.watchTimeoutSeconds + Math.floor(Math.random() * this.o.watchTimeoutSeconds);
      this.lastActivity = Date.now();
      this.watch
        .watch(
          this.o.path,
          {
            resourceVersion: this.resourceVersion,
            allowWatchBookmarks: true,
            timeoutSeconds,
            labelSelector: this.o.labelSelector,
          },
          (type: string, obj: KubernetesObject, raw?: WatchEventObject) => {
            this.lastActivity = Date.now();
            this.handleEvent(type, obj as T, raw, () => {
              gone = true;
              if (this.abort) this.abort.abort();
              else resolve("gone");
            });
          },
          (err: unknown) => {
            finished = true;
            this.abort = undefined;
            this.cancelPending = undefined;
            if (gone) resolve("gone");
            else if (err && !this.isAbort(err)) reject(err);
            else resolve("closed");
          },
        )
        .then((controller) => {
          // When the request already failed, done() ran before this: keep no stale controller.
          if (finished) return;
          this.abort = controller;
          this.cancelPending = undefined;
          if (this.stopped) controller.abort();
        }, reject);
    });
  }

  private isAbort(err: unknown): boolean {
    return !!err && typeof err === "object" && (err as { name?: string }).name === "AbortError";
  }

  private handleEvent(type: string, obj: T, raw: WatchEventObject | undefined, onGone: () => void): void {
    const rv = obj?.metadata?.resourceVersion;
    if (obj && (type === "ADDED" || type === "MODIFIED" || type === "DELETED")) obj = this.o.transform(obj);
    switch (type) {
      case "ADDED":
      case "MODIFIED": {
        const key = objectKey(obj);
        const existed = this.cache.has(key);
        this.put(key, obj);
        if (rv) this.resourceVersion = rv;
        this.emit(existed ? "update" : "add", obj);
        return;
      }
      case "DELETED": {
        const key = objectKey(obj);
        this.put(key, undefined);
        if (rv) this.resourceVersion = rv;
        this.emit("delete", obj);
        return;
      }
      case "BOOKMARK":
        if (rv) this.resourceVersion = rv;
        return;
      case "ERROR": {
        const status = (raw?.object ?? obj) as { code?: number; reason?: string };
        if (status.code === 410 || status.reason === "Expired" || status.reason === "Gone") onGone();
        else {
          this.o.logger.warn({ informer: this.o.name, status }, "watch error event: relisting");
          onGone();
        }
        return;
      }
      default:
        return;
    }
  }
}
