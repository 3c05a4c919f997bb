// Worker for test/integration/dist-ar-equivalence.test.ts: trains the tiny AR model with MergeAR on the codes of
// a frozen T0 tokenizer for AR_EQ_STEPS optimiser steps through the REAL Stage-II assembly (buildARTrainer:
// openImageSource on a local folder with the data-parallel split, ARDataSource keyed by the global sample index,
// joinProcessGroup as the CLI does) and writes what it trained on and what it ended with:
//   ddp   — WORLD_SIZE 2 (rendezvous env from the test), batch b per rank, gradients averaged over the ranks;
//   ref   — one process, batch 2b;
//   local — one process, batch b, reading rank 0's half (rank 0 of world 2) without any averaging: the negative
//           control.
// Model dropout is off (training config dropout {token 0, resid 0}: its masks are drawn per micro-batch tensor,
// so they depend on the rank split); label dropout (classDropout 0.3) and the per-sample K choice stay on.
//
// env: AR_EQ_OUT (dir), AR_EQ_MODE ddp|ref|local, AR_EQ_STEPS, AR_EQ_BATCH (b), AR_EQ_DATA (image folder),
//      AR_EQ_TOKENIZER (tokenizer-train checkpoint), AR_EQ_LIMIT (images used), plus the rendezvous env for ddp.
// Output: <out>/<mode>-rank<r>.bin = the checkpoint tensors (model/, adamw/m/, adamw/v/) as float32 in
//         sorted-name order; <mode>-rank<r>.json = {names, sizes, losses (per step, this process's own
//         micro-batch), reduced (run summary: averaged over ranks), batches (per step: files, raw labels,
//         labels after dropout, mergeTokens, K, codes, dup)}; ref also writes ref-init.bin (weights before
//         training).
import { writeFileSync } from "node:fs";
import path from "node:path";
import { createLogger } from "../../../common/src/logger.ts";
import { selectBackend } from "../backend/select.ts";
import { rankFromEnv } from "../data/rank.ts";
import type { TensorEntry } from "../io/checkpoint.ts";
import { loadFrozenTokenizer } from "../tokenizer/frozen.ts";
import { parseARModelSpec, parseARTrainConfig } from "./arConfig.ts";
import { buildARTrainer } from "./arSetup.ts";
import { joinProcessGroup } from "./loop.ts";

const env = process.env;
const mode = env.AR_EQ_MODE ?? "ref";
const steps = Number(env.AR_EQ_STEPS ?? 3);
const b = Number(env.AR_EQ_BATCH ?? 4);
const out = env.AR_EQ_OUT as string;
const dist = rankFromEnv();
const rank = mode === "ddp" ? dist.rank : 0;
const worldSize = mode === "ddp" ? dist.worldSize : mode === "local" ? 2 : 1;
const batchSize = mode === "ref" ? 2 * b : b;
const tag = `${mode}-rank${rank}`;
const log = createLogger({ component: "ar-dist-eq", rank }, { level: (env.LOG_LEVEL as "info") ?? "warn" });

interface StepBatch {
  files: string[];
  labels: number[];
  dropped: number[];
  mergeTokens: number[];
  K: number[];
  indices: number[];
  dup: number[];
}

function dump(file: string, tensors: Map<string, TensorEntry>, prefix = ""): { names: string[]; sizes: number[] } {
  const names = [...tensors.keys()].filter((n) => n.startsWith(prefix)).sort();
  const parts = names.map((n) => Float32Array.from((tensors.get(n) as TensorEntry).data as ArrayLike<number>));
  const all = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) {
    all.set(p, o);
    o += p.length;
  }
  writeFileSync(path.join(out, file), Buffer.from(all.buffer));
  return { names, sizes: parts.map((p) => p.length) };
}

async function main(): Promise<void> {
  const backend = await selectBackend({ log });
  const frozen = await loadFrozenTokenizer(env.AR_EQ_TOKENIZER as string);
  const model = parseARModelSpec({ size: "tiny", numClasses: 4, classDropout: 0.3, mergeAR: { enabled: true } });
  const train = parseARTrainConfig({
    steps,
    batchSize,
    accum: 1,
    lr: 1e-3,
    warmupSteps: 0,
    seed: 5,
    logEvery: 1,
    checkpointInterval: 0,
    progressIntervalSeconds: 0,
    dropout: { token: 0, resid: 0 },
  });
  const built = await buildARTrainer({
    model,
    train,
    tokenizer: frozen,
    data: env.AR_EQ_DATA as string,
    dataLimit: Number(env.AR_EQ_LIMIT ?? 16),
    log,
    rank,
    worldSize,
    backend: backend.name,
  });
  const { trainer, data } = built;
  if (built.arConfig.tokenDropout !== 0 || built.arConfig.residDropout !== 0)
    throw new Error("training-config dropout override was not applied");

  // Instrumentation: record what each step read (the image source's files, the AR batch's per-sample draws).
  const batches: StepBatch[] = [];
  const images = data.opts.images;
  const nextImages = images.next.bind(images);
  let files: string[] = [];
  images.next = async (n) => {
    const r = await nextImages(n);
    files = r.files.map((f) => path.relative(env.AR_EQ_DATA as string, f)); // <class>/<file>
    return r;
  };
  const nextBatch = data.next.bind(data);
  data.next = async (n, micro) => {
    const sb = await nextBatch(n, micro);
    batches.push({
      files,
      labels: [...sb.labels],
      dropped: [...sb.batch.labels.dataSync()],
      mergeTokens: [...(sb.batch.mergeTokens?.dataSync() ?? [])],
      K: sb.K,
      indices: [...sb.batch.indices.dataSync()],
      dup: [...(sb.batch.dup?.dataSync() ?? [])],
    });
    return sb;
  };

  if (mode === "ref") dump("ref-init.bin", trainer.toCheckpoint().tensors, "model/");
  const pg =
    mode === "ddp"
      ? await joinProcessGroup(trainer, { arConfig: built.arConfig, train, b, worldSize }, log)
      : undefined;
  const losses: number[] = [];
  const summary = await trainer.run({ onStep: (_s, l) => void losses.push(l.loss) });
  await pg?.close();
  data.close();
  const layout = dump(`${tag}.bin`, trainer.toCheckpoint().tensors);
  writeFileSync(
    path.join(out, `${tag}.json`),
    JSON.stringify({ ...layout, losses, reduced: summary.losses, batches, backend: backend.name }),
  );
  process.stdout.write(`${JSON.stringify({ done: tag, losses, reduced: summary.losses.loss })}\n`);
}

main().then(
  () => process.exit(0),
  (e: Error) => {
    process.stderr.write(`ar dist-eq worker failed: ${e.stack ?? e.message}\n`);
    process.exit(1);
  },
);
