// Lease-based leader election (coordination.k8s.io/v1), after client-go's leaderelection package:
// - acquire when the Lease is absent, released (empty holder) or not renewed within leaseDuration, measured
//   on OUR clock from when we last saw the record change (never comparing clocks across hosts);
// - all writes are optimistic (replace with resourceVersion), so two candidates cannot both win;
// - the leader renews every retryPeriod; if it cannot renew within renewDeadline it stops leading
//   (callers must stop reconciling at once: the process exits in main.ts);
// - release() on graceful shutdown empties the holder so a standby takes over without waiting.
import type { V1Lease } from "@kubernetes/client-node";
import { V1MicroTime } from "@kubernetes/client-node/dist/types.js";
import type { Logger } from "../../../common/src/logger.ts";
import type { LeaseApi } from "./kubeClient.ts";

export interface LeaderElectionOptions {
  api: LeaseApi;
  namespace: string;
  name: string;
  identity: string;
  leaseDurationMs?: number;
  renewDeadlineMs?: number;
  retryPeriodMs?: number;
  logger: Logger;
  onStartedLeading: () => void;
  onStoppedLeading: () => void;
  now?: () => number;
}

function code(err: unknown): number | undefined {
  return err && typeof err === "object" && typeof (err as { code?: unknown }).code === "number"
    ? (err as { code: number }).code
    : undefined;
}

export class LeaderElector {
  private readonly o: Required<LeaderElectionOptions>;
  private leading = false;
  private stopped = false;
  private observedRecord = "";
  private observedAt = 0;
  private lease: V1Lease | undefined;
  private loop: Promise<void> | undefined;
  private wake: (() => void) | undefined;

  constructor(opts: LeaderElectionOptions) {
    this.o = {
      leaseDurationMs: 15_000,
      renewDeadlineMs: 10_000,
      retryPeriodMs: 2_000,
      now: Date.now,
      ...opts,
    };
  }

  isLeader(): boolean {
    return this.leading;
  }

  start(): void {
    this.loop = this.run();
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

  private async run(): Promise<void> {
    let lastRenew = 0;
    while (!this.stopped) {
      let ok = false;
      try {
        ok = await this.tryAcquireOrRenew();
      } catch (err) {
        this.o.logger.warn({ err: String(err) }, "leader election: lease update failed");
      }
      if (this.stopped) break;
      const now = this.o.now();
      if (ok) {
        lastRenew = now;
        if (!this.leading) {
          this.leading = true;
          this.o.logger.info({ identity: this.o.identity, lease: this.o.name }, "became leader");
          this.o.onStartedLeading();
        }
      } else if (this.leading && now - lastRenew > this.o.renewDeadlineMs) {
        this.leading = false;
        this.o.logger.error({ identity: this.o.identity }, "lost leadership");
        this.o.onStoppedLeading();
      }
      await this.sleep(Math.round(this.o.retryPeriodMs * (this.leading ? 1 : 1 + Math.random() * 0.2)));
    }
  }

  private async tryAcquireOrRenew(): Promise<boolean> {
    const { api, namespace, name, identity } = this.o;
    const now = this.o.now();
    const spec = {
      holderIdentity: identity,
      leaseDurationSeconds: Math.ceil(this.o.leaseDurationMs / 1000),
      renewTime: new V1MicroTime(now),
    };
    let current: V1Lease;
    try {
      current = await api.readNamespacedLease({ name, namespace });
    } catch (err) {
      if (code(err) !== 404) throw err;
      try {
        this.lease = await api.createNamespacedLease({
          namespace,
          body: {
            apiVersion: "coordination.k8s.io/v1",
            kind: "Lease",
            metadata: { name, namespace },
            spec: { ...spec, acquireTime: new V1MicroTime(now), leaseTransitions: 0 },
          },
        });
        this.observe(this.lease, now);
        return true;
      } catch (e) {
        if (code(e) === 409) return false;
        throw e;
      }
    }
    this.observe(current, now);
    const holder = current.spec?.holderIdentity ?? "";
    const duration = (current.spec?.leaseDurationSeconds ?? 15) * 1000;
    const iHold = holder === identity;
    if (holder && !iHold && now < this.observedAt + duration) return false;
    const transitions = current.spec?.leaseTransitions ?? 0;
    const body: V1Lease = {
      ...current,
      spec: {
        ...current.spec,
        ...spec,
        acquireTime: iHold ? current.spec?.acquireTime : new V1MicroTime(now),
        leaseTransitions: iHold ? transitions : transitions + 1,
      },
    };
    try {
      this.lease = await api.replaceNamespacedLease({ name, namespace, body });
      this.observe(this.lease, now);
      return true;
    } catch (e) {
      if (code(e) === 409) return false;
      throw e;
    }
  }

  private observe(lease: V1Lease, now: number): void {
    const s = lease.spec;
    const record = `${s?.holderIdentity}|${String(s?.renewTime)}|${s?.leaseTransitions}`;
    if (record !== this.observedRecord) {
      this.observedRecord = record;
      this.observedAt = now;
    }
  }

  /** Stop campaigning; when leading, release the Lease so a standby can take over at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    await this.loop;
    if (this.leading && this.lease) {
      this.leading = false;
      try {
        const cur = await this.o.api.readNamespacedLease({ name: this.o.name, namespace: this.o.namespace });
        if (cur.spec?.holderIdentity === this.o.identity) {
          await this.o.api.replaceNamespacedLease({
            name: this.o.name,
            namespace: this.o.namespace,
            body: {
              ...cur,
              spec: {
                ...cur.spec,
                holderIdentity: "",
                leaseDurationSeconds: 1,
                renewTime: new V1MicroTime(Date.now()),
              },
            },
          });
          this.o.logger.info({ identity: this.o.identity }, "released leadership");
        }
      } catch (err) {
        this.o.logger.warn({ err: String(err) }, "releasing lease failed");
      }
    }
  }
}
