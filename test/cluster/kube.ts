// Minimal raw Kubernetes REST client for the node agent: exact JSON in and out (no model (de)serialisation
// that would drop fields), strategic-merge/merge patches, and watch streams. Tests use
// @kubernetes/client-node; the agent only needs these few verbs.
import { readFileSync } from "node:fs";
import https from "node:https";
import { parse as parseYaml } from "yaml";

export class KubeError extends Error {
  constructor(
    readonly status: number,
    readonly body: string,
    what: string,
  ) {
    super(`${what}: HTTP ${status}: ${body.slice(0, 500)}`);
    this.name = "KubeError";
  }
}

export interface KubeAuth {
  server: string;
  ca?: Buffer | string;
  cert?: Buffer | string;
  key?: Buffer | string;
  token?: string;
}

export interface WatchEvent<T = KubeObject> {
  type: "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK" | "ERROR";
  object: T;
}

/** Loosely-typed Kubernetes object: the agent reads only the fields it needs. */
// biome-ignore lint/suspicious/noExplicitAny: raw API JSON; fields are read defensively where used.
export type KubeObject = Record<string, any>;

interface KubeconfigFile {
  "current-context"?: string;
  contexts?: { name: string; context: { cluster: string; user: string } }[];
  clusters?: {
    name: string;
    cluster: { server: string; "certificate-authority-data"?: string; "certificate-authority"?: string };
  }[];
  users?: {
    name: string;
    user: {
      "client-certificate-data"?: string;
      "client-key-data"?: string;
      "client-certificate"?: string;
      "client-key"?: string;
      token?: string;
    };
  }[];
}

/** Read server + credentials of the current context of a kubeconfig file. */
export function authFromKubeconfig(file: string): KubeAuth {
  const kc = parseYaml(readFileSync(file, "utf8")) as KubeconfigFile;
  const ctx = kc.contexts?.find((c) => c.name === kc["current-context"]) ?? kc.contexts?.[0];
  if (!ctx) throw new Error(`${file}: no context`);
  const cluster = kc.clusters?.find((c) => c.name === ctx.context.cluster)?.cluster;
  const user = kc.users?.find((u) => u.name === ctx.context.user)?.user ?? {};
  if (!cluster) throw new Error(`${file}: cluster ${ctx.context.cluster} not found`);
  const data = (b64?: string, p?: string) => (b64 ? Buffer.from(b64, "base64") : p ? readFileSync(p) : undefined);
  return {
    server: cluster.server,
    ca: data(cluster["certificate-authority-data"], cluster["certificate-authority"]),
    cert: data(user["client-certificate-data"], user["client-certificate"]),
    key: data(user["client-key-data"], user["client-key"]),
    token: user.token,
  };
}

export class Kube {
  private readonly agent: https.Agent;
  constructor(readonly auth: KubeAuth) {
    this.agent = new https.Agent({ keepAlive: true, maxSockets: 16, ca: auth.ca, cert: auth.cert, key: auth.key });
  }

  static fromKubeconfig(file: string): Kube {
    return new Kube(authFromKubeconfig(file));
  }

  private headers(extra: Record<string, string> = {}): Record<string, string> {
    const h: Record<string, string> = { Accept: "application/json", ...extra };
    if (this.auth.token) h.Authorization = `Bearer ${this.auth.token}`;
    return h;
  }

  /** One request; JSON body in, parsed JSON out. Throws KubeError on non-2xx. */
  request<T = KubeObject>(method: string, path: string, body?: unknown, contentType = "application/json"): Promise<T> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    return new Promise((resolve, reject) => {
      const req = https.request(
        `${this.auth.server}${path}`,
        {
          method,
          agent: this.agent,
          timeout: 30_000,
          headers: this.headers(
            payload ? { "Content-Type": contentType, "Content-Length": String(payload.length) } : {},
          ),
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () => {
            const text = Buffer.concat(chunks).toString("utf8");
            const status = res.statusCode ?? 0;
            if (status < 200 || status >= 300) return reject(new KubeError(status, text, `${method} ${path}`));
            try {
              resolve((text ? JSON.parse(text) : {}) as T);
            } catch (e) {
              reject(e);
            }
          });
          res.on("error", reject);
        },
      );
      req.on("timeout", () => req.destroy(new Error(`${method} ${path}: timeout`)));
      req.on("error", reject);
      if (payload) req.write(payload);
      req.end();
    });
  }

  get<T = KubeObject>(path: string): Promise<T> {
    return this.request<T>("GET", path);
  }

  /** GET that returns undefined on 404. */
  async tryGet<T = KubeObject>(path: string): Promise<T | undefined> {
    try {
      return await this.get<T>(path);
    } catch (e) {
      if (e instanceof KubeError && e.status === 404) return undefined;
      throw e;
    }
  }

  strategicPatch<T = KubeObject>(path: string, body: unknown): Promise<T> {
    return this.request<T>("PATCH", path, body, "application/strategic-merge-patch+json");
  }

  mergePatch<T = KubeObject>(path: string, body: unknown): Promise<T> {
    return this.request<T>("PATCH", path, body, "application/merge-patch+json");
  }

  /**
   * Stream a watch. Resolves when the server closes the stream (normal after timeoutSeconds) or `signal`
   * aborts; rejects on HTTP errors (410 Gone → KubeError status 410).
   */
  watch(path: string, onEvent: (ev: WatchEvent) => void, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      const req = https.request(`${this.auth.server}${path}`, {
        method: "GET",
        agent: this.agent,
        headers: this.headers(),
        signal,
      });
      req.on("response", (res) => {
        const status = res.statusCode ?? 0;
        if (status !== 200) {
          let text = "";
          res.on("data", (c) => {
            text += c;
          });
          res.on("end", () => reject(new KubeError(status, text, `WATCH ${path}`)));
          return;
        }
        let buf = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => {
          buf += chunk;
          let nl = buf.indexOf("\n");
          while (nl >= 0) {
            const line = buf.slice(0, nl).trim();
            buf = buf.slice(nl + 1);
            if (line) {
              const ev = JSON.parse(line) as WatchEvent;
              if (ev.type === "ERROR") {
                const code = Number(ev.object?.code ?? 500);
                req.destroy();
                reject(new KubeError(code, JSON.stringify(ev.object), `WATCH ${path}`));
                return;
              }
              onEvent(ev);
            }
            nl = buf.indexOf("\n");
          }
        });
        res.on("end", () => resolve());
        res.on("error", (e) => (signal?.aborted ? resolve() : reject(e)));
      });
      req.on("error", (e) => (signal?.aborted ? resolve() : reject(e)));
      req.end();
    });
  }

  close(): void {
    this.agent.destroy();
  }
}
