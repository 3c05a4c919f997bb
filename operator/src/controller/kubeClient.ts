// The operator's REST client for the apiserver: exactly the calls the operator makes, as plain JSON over one
// pool of keep-alive connections. Authentication stays client-node's (KubeConfig: in-cluster service account,
// kubeconfig files, client certificates, tokens, exec and auth-provider plugins, proxies); only the request
// layer is ours, for two reasons measured in the operator benches:
// - client-node 1.x builds a new https.Agent per request, so every call opened a fresh TLS connection with a
//   full client-certificate handshake (the largest part of the operator's CPU, and as much again on the
//   apiserver). Here an agent is reused for as long as its TLS material (CA, client certificate and key,
//   server name, verification) stays the same; new material (an exec plugin rotating a client certificate)
//   gets a new agent, and the old one is closed a minute later. Proxy agents are used as client-node builds them.
// - client-node's generated API layer (every API group and 1,441 model classes, with an object serializer that
//   walks every field of every pod it sends or receives) costs ~48 MiB of RSS at start; the operator does not
//   load it at all (controller/clientNodeSlim.ts).
// Method names and parameter objects follow client-node's API classes, so the same call sites read alike in the
// operator and in tests that use client-node's own clients. Objects come back as the apiserver sent them:
// timestamps are RFC 3339 strings, not Date objects.
import { createHash } from "node:crypto";
import * as http from "node:http";
import * as https from "node:https";
import type {
  CoreV1Event,
  KubernetesListObject,
  KubernetesObject,
  V1Lease,
  V1Pod,
  V1PodList,
  V1Secret,
  V1Service,
  V1ServiceList,
} from "@kubernetes/client-node";
import type { KubeConfig } from "@kubernetes/client-node/dist/config.js";

const OLD_AGENT_GRACE_MS = 60_000;
/** A request with no response within this long fails (a hung connection must not stall a worker for good). */
export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;

/** A non-2xx answer from the apiserver: `code` is the HTTP status, `body` the parsed Status (or the raw text). */
export class ApiException extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly body: unknown,
    readonly headers: http.IncomingHttpHeaders,
  ) {
    super(message);
    this.name = "ApiException";
  }
}

type Query = Record<string, string | number | boolean | undefined>;

/** The agent options that decide which connections may be shared. */
const TLS_KEYS = ["ca", "cert", "key", "pfx", "passphrase", "rejectUnauthorized", "servername"] as const;

function materialKey(options: Record<string, unknown>): string {
  const h = createHash("sha256");
  for (const k of TLS_KEYS) {
    const v = options[k];
    h.update(`${k}=`);
    if (v === undefined) h.update("-");
    else if (Buffer.isBuffer(v)) h.update(v);
    else h.update(typeof v === "string" ? v : JSON.stringify(v));
    h.update("\0");
  }
  return h.digest("hex");
}

function statusMessage(body: unknown, text: string): string {
  if (body && typeof body === "object") {
    const s = body as { reason?: unknown; message?: unknown };
    if (typeof s.message === "string") return typeof s.reason === "string" ? `${s.reason}: ${s.message}` : s.message;
  }
  return text.slice(0, 500);
}

/** One finished request, for metrics: verb, resource (e.g. "pods", "tokenizertrainings/status"), code (0: none). */
export type RequestObserver = (verb: string, resource: string, code: number, seconds: number) => void;

export interface KubeClientOptions {
  requestTimeoutMs?: number;
  onRequest?: RequestObserver;
}

/** The resource a request path names: its collection after the namespace (or group/version), plus a subresource. */
export function resourceOf(path: string): string {
  const p = path.split("?")[0].split("/").filter(Boolean);
  // /api/v1/... or /apis/<group>/<version>/...
  let i = p[0] === "api" ? 2 : 3;
  if (p[i] === "namespaces" && p.length > i + 2) i += 2;
  const sub = p[i + 2];
  return sub ? `${p[i]}/${sub}` : (p[i] ?? "");
}

export class KubeClient {
  private pooled: { key: string; agent: http.Agent } | undefined;
  private readonly timeoutMs: number;
  private readonly onRequest: RequestObserver | undefined;
  /** Connections the pooled agents opened (for tests and debugging). */
  connectionsOpened = 0;
  readonly core: CoreApi;
  readonly custom: CustomApi;
  readonly leases: LeaseApi;

  constructor(
    readonly kc: KubeConfig,
    opts: KubeClientOptions = {},
  ) {
    this.timeoutMs = opts.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    this.onRequest = opts.onRequest;
    this.core = coreApi(this);
    this.custom = customApi(this);
    this.leases = leaseApi(this);
  }

  /** One request; resolves with the parsed JSON body (undefined when empty), rejects with ApiException. */
  async request<T>(
    method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE",
    path: string,
    o: { query?: Query; body?: unknown; contentType?: string } = {},
  ): Promise<T> {
    const cluster = this.kc.getCurrentCluster();
    if (!cluster) throw new Error("kubeconfig has no current cluster");
    const url = new URL(cluster.server.replace(/\/+$/, "") + path);
    for (const [k, v] of Object.entries(o.query ?? {})) if (v !== undefined) url.searchParams.set(k, String(v));
    const payload = o.body === undefined ? undefined : Buffer.from(JSON.stringify(o.body));
    const opts: https.RequestOptions = {
      method,
      headers: {
        Accept: "application/json",
        ...(payload ? { "Content-Type": o.contentType ?? "application/json", "Content-Length": payload.length } : {}),
      },
    };
    await this.kc.applyToHTTPSOptions(opts);
    opts.agent = this.pool(opts.agent);
    const send = url.protocol === "http:" ? http.request : https.request;
    const started = performance.now();
    let code = 0;
    let observed = false;
    const observe = () => {
      if (observed) return;
      observed = true;
      this.onRequest?.(method, resourceOf(path), code, (performance.now() - started) / 1000);
    };
    return new Promise<T>((resolve, reject) => {
      const req = send(url, opts, (res) => {
        code = res.statusCode ?? 0;
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("error", (err) => {
          observe();
          reject(err);
        });
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          let body: unknown = text;
          try {
            body = text ? JSON.parse(text) : undefined;
          } catch {
            // not JSON: keep the text
          }
          observe();
          if (code >= 200 && code < 300) resolve(body as T);
          else
            reject(
              new ApiException(
                code,
                `${method} ${url.pathname}: HTTP ${code} ${statusMessage(body, text)}`,
                body,
                res.headers,
              ),
            );
        });
      });
      req.setTimeout(this.timeoutMs, () =>
        req.destroy(new Error(`${method} ${url.pathname}: no response within ${this.timeoutMs} ms`)),
      );
      req.on("error", (err) => {
        observe();
        reject(err);
      });
      req.end(payload);
    });
  }

  /** Swaps the fresh plain agent client-node made for the pooled one with the same TLS material. */
  private pool(fresh: http.Agent | boolean | undefined): http.Agent | undefined {
    if (!fresh || typeof fresh === "boolean") return undefined;
    const plain = fresh.constructor === https.Agent || fresh.constructor === http.Agent;
    if (!plain) return fresh; // a proxy agent: used as built
    const options = (fresh as unknown as { options: Record<string, unknown> }).options;
    const key = `${fresh.constructor === https.Agent ? "https" : "http"}:${materialKey(options)}`;
    if (this.pooled?.key !== key) {
      const old = this.pooled?.agent;
      const Agent = fresh.constructor === https.Agent ? https.Agent : http.Agent;
      const agent = new Agent({ ...options, keepAlive: true });
      const create = agent.createConnection.bind(agent) as (...a: unknown[]) => unknown;
      (agent as unknown as { createConnection: (...a: unknown[]) => unknown }).createConnection = (...a) => {
        this.connectionsOpened++;
        return create(...a);
      };
      this.pooled = { key, agent };
      // Requests still running on the old agent get a minute to finish; then its sockets are closed.
      if (old) setTimeout(() => old.destroy(), OLD_AGENT_GRACE_MS).unref();
    }
    fresh.destroy();
    return this.pooled.agent;
  }

  /** Closes the pooled connections (process shutdown; tests). */
  close(): void {
    this.pooled?.agent.destroy();
    this.pooled = undefined;
  }
}

// ───────────────────────────── the calls the operator makes ─────────────────────────────

interface ListParams {
  labelSelector?: string;
  limit?: number;
  _continue?: string;
}

function listQuery(p: ListParams): Query {
  return { labelSelector: p.labelSelector, limit: p.limit, continue: p._continue };
}

const enc = encodeURIComponent;

export interface CoreApi {
  createNamespacedPod(p: { namespace: string; body: V1Pod; fieldManager?: string }): Promise<V1Pod>;
  deleteNamespacedPod(p: { namespace: string; name: string; propagationPolicy?: string }): Promise<unknown>;
  createNamespacedService(p: { namespace: string; body: V1Service; fieldManager?: string }): Promise<V1Service>;
  deleteNamespacedService(p: { namespace: string; name: string }): Promise<unknown>;
  readNamespacedSecret(p: { namespace: string; name: string }): Promise<V1Secret>;
  createNamespacedEvent(p: { namespace: string; body: CoreV1Event }): Promise<CoreV1Event>;
  listNamespacedPod(p: ListParams & { namespace: string }): Promise<V1PodList>;
  listPodForAllNamespaces(p: ListParams): Promise<V1PodList>;
  listNamespacedService(p: ListParams & { namespace: string }): Promise<V1ServiceList>;
  listServiceForAllNamespaces(p: ListParams): Promise<V1ServiceList>;
}

function coreApi(c: KubeClient): CoreApi {
  const ns = (namespace: string, what: string, name?: string) =>
    `/api/v1/namespaces/${enc(namespace)}/${what}${name === undefined ? "" : `/${enc(name)}`}`;
  return {
    createNamespacedPod: (p) =>
      c.request("POST", ns(p.namespace, "pods"), { body: p.body, query: { fieldManager: p.fieldManager } }),
    deleteNamespacedPod: (p) =>
      c.request("DELETE", ns(p.namespace, "pods", p.name), { query: { propagationPolicy: p.propagationPolicy } }),
    createNamespacedService: (p) =>
      c.request("POST", ns(p.namespace, "services"), { body: p.body, query: { fieldManager: p.fieldManager } }),
    deleteNamespacedService: (p) => c.request("DELETE", ns(p.namespace, "services", p.name)),
    readNamespacedSecret: (p) => c.request("GET", ns(p.namespace, "secrets", p.name)),
    createNamespacedEvent: (p) => c.request("POST", ns(p.namespace, "events"), { body: p.body }),
    listNamespacedPod: (p) => c.request("GET", ns(p.namespace, "pods"), { query: listQuery(p) }),
    listPodForAllNamespaces: (p) => c.request("GET", "/api/v1/pods", { query: listQuery(p) }),
    listNamespacedService: (p) => c.request("GET", ns(p.namespace, "services"), { query: listQuery(p) }),
    listServiceForAllNamespaces: (p) => c.request("GET", "/api/v1/services", { query: listQuery(p) }),
  };
}

interface CustomRef {
  group: string;
  version: string;
  plural: string;
}

export interface CustomApi {
  createNamespacedCustomObject(
    p: CustomRef & { namespace: string; body: unknown; fieldManager?: string },
  ): Promise<KubernetesObject>;
  getNamespacedCustomObject(p: CustomRef & { namespace: string; name: string }): Promise<Record<string, unknown>>;
  /** A JSON merge patch (RFC 7386) of the status subresource. */
  patchNamespacedCustomObjectStatus(
    p: CustomRef & { namespace: string; name: string; body: unknown; fieldManager?: string },
  ): Promise<Record<string, unknown>>;
  deleteNamespacedCustomObject(
    p: CustomRef & { namespace: string; name: string; propagationPolicy?: string },
  ): Promise<unknown>;
  listNamespacedCustomObject(
    p: CustomRef & ListParams & { namespace: string },
  ): Promise<KubernetesListObject<KubernetesObject>>;
  listClusterCustomObject(p: CustomRef & ListParams): Promise<KubernetesListObject<KubernetesObject>>;
}

function customApi(c: KubeClient): CustomApi {
  const path = (r: CustomRef, namespace?: string, name?: string) =>
    `/apis/${enc(r.group)}/${enc(r.version)}${namespace === undefined ? "" : `/namespaces/${enc(namespace)}`}/${enc(r.plural)}${name === undefined ? "" : `/${enc(name)}`}`;
  return {
    createNamespacedCustomObject: (p) =>
      c.request("POST", path(p, p.namespace), { body: p.body, query: { fieldManager: p.fieldManager } }),
    getNamespacedCustomObject: (p) => c.request("GET", path(p, p.namespace, p.name)),
    patchNamespacedCustomObjectStatus: (p) =>
      c.request("PATCH", `${path(p, p.namespace, p.name)}/status`, {
        body: p.body,
        query: { fieldManager: p.fieldManager },
        contentType: "application/merge-patch+json",
      }),
    deleteNamespacedCustomObject: (p) =>
      c.request("DELETE", path(p, p.namespace, p.name), { query: { propagationPolicy: p.propagationPolicy } }),
    listNamespacedCustomObject: (p) => c.request("GET", path(p, p.namespace), { query: listQuery(p) }),
    listClusterCustomObject: (p) => c.request("GET", path(p), { query: listQuery(p) }),
  };
}

export interface LeaseApi {
  readNamespacedLease(p: { namespace: string; name: string }): Promise<V1Lease>;
  createNamespacedLease(p: { namespace: string; body: V1Lease }): Promise<V1Lease>;
  replaceNamespacedLease(p: { namespace: string; name: string; body: V1Lease }): Promise<V1Lease>;
}

function leaseApi(c: KubeClient): LeaseApi {
  const path = (namespace: string, name?: string) =>
    `/apis/coordination.k8s.io/v1/namespaces/${enc(namespace)}/leases${name === undefined ? "" : `/${enc(name)}`}`;
  return {
    readNamespacedLease: (p) => c.request("GET", path(p.namespace, p.name)),
    createNamespacedLease: (p) => c.request("POST", path(p.namespace), { body: p.body }),
    replaceNamespacedLease: (p) => c.request("PUT", path(p.namespace, p.name), { body: p.body }),
  };
}
