// Run bookkeeping shared by the two training loops (Stage I tokenizerTrainer.ts, Stage II arTrainer.ts):
//   - progress.json under the status prefix (rank 0 only, throttled to progressIntervalSeconds; common/src/contract.ts
//     Progress: epoch, lastCheckpoint and dataErrors filled in here),
//   - metrics.json (rank 0 only: the report + artifacts.checkpointUri / imageUris, step, updatedAt),
//   - checkpoints: every rank's data-order state gathered into rank 0's checkpoint, keep-last pruning, the
//     lastCheckpoint / lastCheckpointStep bookkeeping and the "checkpoint saved" log line,
//   - named variable groups ↔ checkpoint tensors, the rank-0 scalar-state broadcast, loss rounding for log lines.
// The trainers own what differs (their checkpoint contents, loss windows and the "train progress" line fields).
import * as tf from "@tensorflow/tfjs";
import { METRICS_FILE } from "../../../common/src/contract.ts";
import type { Logger } from "../../../common/src/logger.ts";
import type { DataSourceState } from "../data/localFolder.ts";
import type { ProcessGroup } from "../dist/processGroup.ts";
import { type Checkpoint, CheckpointError, saveCheckpoint, type TensorEntry } from "../io/checkpoint.ts";
import { writeProgressJson } from "../io/status.ts";
import { storageFor } from "../io/storage.ts";
import { joinUri } from "../io/uri.ts";
import { stopSignal, TerminatedBySignal } from "./stopSignal.ts";

export type Losses = Record<string, number>;

/** 5 significant digits (log lines); NaN/Inf unchanged. */
export const roundLoss = (v: number): number => (Number.isFinite(v) ? Number(v.toPrecision(5)) : v);
export const roundLosses = (o: Losses): Losses =>
  Object.fromEntries(Object.entries(o).map(([k, v]) => [k, roundLoss(v)]));
/** The finite entries (progress.json and metrics must be valid JSON numbers). */
export const finiteLosses = (o: Losses): Losses =>
  Object.fromEntries(Object.entries(o).filter(([, v]) => Number.isFinite(v)));
/** The NaN/Inf entries (empty when all are finite). */
export const nonFiniteLosses = (o: Losses): Losses =>
  Object.fromEntries(Object.entries(o).filter(([, v]) => !Number.isFinite(v)));

/** What the report needs from a trainer's data source. */
export interface ReportedData {
  getState(): DataSourceState;
  readonly dataErrors: Record<string, number>;
}

/** What both trainers take besides their model, data and config. */
export interface RunDeps {
  log: Logger;
  rank?: number;
  worldSize?: number;
  /** Checkpoint prefix (path, file:// or s3://); undefined → no checkpoints. */
  checkpointDir?: string;
  /** Prefix for progress.json / metrics.json (rank 0 only). */
  statusUri?: string;
  backend?: string;
  /** Process group for data parallelism (WORLD_SIZE > 1); absent or world size 1 = single process. */
  pg?: ProcessGroup;
}

/** The RunDeps fields of a larger options object (rank and world size defaulted). */
export function runDepsOf(o: RunDeps): Required<Pick<RunDeps, "rank" | "worldSize">> & RunDeps {
  const { log, rank = 0, worldSize = 1, checkpointDir, statusUri, backend, pg } = o;
  return { log, rank, worldSize, checkpointDir, statusUri, backend, pg };
}

/** The training-config fields the report reads (live: the tokenizer's config is completed after construction). */
export interface RunReportConfig {
  progressIntervalSeconds: number;
  checkpointInterval: number;
  keepLast: number;
}

/** Progress of one step, as the loop knows it (epoch, checkpoint and data errors are added here). */
export interface StepProgress {
  step: number;
  totalSteps: number;
  imagesPerSecond?: number;
  etaSeconds?: number;
  losses?: Losses;
}

/** Per-run report and checkpoint state of one trainer (see the header). */
export class RunReport {
  /** URI of the newest checkpoint written (rank 0) or resumed from. */
  lastCheckpoint: string | undefined;
  /** Step of the newest checkpoint written or resumed from (every rank; -1 = none). */
  lastCheckpointStep = -1;
  private lastProgressWrite = 0;
  /** A checkpoint was saved that progress.json does not name yet (forces the next write). */
  private checkpointUnreported = false;
  private readonly o: Pick<RunDeps, "statusUri" | "checkpointDir" | "log"> & {
    rank: number;
    data: ReportedData;
    cfg: RunReportConfig;
  };

  constructor(deps: RunDeps & { data: ReportedData }, cfg: RunReportConfig) {
    const { statusUri, checkpointDir, log, data } = deps;
    this.o = { rank: deps.rank ?? 0, statusUri, checkpointDir, log, data, cfg };
  }

  /**
   * End of one optimiser step in either loop: the periodic checkpoint when due, the SIGTERM stop (below), then
   * progress.json (throttled).
   */
  async stepBoundary(p: StepProgress, pg: ProcessGroup | undefined, save: () => Promise<unknown>): Promise<void> {
    if (this.checkpointDue(p.step)) await save();
    await this.stopIfSignalled(p, pg, save);
    await this.writeProgress(p);
  }

  /**
   * Step boundary of either loop: when any rank received SIGTERM (stopSignal.ts), save a checkpoint at this step
   * (every rank joins the save), rewrite progress.json at once and throw TerminatedBySignal. A no-op without the
   * SIGTERM handler; with a group it costs one scalar all-reduce per step.
   */
  async stopIfSignalled(p: StepProgress, pg: ProcessGroup | undefined, save: () => Promise<unknown>): Promise<void> {
    if (!(await stopSignal.agreed(pg))) return;
    if (this.o.checkpointDir !== undefined && this.lastCheckpointStep !== p.step) await save();
    this.o.log.warn({ step: p.step, checkpoint: this.lastCheckpoint }, "SIGTERM: checkpoint saved, stopping");
    await this.writeProgress(p, true);
    throw new TerminatedBySignal(p.step, this.lastCheckpoint);
  }

  /** True at a periodic checkpoint step (CHECKPOINT_INTERVAL; 0 = only at the end). */
  checkpointDue(step: number): boolean {
    const every = this.o.cfg.checkpointInterval;
    return this.o.checkpointDir !== undefined && every > 0 && step % every === 0;
  }

  /** True when the run ends at a step that has no checkpoint yet. */
  finalCheckpointDue(step: number): boolean {
    return this.o.checkpointDir !== undefined && this.lastCheckpointStep !== step;
  }

  /**
   * progress.json (rank 0), at most every progressIntervalSeconds unless `force` — or a checkpoint was saved
   * since the last write: the operator resumes restarts from progress.json's lastCheckpoint, which must not lag
   * (with keepLast, a lagging one may already be deleted).
   */
  async writeProgress(p: StepProgress, force = false): Promise<void> {
    if (this.o.rank !== 0 || !this.o.statusUri) return;
    const now = Date.now();
    const interval = this.o.cfg.progressIntervalSeconds * 1000;
    if (!force && !this.checkpointUnreported && now - this.lastProgressWrite < interval) return;
    this.lastProgressWrite = now;
    this.checkpointUnreported = false;
    const errors = this.o.data.dataErrors;
    await writeProgressJson(this.o.statusUri, {
      step: p.step,
      totalSteps: p.totalSteps,
      epoch: this.o.data.getState().epoch,
      imagesPerSecond: p.imagesPerSecond,
      etaSeconds: p.etaSeconds !== undefined && Number.isFinite(p.etaSeconds) ? p.etaSeconds : undefined,
      losses: p.losses ? finiteLosses(p.losses) : undefined,
      lastCheckpoint: this.lastCheckpoint,
      dataErrors: Object.keys(errors).length ? errors : undefined,
    });
  }

  /** metrics.json (rank 0) under the status prefix; artifacts name the last checkpoint and any images. */
  async writeMetrics(
    step: number,
    report: { metrics: Record<string, number>; notes?: string[]; imageUris?: string[] },
  ): Promise<void> {
    if (this.o.rank !== 0 || !this.o.statusUri) return;
    const uri = joinUri(this.o.statusUri, METRICS_FILE);
    const { imageUris, ...rest } = report;
    const body = {
      ...rest,
      artifacts:
        this.lastCheckpoint || imageUris?.length
          ? { checkpointUri: this.lastCheckpoint, imageUris: imageUris?.length ? imageUris : undefined }
          : undefined,
      step,
      updatedAt: new Date().toISOString(),
    };
    await storageFor(uri).put(uri, new TextEncoder().encode(JSON.stringify(body)));
  }

  /**
   * Write the checkpoint of `step` (rank 0; `build` gets every rank's data state when there is a process
   * group). With a process group EVERY rank must call it (the data states are gathered).
   */
  async saveCheckpoint(
    step: number,
    pg: ProcessGroup | undefined,
    build: (dataByRank?: DataSourceState[]) => Checkpoint,
  ): Promise<string | undefined> {
    if (!this.o.checkpointDir) return undefined;
    let dataByRank: DataSourceState[] | undefined;
    if (pg) {
      const all = await pg.allGather(new TextEncoder().encode(JSON.stringify(this.o.data.getState())));
      dataByRank = all.map((b) => JSON.parse(new TextDecoder().decode(b)) as DataSourceState);
    }
    if (this.o.rank !== 0) {
      this.lastCheckpointStep = step;
      return undefined;
    }
    const uri = await saveCheckpoint(this.o.checkpointDir, step, build(dataByRank), { keepLast: this.o.cfg.keepLast });
    this.lastCheckpoint = uri;
    this.lastCheckpointStep = step;
    this.checkpointUnreported = true;
    this.o.log.info({ step, checkpoint: uri }, "checkpoint saved");
    return uri;
  }

  /** After loading a checkpoint: it counts as the last one (no re-save at the same step). */
  resumed(uri: string, step: number): void {
    this.lastCheckpoint = uri;
    this.lastCheckpointStep = step;
    this.o.log.info({ step, checkpoint: uri }, "resumed from checkpoint");
  }
}

/** Named variable groups of a trainer, stored in checkpoints as `<prefix><name>` (in this order). */
export type VariableGroups = [prefix: string, vars: ReadonlyMap<string, tf.Variable>][];

/** The groups' values as float32 checkpoint tensors. */
export function checkpointTensors(groups: VariableGroups): Map<string, TensorEntry> {
  const tensors = new Map<string, TensorEntry>();
  for (const [prefix, m] of groups)
    for (const [n, t] of m)
      tensors.set(`${prefix}${n}`, { shape: t.shape, dtype: "float32", data: t.dataSync() as Float32Array });
  return tensors;
}

/** Assign the checkpoint's `<prefix><name>` tensors to the variables; missing or mis-shaped ones are errors. */
export function assignCheckpointTensors(ckpt: Checkpoint, source: string, groups: VariableGroups): void {
  for (const [prefix, m] of groups) {
    for (const [n, v] of m) {
      const e = ckpt.tensors.get(`${prefix}${n}`);
      if (!e) throw new CheckpointError(`${source}: missing tensor ${prefix}${n}`);
      if (e.shape.join() !== v.shape.join())
        throw new CheckpointError(`${source}: ${prefix}${n} has shape [${e.shape}], model has [${v.shape}]`);
      tf.tidy(() => v.assign(tf.tensor(e.data as Float32Array, e.shape)));
    }
  }
}

/**
 * Rank 0's JSON scalar state (`mine` on rank 0), broadcast to every rank. A rank at another step than rank 0
 * aborts the group and throws (the ranks resumed from different checkpoints).
 */
export async function scalarsFromRank0<T extends { step: number }>(
  pg: ProcessGroup,
  rank: number,
  mine: T,
): Promise<T> {
  const bytes = await pg.broadcastBytes(pg.rank === 0 ? new TextEncoder().encode(JSON.stringify(mine)) : null, 0);
  const root = JSON.parse(new TextDecoder().decode(bytes)) as T;
  if (root.step !== mine.step) {
    const msg = `rank ${rank} is at step ${mine.step} but rank 0 at step ${root.step} (different checkpoints?)`;
    pg.abort(msg);
    throw new Error(msg);
  }
  return root;
}
