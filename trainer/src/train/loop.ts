// The training loop both trainers run (Stage I tokenizerTrainer.ts, Stage II arTrainer.ts), written once.
// A trainer subclasses TrainingLoop and supplies only what is its own: the micro-step (forward + backward of
// one micro-batch, gradients handed to `accumulate`), the parameter groups and their optimisers, the learning
// rate of each step and the extra contents of its checkpoints. Everything else lives here:
//
//   trainStep():  for a in 0..accum-1: forwardBackward(a) → NaN/Inf guard on its losses → afterMicroStep()
//                 (the last micro-batch's after the optimiser steps), with per group in between:
//                 [WORLD_SIZE > 1: average the accumulated gradients over ranks] → global norm → NaN/Inf guard
//                 → clip (gradClip) → optimiser step with lrAt(step); then step += 1
//   run():        trainStep until cfg.steps; every logEvery steps a "train progress" line (losses averaged over
//                 ranks, throughput, ETA); at each step boundary the periodic checkpoint, the SIGTERM stop and
//                 progress.json (RunReport); a final checkpoint when the last step has none.
//   checkpoints:  only at optimiser-step boundaries, so a resume is bit-identical: every group's variables and
//                 optimiser moments, the step, the data-order state of every rank, plus the trainer's meta.
//   rank 0 sync:  syncFromRank0 broadcasts every checkpointed variable and the scalar state, so all ranks
//                 start from rank 0's state and, with bit-identical averaged gradients, stay identical.
//
// The gradients of one optimiser step are the mean over `accum` micro-batches (each micro-step divides its
// loss by accum) and, with a process group, over ranks — the global-batch gradient of the reference recipe.
import * as tf from "@tensorflow/tfjs";
import type { Logger } from "../../../common/src/logger.ts";
import type { DataSourceState } from "../data/localFolder.ts";
import { allReduceLosses, averageGradients, broadcastVariables } from "../dist/ddp.ts";
import { configHash, initProcessGroup, type ProcessGroup } from "../dist/processGroup.ts";
import { assertSameArchitecture, type Checkpoint, CheckpointError, loadCheckpoint } from "../io/checkpoint.ts";
import { clipByGlobalNorm } from "./adamw.ts";
import {
  assignCheckpointTensors,
  checkpointTensors,
  nonFiniteLosses,
  type ReportedData,
  type RunDeps,
  RunReport,
  type RunReportConfig,
  roundLoss,
  roundLosses,
  scalarsFromRank0,
  type VariableGroups,
} from "./runReport.ts";
import { stopSignal } from "./stopSignal.ts";

/** Named scalar losses and diagnostics of one step. */
export interface StepLosses {
  [name: string]: number;
}

/** A loss or gradient norm was NaN/Inf: the step's update was not applied. */
export class NonFiniteLossError extends Error {
  constructor(
    readonly step: number,
    readonly details: Record<string, number>,
    readonly lastCheckpoint: string | undefined,
  ) {
    super(
      `non-finite loss/gradient at step ${step}: ${JSON.stringify(details)}; training stopped without applying ` +
        `this update; last good checkpoint: ${lastCheckpoint ?? "none"}`,
    );
    this.name = "NonFiniteLossError";
  }
}

/** An optimiser over named variables (NamedAdam, NamedAdamW). */
export interface NamedOptimizer {
  /** Update steps taken (checkpointed). */
  t: number;
  readonly m: ReadonlyMap<string, tf.Variable>;
  readonly v: ReadonlyMap<string, tf.Variable>;
  step(grads: ReadonlyMap<string, tf.Tensor>, lr: number): void;
  dispose(): void;
}

/** One set of trainable variables with its own optimiser (tokenizer: G and D; AR: the GPT). */
export interface ParamGroup {
  /** Key of the gradient all-reduce (the same on every rank). */
  key: string;
  vars: Map<string, tf.Variable>;
  optimizer: NamedOptimizer;
  /** Checkpoint prefixes of the variables and of the optimiser moments (`<optimizerPrefix>m/<name>`). */
  prefix: string;
  optimizerPrefix: string;
  /** Checkpoint meta key holding the optimiser's step count ({t}). */
  optimizerMeta: string;
  /** Name of the group's gradient norm in the step losses. */
  normName: string;
}

/** The training-config fields the loop reads. */
export interface LoopConfig extends RunReportConfig {
  steps: number;
  batchSize: number;
  accum: number;
  gradClip: number | null;
  logEvery: number;
}

/** What the loop needs from a trainer's data source. */
export interface LoopData extends ReportedData {
  setState(s: DataSourceState): void;
}

export interface LoopDeps extends RunDeps {
  data: LoopData;
}

/** The result of run(). */
export interface LoopSummary {
  /** Losses of the last log step, averaged over the log window and over ranks. */
  losses: StepLosses;
  /** Samples (images / sequences) per second over the run. */
  samplesPerSecond: number;
  seconds: number;
}

/** The variables of every group, keyed by their variable name (what tf.variableGrads returns). */
type ByVariableName = Map<string, { group: ParamGroup; name: string }>;

export abstract class TrainingLoop {
  /** Optimiser steps done. */
  step = 0;
  protected readonly log: Logger;
  protected readonly rank: number;
  protected readonly worldSize: number;
  protected pg: ProcessGroup | undefined;
  /** progress.json / metrics.json / checkpoint bookkeeping (rank 0 writes). */
  protected readonly report: RunReport;
  private groupsCache: ParamGroup[] | undefined;
  private byVar: ByVariableName | undefined;
  /** Accumulated gradients of the current optimiser step, per group key. */
  private acc = new Map<string, Map<string, tf.Tensor>>();
  private window: { sums: StepLosses; n: number } = { sums: {}, n: 0 };
  private lastReduced: StepLosses | undefined;

  protected constructor(
    private readonly loopDeps: LoopDeps,
    protected readonly loopCfg: LoopConfig,
  ) {
    this.log = loopDeps.log;
    this.rank = loopDeps.rank ?? 0;
    this.worldSize = loopDeps.worldSize ?? 1;
    this.pg = loopDeps.pg && loopDeps.pg.worldSize > 1 ? loopDeps.pg : undefined;
    this.report = new RunReport(loopDeps, loopCfg);
  }

  // ---------------------------------------------------------------------------------------------------------
  // What a trainer supplies

  /** The parameter groups, in update order (called once, after the subclass constructor). */
  protected abstract paramGroups(): ParamGroup[];
  /** Forward + backward of micro-batch `a` of the current step; hands its gradients to `accumulate`. */
  protected abstract forwardBackward(a: number): Promise<StepLosses>;
  /** Learning rate of the optimiser step with 0-based index `step`. */
  abstract lrAt(step?: number): number;
  /** Checkpoint kind (header `kind`) and the error when a checkpoint of another kind is loaded. */
  protected abstract readonly checkpointKind: string;
  protected abstract wrongKind(source: string, kind: string): string;
  /** The trainer's own checkpoint meta (the loop adds step, optimiser steps, data states, rank, backend). */
  protected abstract checkpointMeta(): Record<string, unknown>;
  /** Check a checkpoint's meta against this trainer (architecture) before any tensor is assigned. */
  protected abstract checkCompatible(meta: Record<string, unknown>, source: string): void;
  /** Restore the trainer's own meta after the tensors and the loop's state are restored. */
  protected restoreMeta(_meta: Record<string, unknown>): void {}
  /** Variables checkpointed beside the groups' (tokenizer: the EMA shadows). */
  protected extraVariables(): VariableGroups {
    return [];
  }
  /** Scalar state beside the step that every rank takes from rank 0 (tokenizer: micro-step, LeCam EMAs). */
  protected scalarState(): Record<string, unknown> {
    return {};
  }
  protected setScalarState(_s: Record<string, unknown>): void {}
  /**
   * After each micro-batch, once its updates are applied: right after it inside the accumulation window, after
   * the optimiser steps for the window's last one (tokenizer: EMA update, micro-step counter).
   */
  protected afterMicroStep(): void {}
  /** Keys averaged over the log window for the progress line; empty = the last step's values. */
  protected readonly windowKeys: readonly string[] = [];
  /** The losses progress.json reports (default: all). */
  protected progressLosses(l: StepLosses): Record<string, number> {
    return l;
  }
  /** Throughput fields of the progress line, from samples per second. */
  protected rateFields(samplesPerSecond: number): Record<string, number> {
    return { imagesPerSecond: roundLoss(samplesPerSecond) };
  }

  // ---------------------------------------------------------------------------------------------------------
  // Gradients

  protected get groups(): ParamGroup[] {
    this.groupsCache ??= this.paramGroups();
    return this.groupsCache;
  }

  private get variableIndex(): ByVariableName {
    if (!this.byVar) {
      this.byVar = new Map();
      for (const group of this.groups) for (const [name, v] of group.vars) this.byVar.set(v.name, { group, name });
    }
    return this.byVar;
  }

  /** Add `grads` (tf.variableGrads output, keyed by variable name) to the step's accumulators; takes ownership. */
  protected accumulate(grads: Record<string, tf.Tensor | null>): void {
    for (const [vname, g] of Object.entries(grads)) {
      if (!g) continue;
      const owner = this.variableIndex.get(vname);
      if (!owner) {
        g.dispose();
        continue;
      }
      let acc = this.acc.get(owner.group.key);
      if (!acc) {
        acc = new Map();
        this.acc.set(owner.group.key, acc);
      }
      const prev = acc.get(owner.name);
      if (prev) {
        acc.set(owner.name, tf.add(prev, g));
        prev.dispose();
        g.dispose();
      } else {
        acc.set(owner.name, g);
      }
    }
  }

  /** Accumulated gradients of a group in parameter order (the order every rank packs them in). */
  private accumulated(group: ParamGroup): Map<string, tf.Tensor> {
    const acc = this.acc.get(group.key) ?? new Map<string, tf.Tensor>();
    const ordered = new Map<string, tf.Tensor>();
    for (const name of group.vars.keys()) {
      const g = acc.get(name);
      if (g) ordered.set(name, g);
    }
    return ordered;
  }

  protected dropAccumulated(): void {
    for (const m of this.acc.values()) for (const t of m.values()) t.dispose();
    this.acc = new Map();
  }

  private get accumulating(): boolean {
    for (const m of this.acc.values()) if (m.size) return true;
    return false;
  }

  /** Throw (after telling the other ranks) when any of `losses` is NaN/Inf; nothing is applied. */
  private guardLosses(losses: StepLosses): void {
    const bad = nonFiniteLosses(losses);
    if (!Object.keys(bad).length) return;
    this.dropAccumulated();
    const err = new NonFiniteLossError(this.step, bad, this.lastCheckpoint);
    // The other ranks would otherwise wait for this rank's gradients until the timeout.
    this.pg?.abort(err.message);
    throw err;
  }

  /**
   * One optimiser step = `accum` micro-batches. Throws NonFiniteLossError (no update applied) when a loss
   * or a gradient norm is NaN/Inf.
   */
  async trainStep(): Promise<StepLosses> {
    const accum = this.loopCfg.accum;
    const sums: StepLosses = {};
    for (let a = 0; a < accum; a++) {
      const l = await this.forwardBackward(a);
      this.guardLosses(l);
      for (const [k, v] of Object.entries(l)) sums[k] = (sums[k] ?? 0) + v / accum;
      // The last micro-batch of the window is finished only once the optimiser steps below are applied.
      if (a < accum - 1) this.afterMicroStep();
    }
    // Average over ranks (bit-identical on every rank), then norms: identical everywhere, so all ranks stop together.
    const grads = new Map<ParamGroup, Map<string, tf.Tensor>>();
    for (const group of this.groups) {
      const local = this.accumulated(group);
      this.acc.delete(group.key);
      // A group no micro-step produced gradients for (the tokenizer's discriminator while the GAN is off) is
      // not stepped at all. The condition is the same on every rank (it depends on the step only).
      if (local.size === 0) continue;
      grads.set(
        group,
        this.pg ? await averageGradients(this.pg, local, { disposeInputs: true, key: `grads/${group.key}` }) : local,
      );
    }
    for (const [group, g] of grads) this.acc.set(group.key, g);
    const lr = this.lrAt();
    const clips = [...grads].map(([group, g]) => ({ group, ...clipByGlobalNorm(g, this.loopCfg.gradClip) }));
    const norms = Object.fromEntries(clips.map((c) => [c.group.normName, c.norm]));
    if (clips.some((c) => !Number.isFinite(c.norm))) {
      this.dropAccumulated();
      throw new NonFiniteLossError(this.step, { ...sums, ...norms }, this.lastCheckpoint);
    }
    for (const c of clips) {
      c.group.optimizer.step(c.grads, lr);
      if (c.clipped) for (const t of c.grads.values()) t.dispose();
    }
    this.dropAccumulated();
    this.afterMicroStep();
    this.step++;
    return { ...sums, ...norms, lr };
  }

  // ---------------------------------------------------------------------------------------------------------
  // The run

  /** Train until `cfg.steps`: progress lines, progress.json, periodic checkpoints, SIGTERM checkpoint. */
  protected async runLoop(
    opts: { onStep?: (step: number, losses: StepLosses) => void | Promise<void> } = {},
  ): Promise<LoopSummary> {
    const total = this.loopCfg.steps;
    const t0 = performance.now();
    const startStep = this.step;
    const samplesPerStep = this.loopCfg.batchSize * this.loopCfg.accum * this.worldSize;
    let samplesPerSecond = 0;
    let last: StepLosses = {};
    stopSignal.enterLoop();
    try {
      while (this.step < total) {
        last = await this.trainStep();
        for (const k of this.windowKeys) if (k in last) this.window.sums[k] = (this.window.sums[k] ?? 0) + last[k];
        this.window.n++;
        const elapsed = (performance.now() - t0) / 1000;
        const done = this.step - startStep;
        samplesPerSecond = (done * samplesPerStep) / elapsed;
        const etaSeconds = ((total - this.step) * elapsed) / done;
        if (this.step % this.loopCfg.logEvery === 0 || this.step === total) {
          let logged = this.windowKeys.length
            ? {
                ...Object.fromEntries(Object.entries(this.window.sums).map(([k, v]) => [k, v / this.window.n])),
                lr: last.lr,
              }
            : last;
          // Same (step-based) condition on every rank, so every rank joins the reduction.
          if (this.pg) logged = await allReduceLosses(this.pg, logged);
          this.lastReduced = logged;
          this.window = { sums: {}, n: 0 };
          this.log.info(
            {
              step: this.step,
              totalSteps: total,
              worldSize: this.worldSize,
              losses: roundLosses(logged),
              ...this.rateFields(samplesPerSecond),
              etaSeconds: roundLoss(etaSeconds),
            },
            "train progress",
          );
        }
        const progress = { step: this.step, totalSteps: total, imagesPerSecond: samplesPerSecond, etaSeconds };
        await this.report.stepBoundary(
          { ...progress, losses: this.progressLosses(this.lastReduced ?? last) },
          this.pg,
          () => this.saveCheckpoint(),
        );
        await opts.onStep?.(this.step, last);
      }
    } finally {
      stopSignal.leaveLoop();
    }
    if (this.report.finalCheckpointDue(this.step)) await this.saveCheckpoint();
    const final = this.lastReduced ?? last;
    await this.report.writeProgress({ step: this.step, totalSteps: total, losses: this.progressLosses(final) }, true);
    return { losses: final, samplesPerSecond, seconds: (performance.now() - t0) / 1000 };
  }

  /** Write metrics.json (rank 0) under the status prefix. */
  async writeMetrics(report: {
    metrics: Record<string, number>;
    notes?: string[];
    imageUris?: string[];
  }): Promise<void> {
    await this.report.writeMetrics(this.step, report);
  }

  /** URI of the newest checkpoint written (rank 0) or resumed from. */
  get lastCheckpoint(): string | undefined {
    return this.report.lastCheckpoint;
  }

  // ---------------------------------------------------------------------------------------------------------
  // Checkpoints

  /** Every variable a checkpoint holds (and rank 0 broadcasts), by checkpoint prefix. */
  private tensorGroups(): VariableGroups {
    const out: VariableGroups = this.groups.map((g) => [g.prefix, g.vars]);
    out.push(...this.extraVariables());
    for (const g of this.groups) {
      out.push([`${g.optimizerPrefix}m/`, g.optimizer.m]);
      out.push([`${g.optimizerPrefix}v/`, g.optimizer.v]);
    }
    return out;
  }

  toCheckpoint(dataByRank?: DataSourceState[]): Checkpoint {
    if (this.accumulating) throw new CheckpointError("cannot checkpoint in the middle of an accumulation window");
    return {
      kind: this.checkpointKind,
      meta: {
        step: this.step,
        ...Object.fromEntries(this.groups.map((g) => [g.optimizerMeta, { t: g.optimizer.t }])),
        ...this.checkpointMeta(),
        data: this.loopDeps.data.getState(),
        dataByRank,
        backend: this.loopDeps.backend,
        rank: this.rank,
        worldSize: this.worldSize,
      },
      tensors: checkpointTensors(this.tensorGroups()),
    };
  }

  loadFromCheckpoint(ckpt: Checkpoint, source: string): void {
    if (ckpt.kind !== this.checkpointKind) throw new CheckpointError(this.wrongKind(source, ckpt.kind));
    this.checkCompatible(ckpt.meta, source);
    const meta = ckpt.meta as Record<string, unknown> & {
      step?: unknown;
      data?: DataSourceState;
      dataByRank?: DataSourceState[];
    };
    const missing = [
      typeof meta.step !== "number" ? "step" : "",
      ...this.groups.map((g) =>
        typeof (meta[g.optimizerMeta] as { t?: unknown } | undefined)?.t !== "number" ? `${g.optimizerMeta}.t` : "",
      ),
      meta.data ? "" : "data state",
    ].filter(Boolean);
    if (missing.length) throw new CheckpointError(`${source}: header lacks ${missing.join(" / ")}`);
    assignCheckpointTensors(ckpt, source, this.tensorGroups());
    this.step = meta.step as number;
    this.report.lastCheckpointStep = this.step;
    for (const g of this.groups) g.optimizer.t = (meta[g.optimizerMeta] as { t: number }).t;
    this.loopDeps.data.setState(meta.dataByRank?.[this.rank] ?? (meta.data as DataSourceState));
    this.restoreMeta(meta);
  }

  /** Write a checkpoint (rank 0). With a process group EVERY rank must call it (the data states are gathered). */
  async saveCheckpoint(): Promise<string | undefined> {
    return this.report.saveCheckpoint(this.step, this.pg, (dataByRank) => this.toCheckpoint(dataByRank));
  }

  async resume(uri: string): Promise<void> {
    this.loadFromCheckpoint(await loadCheckpoint(uri), uri);
    this.report.resumed(uri, this.step);
  }

  /** Compare a checkpoint's stored architecture with this trainer's (exact match required to resume). */
  protected sameArchitecture(stored: unknown, current: unknown, source: string): void {
    assertSameArchitecture(stored, current, source);
  }

  // ---------------------------------------------------------------------------------------------------------
  // Data parallel

  /** Attach the process group after construction (the rendezvous needs the resumed step). */
  attachProcessGroup(pg: ProcessGroup | undefined): void {
    this.pg = pg && pg.worldSize > 1 ? pg : undefined;
  }

  /**
   * Make every rank hold rank 0's state: every checkpointed variable (broadcast) and the scalar state (optimiser
   * step counts and the trainer's own). Call on every rank after building (and resuming), before the first step.
   * No-op without a process group.
   */
  async syncFromRank0(): Promise<void> {
    if (!this.pg) return;
    const all = new Map<string, tf.Variable>();
    for (const [prefix, m] of this.tensorGroups()) for (const [n, v] of m) all.set(`${prefix}${n}`, v);
    await broadcastVariables(this.pg, all, { key: `${this.checkpointKind}/initial-state` });
    const root = await scalarsFromRank0(this.pg, this.rank, {
      step: this.step,
      t: this.groups.map((g) => g.optimizer.t),
      own: this.scalarState(),
    });
    this.groups.forEach((g, i) => {
      g.optimizer.t = root.t[i];
    });
    this.setScalarState(root.own);
    this.log.info({ tensors: all.size, step: this.step }, "initial state broadcast from rank 0");
  }

  dispose(): void {
    this.dropAccumulated();
    for (const g of this.groups) g.optimizer.dispose();
  }
}

/** The trainable variables a model exposes through getWeights() (error naming the model when there are none). */
export function trainableVariables(weights: Map<string, tf.Tensor>, what: string): Map<string, tf.Variable> {
  const vars = new Map<string, tf.Variable>();
  for (const [name, t] of weights) if (t instanceof tf.Variable && t.trainable) vars.set(name, t);
  if (vars.size === 0) throw new Error(`${what} exposes no trainable variables through getWeights()`);
  return vars;
}

/**
 * WORLD_SIZE > 1: rendezvous (`hashed` = everything that must match across ranks), attach the group to the
 * trainer and make every rank hold rank 0's state. Returns the group (close it after training).
 */
export async function joinProcessGroup(
  trainer: Pick<TrainingLoop, "step" | "attachProcessGroup" | "syncFromRank0">,
  hashed: unknown,
  log: Logger,
): Promise<ProcessGroup> {
  // With the SIGTERM checkpoint handler installed, the group must not tear itself down on SIGTERM: the loop
  // stops every rank at one step boundary instead (train/stopSignal.ts).
  const pg = await initProcessGroup({
    configHash: configHash(hashed),
    step: trainer.step,
    log,
    handleSignals: !stopSignal.installed,
  });
  log.info({ rank: pg.rank, worldSize: pg.worldSize, neighbours: pg.neighbours }, "process group ready");
  trainer.attachProcessGroup(pg);
  await trainer.syncFromRank0();
  return pg;
}
