// Checkpoints on object storage (s3:// or file://).
//
// Layout under a checkpoint dir URI:
//   step-000000120/checkpoint.bin   the bytes (streamed; multipart on S3)
//   step-000000120/manifest.json    { step, size, sha256, ... }  written after the bytes are complete
//   latest.json                     { step, uri, sha256, size }  written LAST: the atomic commit point
// A writer killed mid-upload leaves at most an incomplete step dir without a manifest; `latest.json` still
// names the previous checkpoint, and readers ignore step dirs without a manifest. Every load re-hashes the
// bytes; a checkpoint whose SHA-256 differs from its manifest is refused (CheckpointIntegrityError, logged)
// and the next older complete one is used.
import { createHash } from "node:crypto";
import type { Readable } from "node:stream";
import { z } from "zod";
import { createStorage } from "./s3.ts";
import type { Storage } from "./storage.ts";
import { joinUri } from "./uri.ts";

export const CHECKPOINT_FILE = "checkpoint.bin";
export const MANIFEST_FILE = "manifest.json";
export const LATEST_FILE = "latest.json";

export const CheckpointManifest = z.object({
  format: z.literal("mergevq-checkpoint-v1"),
  step: z.number().int().min(0),
  file: z.string(),
  size: z.number().int().min(0),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  createdAt: z.string(),
  meta: z.record(z.string(), z.unknown()).optional(),
});
export type CheckpointManifest = z.infer<typeof CheckpointManifest>;

export const LatestPointer = z.object({
  step: z.number().int().min(0),
  /** URI of the step dir. */
  uri: z.string(),
  sha256: z.string(),
  size: z.number().int().min(0),
});
export type LatestPointer = z.infer<typeof LatestPointer>;

export class CheckpointIntegrityError extends Error {
  constructor(
    readonly uri: string,
    readonly expected: string,
    readonly actual: string,
  ) {
    super(`checkpoint ${uri} failed its SHA-256 check (manifest ${expected}, data ${actual}): refusing to load it`);
    this.name = "CheckpointIntegrityError";
  }
}

export interface CheckpointRef {
  step: number;
  /** Step dir URI. */
  uri: string;
  complete: boolean;
  size?: number;
  sha256?: string;
}

export interface LoadedCheckpoint {
  step: number;
  uri: string;
  bytes: Buffer;
  manifest: CheckpointManifest;
  /** Newer checkpoints that were refused, with why (integrity failures, unreadable manifests). */
  rejected: { uri: string; reason: string }[];
}

export interface StoreOptions {
  storage?: Storage;
  /** Called for every refused checkpoint (the trainer logs it and counts it). */
  onReject?: (uri: string, err: Error) => void;
}

const stepName = (step: number) => `step-${String(step).padStart(9, "0")}`;
const STEP_RE = /\/step-(\d{9,})\/([^/]+)$/;

function storageFor(dirUri: string, opts: StoreOptions): Storage {
  return opts.storage ?? createStorage(dirUri);
}

/** Every checkpoint under `dirUri`, oldest first; `complete` means its manifest exists. */
export async function listCheckpoints(dirUri: string, opts: StoreOptions = {}): Promise<CheckpointRef[]> {
  const storage = storageFor(dirUri, opts);
  const objects = await storage.list(joinUri(dirUri, "step-"));
  const base = joinUri(dirUri, "");
  const byStep = new Map<number, CheckpointRef>();
  for (const o of objects) {
    // Compare on the part below dirUri (list() may return file:// URIs for plain paths).
    const m = STEP_RE.exec(o.uri);
    if (!m) continue;
    const step = Number(m[1]);
    const ref = byStep.get(step) ?? { step, uri: joinUri(base, stepName(step)), complete: false };
    if (m[2] === MANIFEST_FILE) ref.complete = true;
    if (m[2] === CHECKPOINT_FILE) ref.size = o.size;
    byStep.set(step, ref);
  }
  return [...byStep.values()].sort((a, b) => a.step - b.step);
}

export interface SaveOptions extends StoreOptions {
  /** Keep this many newest complete checkpoints (0 = keep all). */
  keepLast?: number;
  meta?: Record<string, unknown>;
}

export interface SavedCheckpoint {
  step: number;
  uri: string;
  sha256: string;
  size: number;
  deleted: string[];
}

/** Upload one checkpoint, then its manifest, then move `latest.json` to it, then apply retention. */
export async function saveCheckpoint(
  dirUri: string,
  step: number,
  data: Uint8Array | Readable | AsyncIterable<Uint8Array>,
  opts: SaveOptions = {},
): Promise<SavedCheckpoint> {
  if (!Number.isInteger(step) || step < 0)
    throw new Error(`checkpoint step must be a non-negative integer, got ${step}`);
  const storage = storageFor(dirUri, opts);
  const uri = joinUri(dirUri, stepName(step));
  const body =
    data instanceof Uint8Array
      ? (async function* () {
          yield data;
        })()
      : data;
  const { size, sha256 } = await storage.putStream(joinUri(uri, CHECKPOINT_FILE), body);
  const manifest: CheckpointManifest = {
    format: "mergevq-checkpoint-v1",
    step,
    file: CHECKPOINT_FILE,
    size,
    sha256,
    createdAt: new Date().toISOString(),
    meta: opts.meta,
  };
  await storage.put(joinUri(uri, MANIFEST_FILE), JSON.stringify(manifest, null, 1));
  const latest: LatestPointer = { step, uri, sha256, size };
  await storage.put(joinUri(dirUri, LATEST_FILE), JSON.stringify(latest));
  const deleted = opts.keepLast ? await applyRetention(dirUri, opts.keepLast, { ...opts, storage }, step) : [];
  return { step, uri, sha256, size, deleted };
}

/**
 * Delete all but the `keepLast` newest complete checkpoints, plus incomplete step dirs older than the newest
 * complete one (debris of killed writers). Never deletes `protectStep` (the one `latest.json` names).
 */
export async function applyRetention(
  dirUri: string,
  keepLast: number,
  opts: StoreOptions = {},
  protectStep?: number,
): Promise<string[]> {
  const storage = storageFor(dirUri, opts);
  const refs = await listCheckpoints(dirUri, { storage });
  const complete = refs.filter((r) => r.complete);
  const keep = new Set(complete.slice(-keepLast).map((r) => r.step));
  if (protectStep !== undefined) keep.add(protectStep);
  const newestComplete = complete.at(-1)?.step ?? -1;
  const doomed = refs.filter((r) => !keep.has(r.step) && (r.complete || r.step < newestComplete));
  if (!doomed.length) return [];
  // Manifest first: a half-deleted checkpoint is then just an incomplete step dir.
  for (const r of doomed) await storage.delete([joinUri(r.uri, MANIFEST_FILE)]);
  const rest: string[] = [];
  for (const r of doomed) for (const o of await storage.list(joinUri(r.uri, ""))) rest.push(o.uri);
  await storage.delete(rest);
  return doomed.map((r) => r.uri);
}

async function readJson<T>(storage: Storage, uri: string, schema: z.ZodType<T>): Promise<T> {
  return schema.parse(JSON.parse((await storage.get(uri)).toString("utf8")));
}

async function loadVerified(
  storage: Storage,
  stepUri: string,
): Promise<{ bytes: Buffer; manifest: CheckpointManifest }> {
  const manifest = await readJson(storage, joinUri(stepUri, MANIFEST_FILE), CheckpointManifest);
  const bytes = await storage.get(joinUri(stepUri, manifest.file));
  const actual = createHash("sha256").update(bytes).digest("hex");
  if (actual !== manifest.sha256 || bytes.length !== manifest.size) {
    throw new CheckpointIntegrityError(stepUri, manifest.sha256, `${actual} (${bytes.length} bytes)`);
  }
  return { bytes, manifest };
}

/**
 * The newest checkpoint under `dirUri` that passes its integrity check: the one `latest.json` names first,
 * then older complete ones. Undefined when the dir holds no checkpoint; throws the first refusal when every
 * checkpoint was refused.
 */
export async function loadLatest(dirUri: string, opts: StoreOptions = {}): Promise<LoadedCheckpoint | undefined> {
  const storage = storageFor(dirUri, opts);
  let pointer: LatestPointer | undefined;
  try {
    pointer = await readJson(storage, joinUri(dirUri, LATEST_FILE), LatestPointer);
  } catch {
    // No pointer (never written, or unreadable): fall back to scanning the complete step dirs.
  }
  // Step dirs newer than the pointer were never committed: ignore them.
  const older = (await listCheckpoints(dirUri, { storage }))
    .filter((r) => r.complete && (pointer === undefined || r.step < pointer.step))
    .reverse()
    .map((r) => r.uri);
  const candidates = pointer ? [pointer.uri, ...older] : older;
  if (candidates.length === 0) return undefined;
  return loadFirstValid(storage, candidates, opts);
}

async function loadFirstValid(storage: Storage, uris: string[], opts: StoreOptions): Promise<LoadedCheckpoint> {
  const rejected: { uri: string; reason: string }[] = [];
  let first: Error | undefined;
  for (const uri of uris) {
    try {
      const { bytes, manifest } = await loadVerified(storage, uri);
      return { step: manifest.step, uri, bytes, manifest, rejected };
    } catch (e) {
      const err = e as Error;
      first ??= err;
      rejected.push({ uri, reason: err.message });
      opts.onReject?.(uri, err);
    }
  }
  throw first ?? new Error("no checkpoint candidates");
}

/**
 * Resume from a URI: a step dir (`…/step-000000120`), its manifest, or a checkpoint dir (→ loadLatest). A
 * refused step dir falls back to the newest older complete checkpoint in the same dir.
 */
export async function loadCheckpoint(uri: string, opts: StoreOptions = {}): Promise<LoadedCheckpoint | undefined> {
  const storage = storageFor(uri, opts);
  const clean = uri.replace(/\/+$/, "").replace(new RegExp(`/${MANIFEST_FILE}$`), "");
  const m = /^(.*)\/step-(\d{9,})$/.exec(clean);
  if (!m) return loadLatest(clean, { ...opts, storage });
  const [, dir, stepStr] = m;
  const step = Number(stepStr);
  const older = (await listCheckpoints(dir, { storage })).filter((r) => r.complete && r.step < step).reverse();
  return loadFirstValid(storage, [clean, ...older.map((r) => r.uri)], opts);
}
