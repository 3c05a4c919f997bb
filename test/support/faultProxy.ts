// Fault-injecting HTTP proxy for S3 tests: sits in front of a real MinIO and, for a seeded share of
// requests, answers 503 SlowDown / 500 InternalError, resets the connection before forwarding, or (GET
// only) forwards but cuts the response body half-way by destroying the socket. The Host header is passed
// through unchanged, so SigV4 signatures made for the proxy's address verify at MinIO.
//
// Faults that happen BEFORE forwarding never reach MinIO, so retried non-idempotent calls (e.g.
// CompleteMultipartUpload) stay correct; body cuts only hit GETs (their retry is a Range resume).
import http from "node:http";
import type { AddressInfo } from "node:net";
import { mulberry32 } from "../../trainer/src/data/random.ts";

export interface FaultRates {
  /** Share of requests answered with a 5xx (half 503 SlowDown, half 500 InternalError). */
  error5xx: number;
  /** Share of requests whose connection is reset before anything is forwarded. */
  reset: number;
  /** Share of GET responses (bodies ≥ cutMinBytes) cut half-way through the body. */
  cutBody: number;
}

export interface FaultProxyOptions {
  /** Upstream, e.g. http://127.0.0.1:9000. */
  target: string;
  rates: FaultRates;
  seed?: number;
  cutMinBytes?: number;
}

export interface FaultStats {
  requests: number;
  injected5xx: number;
  resets: number;
  cutBodies: number;
}

export interface FaultProxy {
  /** http://127.0.0.1:<port> */
  url: string;
  stats: FaultStats;
  /** Switch injection on/off (forwarding continues). */
  enabled: boolean;
  close(): Promise<void>;
}

const s3Error = (code: string, msg: string) =>
  `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${msg}</Message><RequestId>fault-proxy</RequestId></Error>`;

export async function startFaultProxy(opts: FaultProxyOptions): Promise<FaultProxy> {
  const target = new URL(opts.target);
  const rnd = mulberry32(opts.seed ?? 1);
  const stats: FaultStats = { requests: 0, injected5xx: 0, resets: 0, cutBodies: 0 };
  const cutMin = opts.cutMinBytes ?? 4096;
  const proxy: FaultProxy = { url: "", stats, enabled: true, close: async () => {} };

  const server = http.createServer((req, res) => {
    stats.requests++;
    const r = rnd();
    const { error5xx, reset, cutBody } = opts.rates;
    if (proxy.enabled && r < error5xx) {
      stats.injected5xx++;
      req.resume();
      const slow = rnd() < 0.5;
      const body = slow
        ? s3Error("SlowDown", "Please reduce your request rate.")
        : s3Error("InternalError", "Injected fault.");
      req.on("end", () => {
        res.writeHead(slow ? 503 : 500, {
          "content-type": "application/xml",
          "content-length": Buffer.byteLength(body),
        });
        res.end(body);
      });
      return;
    }
    if (proxy.enabled && r < error5xx + reset) {
      stats.resets++;
      req.socket.destroy();
      return;
    }
    const cut = proxy.enabled && req.method === "GET" && rnd() < cutBody;
    const up = http.request(
      { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers },
      (ur) => {
        res.writeHead(ur.statusCode ?? 502, ur.headers);
        const len = Number(ur.headers["content-length"] ?? 0);
        if (!cut || len < cutMin) {
          ur.pipe(res);
          return;
        }
        stats.cutBodies++;
        let sent = 0;
        const limit = Math.floor(len / 2);
        ur.on("data", (c: Buffer) => {
          if (sent >= limit) return;
          const part = c.subarray(0, Math.max(0, limit - sent));
          sent += part.length;
          if (sent < limit) {
            res.write(part);
            return;
          }
          // Destroy only once the half body is flushed, so the client really sees a mid-body reset.
          ur.destroy();
          res.write(part, () => setTimeout(() => res.socket?.destroy(), 5));
        });
      },
    );
    up.on("error", () => res.socket?.destroy());
    req.pipe(up);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  proxy.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  proxy.close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return proxy;
}
