// A KubeConfig whose API requests share keep-alive connections. client-node 1.x builds a new https.Agent for
// every request (KubeConfig.applySecurityAuthentication → createAgent), so every GET, PATCH and create opened
// a fresh TLS connection with a full client-certificate handshake: measured in the operator bench, the TLS
// work was the largest part of the operator's own CPU, and it costs the apiserver the same again. Here the
// agent is reused for as long as its TLS material (CA, client certificate and key, server name, verification)
// stays the same; new material (an exec plugin rotating a client certificate) gets a new agent, and the old
// one is closed a minute later. Watches go through applyToFetchOptions and keep their own long-lived connection.
// Proxy agents (cluster.proxyUrl) are left as client-node builds them.
import { createHash } from "node:crypto";
import * as http from "node:http";
import * as https from "node:https";
import { KubeConfig, type RequestContext } from "@kubernetes/client-node";

const OLD_AGENT_GRACE_MS = 60_000;

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

export class PooledKubeConfig extends KubeConfig {
  private pooled: { key: string; agent: http.Agent } | undefined;
  /** Connections the pooled agents opened (for tests and debugging). */
  connectionsOpened = 0;

  override async applySecurityAuthentication(context: RequestContext): Promise<void> {
    await super.applySecurityAuthentication(context);
    const fresh = context.getAgent();
    // Only plain agents are pooled (their options are the TLS material); proxy agents are other classes.
    const plain = fresh?.constructor === https.Agent || fresh?.constructor === http.Agent;
    if (!fresh || !plain) return;
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
    context.setAgent(this.pooled.agent);
  }

  /** Closes the pooled connections (process shutdown; tests). */
  closeConnections(): void {
    this.pooled?.agent.destroy();
    this.pooled = undefined;
  }
}
