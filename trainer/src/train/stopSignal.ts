// Graceful stop on SIGTERM (spec.checkpoint.saveOnSigterm → CHECKPOINT_SAVE_ON_SIGTERM, default on).
// Kubernetes sends SIGTERM on pod deletion, eviction, node drain and preemption, and SIGKILL once
// terminationGracePeriodSeconds have passed. The signal only sets a flag; the training loop looks at it at the
// next step boundary — on every rank at the same step, through an all-reduce of the flag, because a checkpoint
// gathers every rank's data-order state — saves a checkpoint there, rewrites progress.json (the operator resumes
// the next attempt from it) and the process exits 143 (128 + SIGTERM). A signal that arrives outside the loop
// (start-up, rendezvous, final evaluation) exits 143 at once: there is no step to save.
import { allReduceLosses } from "../dist/ddp.ts";
import type { ProcessGroup } from "../dist/processGroup.ts";

/** Thrown out of a training loop after the SIGTERM checkpoint was saved; the CLI exits with `exitCode`. */
export class TerminatedBySignal extends Error {
  readonly exitCode = 143;
  constructor(
    readonly step: number,
    readonly checkpoint: string | undefined,
  ) {
    super(`stopped by SIGTERM after step ${step}${checkpoint ? `; checkpoint ${checkpoint}` : ""}`);
  }
}

export class StopSignal {
  private received = false;
  private inLoop = false;
  private handler: (() => void) | undefined;

  /** Whether SIGTERM is handled here (install() ran); the process group then leaves signals to us. */
  get installed(): boolean {
    return this.handler !== undefined;
  }

  /** Catch SIGTERM from now on. `onOutsideLoop` runs when it arrives while no training loop is running. */
  install(onOutsideLoop: () => void = () => process.exit(143)): void {
    if (this.handler) return;
    this.handler = () => {
      this.received = true;
      if (!this.inLoop) onOutsideLoop();
    };
    process.on("SIGTERM", this.handler);
  }

  uninstall(): void {
    if (this.handler) process.removeListener("SIGTERM", this.handler);
    this.handler = undefined;
    this.received = false;
    this.inLoop = false;
  }

  /** Mark the span in which a step boundary will look at the flag. */
  enterLoop(): void {
    this.inLoop = true;
  }
  leaveLoop(): void {
    this.inLoop = false;
  }

  /** This process received SIGTERM (test hook and single-process check). */
  get requested(): boolean {
    return this.received;
  }

  /**
   * At a step boundary: did any rank receive SIGTERM? One scalar all-reduce per step when a group exists
   * (every rank must call this at every step, which the loops do); false, without communication, when not installed.
   */
  async agreed(pg?: ProcessGroup): Promise<boolean> {
    if (!this.handler) return false;
    const local = this.received ? 1 : 0;
    if (!pg || pg.worldSize === 1) return local === 1;
    const { stop } = await allReduceLosses(pg, { stop: local });
    return stop > 0;
  }
}

/** The process's one SIGTERM handler for training (installed by the trainer CLI). */
export const stopSignal = new StopSignal();
