// Minimal NumPy .npy / .npz reader and writer (no dependency; numpy's own formats):
// - .npy: format versions 1.0/2.0/3.0, little-endian f4/f8/u1/i1/i4/i8/u4/b1 (others throw), C order
//   (fortran_order=True throws rather than returning transposed data).
// - .npz: a zip of `<name>.npy` members, STORED (np.savez) or DEFLATED (np.savez_compressed); zip64
//   (numpy writes members with force_zip64) is handled. Members are located through the central directory
//   and read on demand, so a 2 GB ADM reference batch can be opened for its `mu`/`sigma` without reading
//   `arr_0`; `iterateNpzRows` streams a large member (e.g. the uint8 [N,H,W,3] `arr_0` of a sample.npz) in
//   row batches with bounded memory.
// - Writing produces STORED members (what np.savez writes), readable by np.load.
// No npm package was used: the few on npm are unmaintained or read the whole file into memory.
import { createReadStream } from "node:fs";
import { type FileHandle, open } from "node:fs/promises";
import { crc32, createInflateRaw } from "node:zlib";

export type NpyDtype = "<f4" | "<f8" | "|u1" | "|i1" | "<i4" | "<u4" | "<i8" | "|b1";

export type NpyData = Float32Array | Float64Array | Uint8Array | Int8Array | Int32Array | Uint32Array | BigInt64Array;

export interface NdArray {
  dtype: NpyDtype;
  shape: number[];
  data: NpyData;
}

const DTYPES: Record<string, { dtype: NpyDtype; bytes: number }> = {
  "<f4": { dtype: "<f4", bytes: 4 },
  "<f8": { dtype: "<f8", bytes: 8 },
  "|u1": { dtype: "|u1", bytes: 1 },
  "<u1": { dtype: "|u1", bytes: 1 },
  "|i1": { dtype: "|i1", bytes: 1 },
  "<i4": { dtype: "<i4", bytes: 4 },
  "<u4": { dtype: "<u4", bytes: 4 },
  "<i8": { dtype: "<i8", bytes: 8 },
  "|b1": { dtype: "|b1", bytes: 1 },
};

function dtypeOf(data: NpyData): NpyDtype {
  if (data instanceof Float32Array) return "<f4";
  if (data instanceof Float64Array) return "<f8";
  if (data instanceof Uint8Array) return "|u1";
  if (data instanceof Int8Array) return "|i1";
  if (data instanceof Int32Array) return "<i4";
  if (data instanceof Uint32Array) return "<u4";
  return "<i8";
}

function makeTyped(dtype: NpyDtype, buf: Uint8Array): NpyData {
  // Copy into a fresh, aligned buffer (zip offsets are arbitrary).
  const copy = new Uint8Array(buf.byteLength);
  copy.set(buf);
  const ab = copy.buffer;
  switch (dtype) {
    case "<f4":
      return new Float32Array(ab);
    case "<f8":
      return new Float64Array(ab);
    case "|u1":
    case "|b1":
      return copy;
    case "|i1":
      return new Int8Array(ab);
    case "<i4":
      return new Int32Array(ab);
    case "<u4":
      return new Uint32Array(ab);
    case "<i8":
      return new BigInt64Array(ab);
  }
}

export interface NpyHeader {
  dtype: NpyDtype;
  itemBytes: number;
  shape: number[];
  /** Byte offset of the data inside the .npy. */
  dataOffset: number;
}

/** Parse a .npy header from the first bytes of the file (needs the whole header). */
export function parseNpyHeader(buf: Uint8Array): NpyHeader {
  if (buf.byteLength < 12) throw new Error("npy: truncated header");
  const magic = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59];
  for (let i = 0; i < 6; i++) if (buf[i] !== magic[i]) throw new Error("npy: bad magic");
  const major = buf[6];
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let hlen: number;
  let start: number;
  if (major === 1) {
    hlen = dv.getUint16(8, true);
    start = 10;
  } else if (major === 2 || major === 3) {
    hlen = dv.getUint32(8, true);
    start = 12;
  } else throw new Error(`npy: unsupported format version ${major}`);
  if (buf.byteLength < start + hlen) throw new Error("npy: truncated header");
  const header = new TextDecoder(major === 3 ? "utf-8" : "latin1").decode(buf.subarray(start, start + hlen));
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*(True|False)/.exec(header)?.[1];
  const shapeStr = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1];
  if (descr === undefined || fortran === undefined || shapeStr === undefined) {
    throw new Error(`npy: cannot parse header ${header.trim()}`);
  }
  const dt = DTYPES[descr];
  if (!dt) throw new Error(`npy: unsupported dtype ${descr} (supported: ${Object.keys(DTYPES).join(", ")})`);
  if (fortran === "True") throw new Error("npy: fortran_order=True arrays are not supported");
  const shape = shapeStr
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
    .map((s) => Number.parseInt(s, 10));
  return { dtype: dt.dtype, itemBytes: dt.bytes, shape, dataOffset: start + hlen };
}

export function decodeNpy(buf: Uint8Array): NdArray {
  const h = parseNpyHeader(buf);
  const count = h.shape.reduce((a, b) => a * b, 1);
  const bytes = buf.subarray(h.dataOffset, h.dataOffset + count * h.itemBytes);
  if (bytes.byteLength !== count * h.itemBytes) throw new Error("npy: truncated data");
  return { dtype: h.dtype, shape: h.shape, data: makeTyped(h.dtype, bytes) };
}

export function encodeNpy(arr: { shape: number[]; data: NpyData; dtype?: NpyDtype }): Buffer {
  const count = arr.shape.reduce((a, b) => a * b, 1);
  if (count !== arr.data.length) throw new Error(`npy: shape [${arr.shape}] does not match ${arr.data.length} items`);
  const dtype = arr.dtype ?? dtypeOf(arr.data);
  const shape = arr.shape.length === 1 ? `(${arr.shape[0]},)` : `(${arr.shape.join(", ")})`;
  let header = `{'descr': '${dtype}', 'fortran_order': False, 'shape': ${shape}, }`;
  // numpy pads magic+version+len+header+"\n" to a multiple of 64 bytes.
  const total = 10 + header.length + 1;
  header += " ".repeat((64 - (total % 64)) % 64);
  header += "\n";
  if (header.length > 0xffff) throw new Error("npy: header too long");
  const head = Buffer.alloc(10 + header.length);
  head.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0]);
  head.writeUInt16LE(header.length, 8);
  head.write(header, 10, "latin1");
  const body = Buffer.from(arr.data.buffer, arr.data.byteOffset, arr.data.byteLength);
  return Buffer.concat([head, body]);
}

interface ZipEntry {
  name: string;
  method: number;
  /** CRC-32 of the uncompressed member. */
  crc: number;
  compressedSize: number;
  size: number;
  localHeaderOffset: number;
}

async function readAt(fh: FileHandle, pos: number, len: number): Promise<Buffer> {
  const buf = Buffer.alloc(len);
  let done = 0;
  while (done < len) {
    const { bytesRead } = await fh.read(buf, done, len - done, pos + done);
    if (bytesRead === 0) throw new Error(`npz: unexpected end of file at ${pos + done}`);
    done += bytesRead;
  }
  return buf;
}

function u64(buf: Buffer, off: number): number {
  const v = buf.readBigUInt64LE(off);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error("npz: size beyond 2^53");
  return Number(v);
}

async function centralDirectory(fh: FileHandle, path: string): Promise<ZipEntry[]> {
  const { size } = await fh.stat();
  const tailLen = Math.min(size, 65535 + 22);
  const tail = await readAt(fh, size - tailLen, tailLen);
  let eocd = -1;
  for (let i = tailLen - 22; i >= 0; i--) {
    if (tail.readUInt32LE(i) === 0x06054b50) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw new Error(`npz: ${path} is not a zip file (no end of central directory)`);
  let entries = tail.readUInt16LE(eocd + 10);
  let cdSize = tail.readUInt32LE(eocd + 12);
  let cdOffset = tail.readUInt32LE(eocd + 16);
  if (entries === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    const locPos = size - tailLen + eocd - 20;
    const loc = await readAt(fh, locPos, 20);
    if (loc.readUInt32LE(0) !== 0x07064b50) throw new Error("npz: zip64 locator missing");
    const recPos = u64(loc, 8);
    const rec = await readAt(fh, recPos, 56);
    if (rec.readUInt32LE(0) !== 0x06064b50) throw new Error("npz: zip64 end record missing");
    entries = u64(rec, 32);
    cdSize = u64(rec, 40);
    cdOffset = u64(rec, 48);
  }
  const cd = await readAt(fh, cdOffset, cdSize);
  const out: ZipEntry[] = [];
  let p = 0;
  for (let e = 0; e < entries; e++) {
    if (cd.readUInt32LE(p) !== 0x02014b50) throw new Error("npz: corrupt central directory");
    const method = cd.readUInt16LE(p + 10);
    const crc = cd.readUInt32LE(p + 16);
    let compressedSize = cd.readUInt32LE(p + 20);
    let sz = cd.readUInt32LE(p + 24);
    const nameLen = cd.readUInt16LE(p + 28);
    const extraLen = cd.readUInt16LE(p + 30);
    const commentLen = cd.readUInt16LE(p + 32);
    let localHeaderOffset = cd.readUInt32LE(p + 42);
    const name = cd.toString("utf8", p + 46, p + 46 + nameLen);
    // zip64 extended information: only the fields that overflowed, in this order.
    let x = p + 46 + nameLen;
    const xEnd = x + extraLen;
    while (x + 4 <= xEnd) {
      const id = cd.readUInt16LE(x);
      const len = cd.readUInt16LE(x + 2);
      if (id === 0x0001) {
        let q = x + 4;
        if (sz === 0xffffffff) {
          sz = u64(cd, q);
          q += 8;
        }
        if (compressedSize === 0xffffffff) {
          compressedSize = u64(cd, q);
          q += 8;
        }
        if (localHeaderOffset === 0xffffffff) localHeaderOffset = u64(cd, q);
      }
      x += 4 + len;
    }
    out.push({ name, method, crc, compressedSize, size: sz, localHeaderOffset });
    p += 46 + nameLen + extraLen + commentLen;
  }
  return out;
}

async function dataOffset(fh: FileHandle, e: ZipEntry): Promise<number> {
  const lh = await readAt(fh, e.localHeaderOffset, 30);
  if (lh.readUInt32LE(0) !== 0x04034b50) throw new Error(`npz: bad local header for ${e.name}`);
  return e.localHeaderOffset + 30 + lh.readUInt16LE(26) + lh.readUInt16LE(28);
}

function memberName(key: string): string {
  return key.endsWith(".npy") ? key : `${key}.npy`;
}

/** Names of the arrays in an .npz (without the `.npy` suffix). */
export async function listNpz(path: string): Promise<string[]> {
  const fh = await open(path, "r");
  try {
    return (await centralDirectory(fh, path)).map((e) => e.name.replace(/\.npy$/, ""));
  } finally {
    await fh.close();
  }
}

async function* memberStream(path: string, e: ZipEntry, start: number): AsyncGenerator<Buffer> {
  if (e.method !== 0 && e.method !== 8) throw new Error(`npz: ${e.name}: unsupported zip method ${e.method}`);
  if (e.compressedSize === 0) return;
  const raw = createReadStream(path, { start, end: start + e.compressedSize - 1, highWaterMark: 1 << 20 });
  const stream = e.method === 8 ? raw.pipe(createInflateRaw()) : raw;
  for await (const chunk of stream) yield chunk as Buffer;
}

/**
 * Verify an .npz end to end: zip structure (incl. zip64), every member inside the file, and the CRC-32 of every member's uncompressed bytes. Throws naming the member and the problem
 * (truncated or corrupt files); returns the member count.
 */
export async function verifyNpz(path: string): Promise<number> {
  const fh = await open(path, "r");
  try {
    const entries = await centralDirectory(fh, path);
    const { size } = await fh.stat();
    for (const e of entries) {
      const start = await dataOffset(fh, e);
      if (start + e.compressedSize > size)
        throw new Error(`npz: ${path}: ${e.name}: data runs past the end of the file`);
      let c = 0;
      let n = 0;
      for await (const chunk of memberStream(path, e, start)) {
        c = crc32(chunk, c);
        n += chunk.length;
      }
      if (n !== e.size) throw new Error(`npz: ${path}: ${e.name}: ${n} bytes, central directory says ${e.size}`);
      if (c >>> 0 !== e.crc >>> 0) throw new Error(`npz: ${path}: ${e.name}: CRC-32 mismatch (corrupt data)`);
    }
    return entries.length;
  } finally {
    await fh.close();
  }
}

/**
 * Read arrays from an .npz. `names` selects members (default: all); a requested member that is missing
 * throws, naming the members that exist.
 */
export async function readNpz(path: string, names?: string[]): Promise<Record<string, NdArray>> {
  const fh = await open(path, "r");
  try {
    const entries = await centralDirectory(fh, path);
    const wanted = names ?? entries.map((e) => e.name.replace(/\.npy$/, ""));
    const out: Record<string, NdArray> = {};
    for (const key of wanted) {
      const e = entries.find((x) => x.name === memberName(key));
      if (!e) {
        throw new Error(`npz: ${path} has no array "${key}" (has: ${entries.map((x) => x.name).join(", ")})`);
      }
      const start = await dataOffset(fh, e);
      let buf: Buffer;
      if (e.method === 0) buf = await readAt(fh, start, e.compressedSize);
      else {
        const parts: Buffer[] = [];
        for await (const c of memberStream(path, e, start)) parts.push(c);
        buf = Buffer.concat(parts);
      }
      out[key] = decodeNpy(buf);
    }
    return out;
  } finally {
    await fh.close();
  }
}

async function findMember(path: string, name: string): Promise<{ entry: ZipEntry; start: number }> {
  const fh = await open(path, "r");
  try {
    const entries = await centralDirectory(fh, path);
    const entry = entries.find((x) => x.name === memberName(name));
    if (!entry) throw new Error(`npz: ${path} has no array "${name}" (has: ${entries.map((x) => x.name).join(", ")})`);
    return { entry, start: await dataOffset(fh, entry) };
  } finally {
    await fh.close();
  }
}

/** The .npy header (dtype, shape) of one npz member, reading only its first bytes. */
export async function npzArrayHeader(path: string, name: string): Promise<NpyHeader> {
  const { entry, start } = await findMember(path, name);
  let pending: Buffer = Buffer.alloc(0);
  for await (const chunk of memberStream(path, entry, start)) {
    pending = Buffer.concat([pending, chunk]);
    try {
      return parseNpyHeader(pending);
    } catch (err) {
      if (!/truncated/.test(String(err)) || pending.byteLength > 1 << 20) throw err;
    }
  }
  throw new Error(`npz: ${path}:${name}: truncated header`);
}

/**
 * Stream the rows (first axis) of one array of an .npz in batches of `batchRows`, holding at most one batch
 * (plus one read chunk) in memory. Yields arrays of shape [rows, ...shape.slice(1)].
 */
export async function* iterateNpzRows(path: string, name: string, batchRows: number): AsyncGenerator<NdArray> {
  const { entry: e, start } = await findMember(path, name);
  let header: NpyHeader | undefined;
  let pending: Buffer = Buffer.alloc(0);
  // Chunks not yet merged into `pending` (merging only when a whole batch is there keeps copying O(size)).
  let queued: Buffer[] = [];
  let queuedBytes = 0;
  let rowBytes = 0;
  let rowsLeft = 0;
  let rowShape: number[] = [];
  for await (const chunk of memberStream(path, e, start)) {
    queued.push(chunk);
    queuedBytes += chunk.byteLength;
    if (header && pending.byteLength + queuedBytes < batchRows * rowBytes) continue;
    pending = Buffer.concat([pending, ...queued]);
    queued = [];
    queuedBytes = 0;
    if (!header) {
      try {
        header = parseNpyHeader(pending);
      } catch (err) {
        if (pending.byteLength < 1 << 16 && /truncated/.test(String(err))) continue;
        throw err;
      }
      if (header.shape.length === 0) throw new Error(`npz: ${name} is a scalar`);
      rowShape = header.shape.slice(1);
      rowBytes = rowShape.reduce((a, b) => a * b, 1) * header.itemBytes;
      rowsLeft = header.shape[0];
      pending = pending.subarray(header.dataOffset);
    }
    const batchBytes = batchRows * rowBytes;
    while (pending.byteLength >= batchBytes && rowsLeft >= batchRows) {
      yield {
        dtype: header.dtype,
        shape: [batchRows, ...rowShape],
        data: makeTyped(header.dtype, pending.subarray(0, batchBytes)),
      };
      pending = pending.subarray(batchBytes);
      rowsLeft -= batchRows;
    }
  }
  if (queued.length > 0) pending = Buffer.concat([pending, ...queued]);
  if (!header) throw new Error(`npz: ${name}: empty member`);
  if (rowsLeft > 0) {
    if (pending.byteLength < rowsLeft * rowBytes) throw new Error(`npz: ${name}: truncated data`);
    yield {
      dtype: header.dtype,
      shape: [rowsLeft, ...rowShape],
      data: makeTyped(header.dtype, pending.subarray(0, rowsLeft * rowBytes)),
    };
  }
}

/** Write arrays as an uncompressed .npz (like np.savez). Limited to 4 GiB (no zip64 writing). */
export async function writeNpz(
  path: string,
  arrays: Record<string, { shape: number[]; data: NpyData; dtype?: NpyDtype }>,
): Promise<void> {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const [key, arr] of Object.entries(arrays)) {
    const name = Buffer.from(memberName(key), "utf8");
    const body = encodeNpy(arr);
    if (offset + body.byteLength > 0xfffffffe) throw new Error("npz: writer does not support files over 4 GiB");
    const crc = crc32(body);
    const lh = Buffer.alloc(30);
    lh.writeUInt32LE(0x04034b50, 0);
    lh.writeUInt16LE(20, 4); // version needed
    lh.writeUInt16LE(0, 6); // flags
    lh.writeUInt16LE(0, 8); // stored
    lh.writeUInt16LE(0, 10); // time
    lh.writeUInt16LE(0x21, 12); // date 1980-01-01
    lh.writeUInt32LE(crc, 14);
    lh.writeUInt32LE(body.byteLength, 18);
    lh.writeUInt32LE(body.byteLength, 22);
    lh.writeUInt16LE(name.byteLength, 26);
    lh.writeUInt16LE(0, 28);
    const ch = Buffer.alloc(46);
    ch.writeUInt32LE(0x02014b50, 0);
    ch.writeUInt16LE(20, 4); // version made by
    ch.writeUInt16LE(20, 6);
    ch.writeUInt16LE(0, 8);
    ch.writeUInt16LE(0, 10);
    ch.writeUInt16LE(0, 12);
    ch.writeUInt16LE(0x21, 14);
    ch.writeUInt32LE(crc, 16);
    ch.writeUInt32LE(body.byteLength, 20);
    ch.writeUInt32LE(body.byteLength, 24);
    ch.writeUInt16LE(name.byteLength, 28);
    ch.writeUInt32LE(offset, 42);
    locals.push(lh, name, body);
    centrals.push(ch, name);
    offset += 30 + name.byteLength + body.byteLength;
  }
  const cd = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  const n = Object.keys(arrays).length;
  end.writeUInt16LE(n, 8);
  end.writeUInt16LE(n, 10);
  end.writeUInt32LE(cd.byteLength, 12);
  end.writeUInt32LE(offset, 16);
  const fh = await open(path, "w");
  try {
    for (const b of [...locals, cd, end]) await fh.write(b);
  } finally {
    await fh.close();
  }
}

/** Convert any numeric array to float64 (BigInt64 via Number). */
export function toFloat64(a: NdArray): Float64Array {
  if (a.data instanceof Float64Array) return a.data;
  if (a.data instanceof BigInt64Array) return Float64Array.from(a.data, (v) => Number(v));
  return Float64Array.from(a.data);
}
