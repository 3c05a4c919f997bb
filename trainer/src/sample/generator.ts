// The AR sampler behind a SamplingJob shard: an "ar-train" checkpoint (trainer/src/ar) generates full raster
// code grids (docs/model.md §5.4: CFG by batch doubling, temperature, top-k/top-p, one value for both sub-tokens since
// the CRD has single values), the frozen tokenizer decodes them (`decodeIndices`, no source matrix), and the
// images are clamped to [−1,1] and mapped to uint8 HWC with LlamaGen's `clamp(127.5·x + 128, 0, 255)` →
// uint8 (truncation), the mapping of upstream `sample.py`.
//
// MergeAR models additionally take a Merge-Instruction token per sample: we pass the candidate id of the
// tokenizer's NOMINAL K (derived.K; the candidate with the closest K when the nominal one is not a training
// candidate), i.e. samples are generated at the merge ratio the tokenizer was designed for. Eviction of
// duplicate tokens follows the generator's default (on for MergeAR).
import * as tf from "@tensorflow/tfjs";
import type { Logger } from "../../../common/src/logger.ts";
import { generate } from "../ar/generate.ts";
import { gptFromCheckpoint } from "../ar/gpt.ts";
import { loadCheckpoint } from "../io/checkpoint.ts";
import { loadFrozenTokenizer } from "../tokenizer/frozen.ts";
import type { MergeVQTokenizer } from "../tokenizer/mergevq.ts";
import type { SamplingConfig } from "./config.ts";
import type { ImageGenerator } from "./shard.ts";

/** Decode full-length index grids [B·L] with the tokenizer → uint8 HWC [B,H,W,3]. */
export function decodeToUint8(tokenizer: MergeVQTokenizer, indices: Int32Array, B: number, L: number): Uint8Array {
  const t = tf.tidy(() => {
    const img = tokenizer.decodeIndices(tf.tensor2d(indices, [B, L], "int32"));
    const x = tf.clipByValue(img, -1, 1);
    return tf.cast(tf.floor(tf.clipByValue(tf.add(tf.mul(x, 127.5), 128), 0, 255)), "int32");
  });
  const out = Uint8Array.from(t.dataSync());
  t.dispose();
  return out;
}

/** Candidate id of the tokenizer's nominal K (closest K when the nominal K is not a candidate). */
export function nominalCandidateId(candidates: readonly { K: number }[], K: number): number {
  let best = 0;
  for (let i = 1; i < candidates.length; i++) {
    if (Math.abs(candidates[i].K - K) < Math.abs(candidates[best].K - K)) best = i;
  }
  return best;
}

export async function openARGenerator(o: {
  modelUri: string;
  tokenizerUri: string;
  config: SamplingConfig;
  log: Logger;
}): Promise<ImageGenerator> {
  const { config: cfg, log } = o;
  const ckpt = await loadCheckpoint(o.modelUri);
  const gpt = gptFromCheckpoint(ckpt, o.modelUri);
  let frozen: Awaited<ReturnType<typeof loadFrozenTokenizer>>;
  try {
    frozen = await loadFrozenTokenizer(o.tokenizerUri);
  } catch (e) {
    gpt.dispose();
    throw e;
  }
  const tok = frozen.tokenizer;
  const ar = gpt.config;
  const d = tok.config.derived;
  const notes: string[] = [];
  const dispose = () => {
    gpt.dispose();
    tok.dispose();
  };
  if (ar.L !== d.L || ar.preBits + ar.postBits !== tok.config.zChannels) {
    dispose();
    throw new Error(
      `${o.modelUri}: AR model (L ${ar.L}, ${ar.preBits}+${ar.postBits} bits) does not fit the tokenizer ` +
        `${o.tokenizerUri} (L ${d.L}, ${tok.config.zChannels} bits)`,
    );
  }
  const trainedWith = (ckpt.meta.tokenizer as { uri?: string } | undefined)?.uri;
  if (trainedWith && trainedWith !== o.tokenizerUri) {
    const msg = `AR model was trained on tokenizer ${trainedWith}; decoding with ${o.tokenizerUri}`;
    log.warn({ trainedWith, decodingWith: o.tokenizerUri }, msg);
    notes.push(msg);
  }
  const step = typeof ckpt.meta.step === "number" ? ckpt.meta.step : undefined;
  const untrained = step === 0;
  if (untrained) notes.push(`AR checkpoint ${o.modelUri} is at step 0 (UNTRAINED weights): samples are noise`);
  let mergeToken: number | undefined;
  if (ar.mergeAR.enabled) {
    mergeToken = nominalCandidateId(d.candidates, d.K);
    log.info(
      { candidate: mergeToken, K: d.candidates[mergeToken]?.K },
      "MergeAR: sampling with the nominal-K merge token",
    );
  }
  log.info(
    {
      model: o.modelUri,
      arStep: step,
      size: ar.size,
      params: gpt.paramCount(),
      tokenizer: o.tokenizerUri,
      tokenizerStep: frozen.step,
      resolution: tok.config.resolution,
    },
    "AR sampler ready",
  );
  return {
    height: tok.config.resolution,
    width: tok.config.resolution,
    numClasses: ar.numClasses,
    notes,
    info: {
      arStep: step,
      untrained,
      arSize: ar.size,
      mergeAR: ar.mergeAR.enabled,
      mergeCandidate: mergeToken === undefined ? undefined : { id: mergeToken, K: d.candidates[mergeToken]?.K },
      tokenizerStep: frozen.step,
      tokenizerWeights: frozen.weights,
    },
    async generate(labels: number[], seed: number): Promise<Uint8Array> {
      const r = generate(gpt, {
        labels,
        mergeTokens: mergeToken === undefined ? undefined : labels.map(() => mergeToken as number),
        cfgScale: cfg.cfgScale,
        temperature: cfg.temperature,
        topK: cfg.topK > 0 ? cfg.topK : undefined,
        topP: cfg.topP < 1 ? cfg.topP : undefined,
        seed,
      });
      return decodeToUint8(tok, r.indices, r.B, r.L);
    },
    dispose,
  };
}
