// Checkpoint container: one self-verifying binary object per checkpoint.
//
//   bytes 0..7    magic "MVQCKPT1"
//   bytes 8..11   uint32 LE  header length H
//   bytes 12..    header JSON (UTF-8), space-padded so that the payload starts at a multiple of 8
//   payload       tensors, little-endian float32/int32, each at its header offset (relative to payload start)
//   last 32 bytes SHA-256 of everything before them
//
// The header holds everything that is not a tensor (step, RNG and data-order state, LeCam EMAs, optimiser
// step counts, the full model + training config). Tensor names are namespaced by the trainer (train/loop.ts
// ParamGroup prefixes): tokenizer "g/…", "d/…", "ema/…", "adam_g/{m,v}/…", "adam_d/{m,v}/…"; AR "model/…",
// "adamw/{m,v}/…". Save → load is exact (raw float32 bytes).
import { createHash } from "node:crypto";
import { type Storage, storageFor } from "./storage.ts";
import { joinUri } from "./uri.ts";

export const CHECKPOINT_MAGIC = "MVQCKPT1";
export const CHECKPOINT_FORMAT_VERSION = 1;

export type TensorDType = "float32" | "int32";
export interface TensorEntry {
  shape: number[];
  dtype: TensorDType;
  data: Float32Array | Int32Array;
}

export interface CheckpointHeader {
  format: "mergevq-checkpoint";
  version: number;
  kind: string;
  createdAt: string;
  /** Arbitrary JSON state (step, rng, config …). */
  meta: Record<string, unknown>;
  tensors: { name: string; shape: number[]; dtype: TensorDType; offset: number; byteLength: number }[];
}

export interface Checkpoint {
  kind: string;
  meta: Record<string, unknown>;
  tensors: Map<string, TensorEntry>;
}

export class CheckpointError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CheckpointError";
  }
}

const enc = new TextEncoder();
const dec = new TextDecoder();

export function encodeCheckpoint(ckpt: Checkpoint): Uint8Array {
  const entries: CheckpointHeader["tensors"] = [];
  let offset = 0;
  const names = [...ckpt.tensors.keys()].sort();
  for (const name of names) {
    const t = ckpt.tensors.get(name) as TensorEntry;
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (n !== t.data.length) {
      throw new CheckpointError(`tensor ${name}: shape [${t.shape}] has ${n} elements but data has ${t.data.length}`);
    }
    const byteLength = t.data.length * 4;
    entries.push({ name, shape: t.shape, dtype: t.dtype, offset, byteLength });
    offset += byteLength;
  }
  const header: CheckpointHeader = {
    format: "mergevq-checkpoint",
    version: CHECKPOINT_FORMAT_VERSION,
    kind: ckpt.kind,
    createdAt: new Date().toISOString(),
    meta: ckpt.meta,
    tensors: entries,
  };
  let hbytes = enc.encode(JSON.stringify(header));
  const pad = (8 - ((12 + hbytes.length) % 8)) % 8;
  if (pad) {
    const padded = new Uint8Array(hbytes.length + pad).fill(0x20);
    padded.set(hbytes);
    hbytes = padded;
  }
  const payloadStart = 12 + hbytes.length;
  const out = new Uint8Array(payloadStart + offset + 32);
  out.set(enc.encode(CHECKPOINT_MAGIC), 0);
  new DataView(out.buffer).setUint32(8, hbytes.length, true);
  out.set(hbytes, 12);
  for (const e of entries) {
    const t = ckpt.tensors.get(e.name) as TensorEntry;
    const bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    out.set(bytes, payloadStart + e.offset);
  }
  const digest = createHash("sha256")
    .update(out.subarray(0, out.length - 32))
    .digest();
  out.set(digest, out.length - 32);
  return out;
}

export function decodeCheckpoint(bytes: Uint8Array, source = "<buffer>"): Checkpoint {
  if (bytes.length < 44 || dec.decode(bytes.subarray(0, 8)) !== CHECKPOINT_MAGIC) {
    throw new CheckpointError(`${source}: not a MergeVQ checkpoint (bad magic)`);
  }
  const body = bytes.subarray(0, bytes.length - 32);
  const want = Buffer.from(bytes.subarray(bytes.length - 32)).toString("hex");
  const got = createHash("sha256").update(body).digest("hex");
  if (want !== got) throw new CheckpointError(`${source}: SHA-256 mismatch (file is corrupt or truncated)`);
  const hlen = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(8, true);
  const header = JSON.parse(dec.decode(bytes.subarray(12, 12 + hlen))) as CheckpointHeader;
  if (header.format !== "mergevq-checkpoint" || header.version !== CHECKPOINT_FORMAT_VERSION) {
    throw new CheckpointError(`${source}: unsupported checkpoint format ${header.format} v${header.version}`);
  }
  const payloadStart = 12 + hlen;
  const tensors = new Map<string, TensorEntry>();
  for (const e of header.tensors) {
    // Copy into an aligned buffer of its own (payload offsets are 4-aligned relative to an 8-aligned start, but
    // the bytes we were handed may start anywhere; a Buffer's slice() is a view, so copy explicitly).
    const raw = new Uint8Array(bytes.subarray(payloadStart + e.offset, payloadStart + e.offset + e.byteLength));
    const data = e.dtype === "int32" ? new Int32Array(raw.buffer) : new Float32Array(raw.buffer);
    tensors.set(e.name, { shape: e.shape, dtype: e.dtype, data });
  }
  return { kind: header.kind, meta: header.meta, tensors };
}

/** Checkpoint object name for an optimiser step. */
export function checkpointName(step: number): string {
  return `step-${String(step).padStart(9, "0")}.ckpt`;
}
export const LATEST_POINTER = "latest.json";
/** A checkpoint object directly under its directory. */
const CKPT_NAME = /\/step-\d{9}\.ckpt$/;

/**
 * Write a checkpoint under `dir`, then the `latest.json` pointer (so a reader never sees a pointer to a
 * half-written object), then prune all but the newest `keepLast`. Returns the checkpoint URI.
 */
export async function saveCheckpoint(
  dir: string,
  step: number,
  ckpt: Checkpoint,
  opts: { keepLast?: number; storage?: Storage } = {},
): Promise<string> {
  const storage = opts.storage ?? storageFor(dir);
  const uri = joinUri(dir, checkpointName(step));
  await storage.put(uri, encodeCheckpoint(ckpt));
  await storage.put(joinUri(dir, LATEST_POINTER), enc.encode(JSON.stringify({ uri, step })));
  const keep = opts.keepLast ?? 0;
  if (keep > 0) {
    // Listed URIs may be spelled differently from `dir` (file:// vs a path): compare checkpoint names.
    const all = (await storage.list(joinUri(dir, "step-"))).map((o) => o.uri).filter((u) => CKPT_NAME.test(u));
    const current = checkpointName(step);
    const doomed = all.slice(0, Math.max(0, all.length - keep)).filter((u) => !u.endsWith(`/${current}`));
    if (doomed.length) await storage.delete(doomed);
  }
  return uri;
}

/** Load a checkpoint from a URI; a directory/prefix is resolved through its `latest.json`. */
export async function loadCheckpoint(uri: string, storage: Storage = storageFor(uri)): Promise<Checkpoint> {
  let target = uri;
  if (!/\.ckpt$/.test(uri)) {
    const ptr = joinUri(uri, LATEST_POINTER);
    if (!(await storage.exists(ptr))) throw new CheckpointError(`${uri}: no ${LATEST_POINTER} and not a .ckpt object`);
    target = (JSON.parse(dec.decode(await storage.get(ptr))) as { uri: string }).uri;
  }
  return decodeCheckpoint(await storage.get(target), target);
}

/** The newest checkpoint URI under a directory (via latest.json), or undefined. */
export async function latestCheckpoint(dir: string, storage: Storage = storageFor(dir)): Promise<string | undefined> {
  const ptr = joinUri(dir, LATEST_POINTER);
  if (!(await storage.exists(ptr))) return undefined;
  return (JSON.parse(dec.decode(await storage.get(ptr))) as { uri: string }).uri;
}

/** Paths (a.b.c) where two JSON values differ. */
export function jsonDiff(a: unknown, b: unknown, prefix = ""): string[] {
  if (typeof a !== typeof b || Array.isArray(a) !== Array.isArray(b) || (a === null) !== (b === null)) {
    return [prefix || "<root>"];
  }
  if (a !== null && typeof a === "object") {
    const ao = a as Record<string, unknown>;
    const bo = b as Record<string, unknown>;
    const keys = new Set([...Object.keys(ao), ...Object.keys(bo)]);
    const out: string[] = [];
    for (const k of [...keys].sort()) out.push(...jsonDiff(ao[k], bo[k], prefix ? `${prefix}.${k}` : k));
    return out;
  }
  return a === b ? [] : [prefix || "<root>"];
}

/** Throw a clear error when a checkpoint's stored architecture differs from the one being built. */
export function assertSameArchitecture(stored: unknown, current: unknown, source: string): void {
  const diff = jsonDiff(stored, current);
  if (diff.length) {
    const show = diff
      .slice(0, 8)
      .map((p) => `${p}: checkpoint=${JSON.stringify(pick(stored, p))} current=${JSON.stringify(pick(current, p))}`);
    throw new CheckpointError(
      `${source}: checkpoint architecture differs from the requested config in ${diff.length} field(s): ${show.join("; ")}`,
    );
  }
}

function pick(v: unknown, p: string): unknown {
  let cur = v;
  for (const k of p.split(".")) {
    if (cur === null || typeof cur !== "object") return undefined;
    cur = (cur as Record<string, unknown>)[k];
  }
  return cur;
}
