// /healthz (process alive, event loop responsive), /readyz (caches synced, or standing by for leadership)
// and /metrics (Prometheus text) on plain node:http servers. Health and metrics may share a port.
import http from "node:http";
import type { AddressInfo } from "node:net";
import type { Registry } from "prom-client";

export interface Probe {
  healthy: () => boolean;
  ready: () => boolean;
}

export interface HttpServers {
  healthPort: number;
  metricsPort: number;
  close(): Promise<void>;
}

function handler(probe: Probe | undefined, registry: Registry | undefined): http.RequestListener {
  return (req, res) => {
    const url = (req.url ?? "/").split("?")[0];
    if (probe && url === "/healthz") {
      const ok = probe.healthy();
      res.writeHead(ok ? 200 : 500, { "content-type": "text/plain" }).end(ok ? "ok" : "unhealthy");
      return;
    }
    if (probe && url === "/readyz") {
      const ok = probe.ready();
      res.writeHead(ok ? 200 : 503, { "content-type": "text/plain" }).end(ok ? "ok" : "not ready");
      return;
    }
    if (registry && url === "/metrics") {
      registry.metrics().then(
        (text) => res.writeHead(200, { "content-type": registry.contentType }).end(text),
        (err) => res.writeHead(500).end(String(err)),
      );
      return;
    }
    res.writeHead(404).end("not found");
  };
}

function listen(server: http.Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve((server.address() as AddressInfo).port));
  });
}

/** Start the servers; port 0 picks a free port (reported back). Same port → one server for both. */
export async function startHttp(opts: {
  healthPort: number;
  metricsPort: number;
  host?: string;
  probe: Probe;
  registry: Registry;
}): Promise<HttpServers> {
  const host = opts.host ?? "0.0.0.0";
  if (opts.healthPort === opts.metricsPort && opts.healthPort !== 0) {
    const s = http.createServer(handler(opts.probe, opts.registry));
    const port = await listen(s, opts.healthPort, host);
    return { healthPort: port, metricsPort: port, close: () => new Promise((r) => s.close(() => r())) };
  }
  const h = http.createServer(handler(opts.probe, undefined));
  const m = http.createServer(handler(undefined, opts.registry));
  const healthPort = await listen(h, opts.healthPort, host);
  const metricsPort = await listen(m, opts.metricsPort, host);
  return {
    healthPort,
    metricsPort,
    close: async () => {
      await Promise.all([new Promise<void>((r) => h.close(() => r())), new Promise<void>((r) => m.close(() => r()))]);
    },
  };
}
