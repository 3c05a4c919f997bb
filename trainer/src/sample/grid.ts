// Sample grid PNG of a SamplingJob: up to `max` images picked at evenly spaced global indices (so a
// class-ordered sample set shows many classes), `columns` per row, black padding in an incomplete last row.
import sharp from "sharp";

/** Evenly spaced picks ⌊k·total/n⌋, k < n = min(total, max): distinct and increasing. */
export function gridPicks(total: number, max = 64): number[] {
  const n = Math.max(0, Math.min(total, max));
  return Array.from({ length: n }, (_, k) => Math.floor((k * total) / n));
}

export interface GridLayout {
  columns: number;
  rows: number;
  width: number;
  height: number;
}

export function gridLayout(n: number, height: number, width: number, maxColumns = 8): GridLayout {
  const columns = Math.max(1, Math.min(maxColumns, n));
  const rows = Math.max(1, Math.ceil(n / columns));
  return { columns, rows, width: columns * width, height: rows * height };
}

/** Tile `images` (uint8 HWC, each height×width×3) into a PNG. */
export async function sampleGridPng(
  images: Uint8Array[],
  height: number,
  width: number,
  maxColumns = 8,
): Promise<{ png: Buffer; layout: GridLayout }> {
  if (images.length === 0) throw new Error("sample grid: no images");
  const layout = gridLayout(images.length, height, width, maxColumns);
  const px = new Uint8Array(layout.width * layout.height * 3);
  images.forEach((img, i) => {
    if (img.length !== height * width * 3) throw new Error(`sample grid: image ${i} is not ${height}×${width}×3`);
    const r = Math.floor(i / layout.columns);
    const c = i % layout.columns;
    for (let y = 0; y < height; y++) {
      const src = y * width * 3;
      const dst = ((r * height + y) * layout.width + c * width) * 3;
      px.set(img.subarray(src, src + width * 3), dst);
    }
  });
  const png = await sharp(px, { raw: { width: layout.width, height: layout.height, channels: 3 } })
    .png()
    .toBuffer();
  return { png, layout };
}
