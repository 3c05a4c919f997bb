// Status documents and the final report (shared by every command: tokenizer, AR, sampling):
// progress.json writes (the trainers through runReport.ts, sampling shards directly),
// `metrics.json` under the status prefix (MERGEVQ_STATUS_URI) and a compact copy as the container's
// termination message (common/src/contract.ts terminationMessage(), ≤ 4 KiB).
import { writeFileSync } from "node:fs";
import {
  type FinalReport,
  METRICS_FILE,
  PROGRESS_FILE,
  type Progress,
  terminationMessage,
} from "../../../common/src/contract.ts";
import { storageFor } from "./storage.ts";
import { joinUri } from "./uri.ts";

/**
 * Write the termination message to TERMINATION_MESSAGE_PATH, or to /dev/termination-log only inside
 * Kubernetes (never create it on a workstation). Best effort: metrics.json carries the same report.
 */
export function writeTermination(pathFromEnv: string | undefined, report: FinalReport): void {
  const p = pathFromEnv ?? (process.env.KUBERNETES_SERVICE_HOST ? "/dev/termination-log" : undefined);
  if (!p) return;
  try {
    writeFileSync(p, terminationMessage(report));
  } catch {
    // The termination message is best effort; metrics.json carries the same report.
  }
}

/** Write `<statusUri>/progress.json` (p plus updatedAt). */
export async function writeProgressJson(statusUri: string, p: Omit<Progress, "updatedAt">): Promise<void> {
  const body: Progress = { ...p, updatedAt: new Date().toISOString() };
  const uri = joinUri(statusUri, PROGRESS_FILE);
  await storageFor(uri).put(uri, new TextEncoder().encode(JSON.stringify(body)));
}

/** Write `<statusUri>/metrics.json` (the report plus updatedAt). */
export async function writeMetricsJson(statusUri: string, report: FinalReport): Promise<void> {
  const uri = joinUri(statusUri, METRICS_FILE);
  const body = { ...report, updatedAt: report.updatedAt ?? new Date().toISOString() };
  await storageFor(uri).put(uri, new TextEncoder().encode(JSON.stringify(body)));
}

/** The report of a run stopped by a non-finite loss (NonFiniteLossError): its step, the last good checkpoint. */
export function nonFiniteReport(e: { step: number; lastCheckpoint: string | undefined; message: string }): FinalReport {
  return {
    metrics: {},
    artifacts: e.lastCheckpoint ? { checkpointUri: e.lastCheckpoint } : undefined,
    notes: [e.message],
    step: e.step,
  };
}
