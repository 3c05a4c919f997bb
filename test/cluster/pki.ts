// Test PKI generated with the system `openssl` (OpenSSL 3): one CA signs every certificate.
// Go ignores the CN for host verification, so every serving cert carries subjectAltNames.
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";

export interface CertPair {
  cert: string;
  key: string;
}

export interface Pki {
  dir: string;
  /** CA certificate + key (also used as the cluster signing CA by kube-controller-manager). */
  ca: CertPair;
  /** kube-apiserver serving certificate (SANs: 127.0.0.1, localhost, kubernetes.default.svc…, 10.0.0.1). */
  apiserver: CertPair;
  /** Admin client certificate, O=system:masters (bypasses RBAC). */
  admin: CertPair;
  /** Client cert the apiserver presents to kubelets (node agent) for logs. */
  apiserverKubeletClient: CertPair;
  /** Serving certificate of the node agent's kubelet endpoint (SAN 127.0.0.1/localhost). */
  kubeletServing: CertPair;
  /** Service-account token signing key pair (PEM private key, PEM public key). */
  saKey: string;
  saPub: string;
}

function openssl(args: string[], cwd: string): void {
  execFileSync("openssl", args, { cwd, stdio: ["ignore", "ignore", "pipe"] });
}

/** Generate a key + certificate signed by the CA. `ext` lines go into an -extfile. */
function issue(dir: string, name: string, subj: string, ext: string[], days: number): CertPair {
  const key = path.join(dir, `${name}.key`);
  const csr = path.join(dir, `${name}.csr`);
  const cert = path.join(dir, `${name}.crt`);
  const extFile = path.join(dir, `${name}.ext`);
  writeFileSync(extFile, `${ext.join("\n")}\n`);
  openssl(["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", subj], dir);
  openssl(
    [
      "x509",
      "-req",
      "-in",
      csr,
      "-CA",
      "ca.crt",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-days",
      String(days),
      "-extfile",
      extFile,
      "-out",
      cert,
    ],
    dir,
  );
  return { cert, key };
}

/** Create the whole PKI under `dir` (created if missing). Takes ~1-2 s (RSA key generation). */
export function generatePki(dir: string, opts: { days?: number; extraSans?: string[] } = {}): Pki {
  mkdirSync(dir, { recursive: true });
  const days = opts.days ?? 30;
  openssl(
    [
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      "ca.key",
      "-out",
      "ca.crt",
      "-days",
      String(days),
      "-subj",
      "/CN=mergevq-test-ca",
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
    ],
    dir,
  );
  const serverSans = [
    "IP:127.0.0.1",
    "IP:10.0.0.1",
    "DNS:localhost",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster.local",
    ...(opts.extraSans ?? []),
  ];
  const serverExt = (sans: string[]) => [
    `subjectAltName=${sans.join(",")}`,
    "extendedKeyUsage=serverAuth",
    "keyUsage=critical,digitalSignature,keyEncipherment",
  ];
  const clientExt = ["extendedKeyUsage=clientAuth", "keyUsage=critical,digitalSignature,keyEncipherment"];
  const apiserver = issue(dir, "apiserver", "/CN=kube-apiserver", serverExt(serverSans), days);
  const admin = issue(dir, "admin", "/O=system:masters/CN=mergevq-admin", clientExt, days);
  const apiserverKubeletClient = issue(
    dir,
    "apiserver-kubelet-client",
    "/O=system:masters/CN=kube-apiserver-kubelet-client",
    clientExt,
    days,
  );
  const kubeletServing = issue(
    dir,
    "kubelet",
    "/CN=mergevq-node-agent",
    serverExt(["IP:127.0.0.1", "DNS:localhost"]),
    days,
  );
  openssl(["genrsa", "-out", "sa.key", "2048"], dir);
  openssl(["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"], dir);
  return {
    dir,
    ca: { cert: path.join(dir, "ca.crt"), key: path.join(dir, "ca.key") },
    apiserver,
    admin,
    apiserverKubeletClient,
    kubeletServing,
    saKey: path.join(dir, "sa.key"),
    saPub: path.join(dir, "sa.pub"),
  };
}

const b64 = (file: string) => readFileSync(file).toString("base64");

/** Write a kubeconfig (embedded data) for `server` authenticating with a client certificate. */
export function writeKubeconfig(file: string, server: string, caCert: string, client: CertPair, user = "admin"): void {
  const yaml = `apiVersion: v1
kind: Config
clusters:
- name: mergevq-test
  cluster:
    server: ${server}
    certificate-authority-data: ${b64(caCert)}
users:
- name: ${user}
  user:
    client-certificate-data: ${b64(client.cert)}
    client-key-data: ${b64(client.key)}
contexts:
- name: mergevq-test
  context:
    cluster: mergevq-test
    user: ${user}
current-context: mergevq-test
`;
  writeFileSync(file, yaml, { mode: 0o600 });
}

/** Kubeconfig with a bearer token (used for pods' service-account credentials). */
export function tokenKubeconfig(server: string, caCertPem: string, token: string, namespace: string): string {
  return `apiVersion: v1
kind: Config
clusters:
- name: in-cluster
  cluster:
    server: ${server}
    certificate-authority-data: ${Buffer.from(caCertPem).toString("base64")}
users:
- name: sa
  user:
    token: ${token}
contexts:
- name: in-cluster
  context:
    cluster: in-cluster
    user: sa
    namespace: ${namespace}
current-context: in-cluster
`;
}
