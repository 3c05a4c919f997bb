// Shared helpers for the operator integration suites (test/integration/operator-*.test.ts): a namespace with
// the S3 Secret, run CRUD through the real API, phase waits, and the operator process.
import { GetObjectCommand, S3Client } from "@aws-sdk/client-s3";
import * as k8s from "@kubernetes/client-node";
import {
  eventually,
  loadKubeConfig,
  makeNamespace,
  type TestEnv,
  type TestNamespace,
  testEnv,
} from "../../../test/cluster/testenv.ts";
import { GROUP, KINDS, VERSION } from "../api/v1alpha1/index.ts";
import { LABEL, MANAGED_SELECTOR } from "../reconcile/labels.ts";
import type { RunKind } from "../reconcile/run.ts";
import { fakeTrainerScript, makeTokenizerTraining, type OperatorProcess, startOperator } from "./fixtures.ts";

// biome-ignore lint/suspicious/noExplicitAny: raw custom objects read in assertions
export type Obj = Record<string, any>;

export const BUCKET = "mergevq";

export class Harness {
  readonly env: TestEnv;
  readonly kc: k8s.KubeConfig;
  readonly core: k8s.CoreV1Api;
  readonly custom: k8s.CustomObjectsApi;
  readonly s3: S3Client;
  ns!: TestNamespace;
  operators: OperatorProcess[] = [];

  constructor() {
    this.env = testEnv();
    this.kc = loadKubeConfig();
    this.core = this.kc.makeApiClient(k8s.CoreV1Api);
    this.custom = this.kc.makeApiClient(k8s.CustomObjectsApi);
    this.s3 = new S3Client({
      endpoint: this.env.s3.endpoint,
      region: this.env.s3.region,
      forcePathStyle: true,
      credentials: { accessKeyId: this.env.s3.accessKeyId, secretAccessKey: this.env.s3.secretAccessKey },
    });
  }

  async setup(prefix: string): Promise<void> {
    this.ns = await makeNamespace(this.kc, prefix);
    await this.core.createNamespacedSecret({
      namespace: this.ns.name,
      body: {
        metadata: { name: "s3-creds" },
        stringData: { AWS_ACCESS_KEY_ID: this.env.s3.accessKeyId, AWS_SECRET_ACCESS_KEY: this.env.s3.secretAccessKey },
      },
    });
  }

  operatorEnv(extra: Record<string, string> = {}): Record<string, string> {
    return {
      KUBECONFIG: this.env.kubeconfigPath,
      WATCH_NAMESPACES: this.ns.name,
      LEADER_ELECTION: "true",
      LEADER_ELECTION_NAMESPACE: this.ns.name,
      LEASE_DURATION_SECONDS: "4",
      RENEW_DEADLINE_SECONDS: "3",
      RETRY_PERIOD_SECONDS: "1",
      S3_ENDPOINT: this.env.s3.endpoint,
      BARRIER_IMAGE: "docker.io/library/node:20",
      ...extra,
    };
  }

  startOperator(extra: Record<string, string> = {}): OperatorProcess {
    const op = startOperator(this.operatorEnv(extra));
    this.operators.push(op);
    return op;
  }

  async teardown(): Promise<void> {
    for (const op of this.operators) {
      const code = await op.stop();
      const errors = op
        .logs()
        .split("\n")
        .filter((l) => /"level":"(error|fatal)"/.test(l));
      if (errors.length) process.stderr.write(`operator exit ${code}; error lines:\n${errors.slice(-10).join("\n")}\n`);
    }
    if (process.env.OPERATOR_LOG) {
      (await import("node:fs")).writeFileSync(
        process.env.OPERATOR_LOG,
        this.operators.map((o) => o.logs()).join("\n-----\n"),
      );
    }
    this.s3.destroy();
    await this.ns?.cleanup();
  }

  /** A fake-trainer TokenizerTraining in this namespace. */
  fakeTT(name: string, vars: Record<string, string> = {}, nodes = 2) {
    return makeTokenizerTraining(name)
      .namespace(this.ns.name)
      .nodes(nodes)
      .checkpointUri(`s3://${BUCKET}/${this.ns.name}/${name}`)
      .set("spec.dataset.uri", `s3://${BUCKET}/dataset`)
      .s3("s3-creds", this.env.s3.endpoint)
      .image("docker.io/library/node:20")
      .command(["node", "-e", fakeTrainerScript()])
      .env({ FAKE_STEPS: "4", FAKE_STEP_MS: "250", ...vars })
      .set("spec.rendezvous.timeoutSeconds", 60);
  }

  async create(kind: RunKind, raw: Record<string, unknown>): Promise<Obj> {
    return (await this.custom.createNamespacedCustomObject({
      group: GROUP,
      version: VERSION,
      namespace: this.ns.name,
      plural: KINDS[kind].plural,
      body: raw,
    })) as Obj;
  }

  async get(kind: RunKind, name: string): Promise<Obj | undefined> {
    try {
      return (await this.custom.getNamespacedCustomObject({
        group: GROUP,
        version: VERSION,
        namespace: this.ns.name,
        plural: KINDS[kind].plural,
        name,
      })) as Obj;
    } catch (err) {
      if ((err as { code?: number }).code === 404) return undefined;
      throw err;
    }
  }

  async patchSpec(kind: RunKind, name: string, patch: Obj): Promise<void> {
    await this.custom.patchNamespacedCustomObject(
      {
        group: GROUP,
        version: VERSION,
        namespace: this.ns.name,
        plural: KINDS[kind].plural,
        name,
        body: { spec: patch },
      },
      k8s.setHeaderOptions("Content-Type", k8s.PatchStrategy.MergePatch),
    );
  }

  async delete(kind: RunKind, name: string): Promise<void> {
    await this.custom.deleteNamespacedCustomObject({
      group: GROUP,
      version: VERSION,
      namespace: this.ns.name,
      plural: KINDS[kind].plural,
      name,
    });
  }

  async pods(run?: string): Promise<k8s.V1Pod[]> {
    const l = await this.core.listNamespacedPod({
      namespace: this.ns.name,
      labelSelector: run ? `${LABEL.run}=${run}` : MANAGED_SELECTOR,
    });
    return l.items;
  }

  /** Wait for a phase; throws early (with the status) when the run reaches a different terminal phase. */
  async waitPhase(kind: RunKind, name: string, phase: string, timeoutMs = 90_000): Promise<Obj> {
    let unexpected: string | undefined;
    const o = await eventually(
      async () => {
        const r = await this.get(kind, name);
        const p = r?.status?.phase;
        if (p !== phase && (p === "Succeeded" || p === "Failed")) unexpected = JSON.stringify(r?.status);
        return p === phase || unexpected ? r : undefined;
      },
      { timeoutMs, message: `${kind} ${name} phase ${phase}` },
    );
    if (unexpected) throw new Error(`${kind} ${name} ended ${o.status?.phase} instead of ${phase}: ${unexpected}`);
    return o;
  }

  async readS3Json(key: string): Promise<Obj | undefined> {
    try {
      const r = await this.s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
      return JSON.parse(await r.Body!.transformToString());
    } catch {
      return undefined;
    }
  }

  async events(name: string): Promise<k8s.CoreV1Event[]> {
    return (
      await this.core.listNamespacedEvent({ namespace: this.ns.name, fieldSelector: `involvedObject.name=${name}` })
    ).items;
  }
}

export const condition = (o: Obj, type: string): Obj | undefined =>
  (o.status?.conditions as Obj[] | undefined)?.find((c) => c.type === type);
export { eventually };
