// MergeVQ docs/model.md §2.3 "Random keep-count during training" (`cand_distribution`, upstream `parse_cand` /
// the deterministic 100-batch cycle). Pure arithmetic, no tensors: the candidate keep-counts K_i, their
// weights, the 5-decimal cumulative table and the per-micro-batch choice.
import { mergeSchedule } from "./tome.ts";

export type CandidateKind = "gaussian" | "exponential";

export interface Candidate {
  /** Kept tokens K (a perfect square). */
  K: number;
  /** √K. */
  side: number;
  /** L − K. */
  mergeNum: number;
  /** r̄ chosen by the schedule search. */
  rBar: number;
  /** Per-block merge counts r_ℓ (remainder on layer 0). */
  r: number[];
  /** Normalised selection weight. */
  weight: number;
  /** Cumulative weight rounded to 5 decimals (the table the cycle looks up). */
  cumulative: number;
}

/** Parse `"gaussian-6"` / `"exponential-5"` (n defaults to 5 upstream when omitted). */
export function parseCandDistribution(spec: string): { kind: CandidateKind; n: number } {
  const m = /^(gaussian|exponential)(?:-(\d+))?$/.exec(spec);
  if (!m) throw new Error(`cand_distribution "${spec}": expected "gaussian-<n>" or "exponential-<n>"`);
  const n = m[2] === undefined ? 5 : Number(m[2]);
  if (n < 1) throw new Error(`cand_distribution "${spec}": n must be ≥ 1`);
  return { kind: m[1] as CandidateKind, n };
}

const round5 = (x: number): number => Math.round(x * 1e5) / 1e5;

/**
 * Candidate table for a token grid of L tokens merged nominally by `mergeNum` over `nBlocks` blocks.
 * gaussian: K_i = (s0+i)², i = −1…n−2, weight_j = exp(−(j−1)²/(2·0.5²)) + 0.05.
 * exponential: K_i = (s0+i)², i = 0…n−1, weight_j = 2·e^{−2j} + 0.1.
 */
export function candidateTable(L: number, mergeNum: number, nBlocks: number, spec: string): Candidate[] {
  const { kind, n } = parseCandDistribution(spec);
  const s0 = Math.sqrt(L - mergeNum);
  if (!Number.isInteger(s0)) throw new Error(`L − merge_num = ${L - mergeNum} is not a perfect square`);
  const offset = kind === "gaussian" ? -1 : 0;
  const raw: number[] = [];
  for (let j = 0; j < n; j++) {
    raw.push(kind === "gaussian" ? Math.exp(-((j - 1) ** 2) / (2 * 0.5 ** 2)) + 0.05 : 2 * Math.exp(-2 * j) + 0.1);
  }
  const total = raw.reduce((a, b) => a + b, 0);
  let acc = 0;
  return raw.map((w, j) => {
    const side = s0 + offset + j;
    const K = side * side;
    if (side < 1 || K > L) throw new Error(`candidate K = ${K} outside (0, L = ${L}]`);
    const sched = mergeSchedule(L - K, nBlocks);
    acc += w / total;
    return { K, side, mergeNum: L - K, rBar: sched.rBar, r: sched.r, weight: w / total, cumulative: round5(acc) };
  });
}

/**
 * Deterministic choice for the micro-batch with in-epoch index b: u = (b mod 100)·0.01 (float64), first
 * candidate whose cumulative ≥ u (bisect-left). All samples of the batch share K.
 */
export function candidateForBatch(cands: readonly Candidate[], b: number): Candidate {
  if (cands.length === 0) throw new Error("empty candidate table");
  const u = (((b % 100) + 100) % 100) * 0.01;
  for (const c of cands) if (c.cumulative >= u) return c;
  return cands[cands.length - 1];
}

/** How many of 100 consecutive micro-batches use each candidate (the frequency table of docs/model.md §2.3). */
export function cycleCounts(cands: readonly Candidate[]): Map<number, number> {
  const counts = new Map<number, number>(cands.map((c) => [c.K, 0]));
  for (let b = 0; b < 100; b++) {
    const K = candidateForBatch(cands, b).K;
    counts.set(K, (counts.get(K) ?? 0) + 1);
  }
  return counts;
}
