#!/usr/bin/env bash
# Make sure a Docker engine answers. On a host without one (Debian, root), install Debian's docker.io and start
# dockerd in the background (no systemd as PID 1 on these machines). Registers the runc wrapper kind needs on
# VMs whose capability bounding set lacks CAP_SYS_RESOURCE (hack/kind/runc-wrapper.sh). Prints the docker
# client path on stdout. Idempotent.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log() { printf '[docker-engine %4ss] %s\n' "$SECONDS" "$*" >&2; }
# The engine's own client: /usr/local/bin/docker on some images is a client for another engine.
DOCKER=/usr/bin/docker
[ -x "$DOCKER" ] || DOCKER="$(command -v docker || true)"

if [ -n "$DOCKER" ] && "$DOCKER" info >/dev/null 2>&1; then echo "$DOCKER"; exit 0; fi

if [ ! -x /usr/sbin/dockerd ] && [ ! -x /usr/bin/dockerd ]; then
  [ "$(id -u)" = 0 ] || { echo "docker-engine: no Docker engine and not root: install docker.io (or Docker CE) first" >&2; exit 1; }
  command -v apt-get >/dev/null || { echo "docker-engine: no Docker engine and no apt-get: install Docker first" >&2; exit 1; }
  log "installing Debian's docker.io (engine, containerd, runc)"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >&2
fi
DOCKER=/usr/bin/docker
DOCKERD="$(command -v dockerd || echo /usr/sbin/dockerd)"
# The runc wrapper edits OCI bundles with jq.
command -v jq >/dev/null || { apt-get update -qq >&2; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq >&2; }

# Runtime wrapper for kind's privileged node containers (see hack/kind/runc-wrapper.sh).
install -m 0755 "$HERE/../kind/runc-wrapper.sh" /usr/local/sbin/mergevq-runc
mkdir -p /etc/docker
if [ ! -f /etc/docker/daemon.json ] || ! grep -q mergevq-runc /etc/docker/daemon.json; then
  cat >/etc/docker/daemon.json <<'JSON'
{
  "runtimes": { "mergevq-runc": { "path": "/usr/local/sbin/mergevq-runc" } },
  "storage-driver": "overlay2"
}
JSON
fi

if ! pgrep -x dockerd >/dev/null; then
  log "starting dockerd in the background (log: /var/log/mergevq-dockerd.log)"
  nohup "$DOCKERD" >/var/log/mergevq-dockerd.log 2>&1 &
fi
for _ in $(seq 1 60); do "$DOCKER" info >/dev/null 2>&1 && break; sleep 1; done
"$DOCKER" info >/dev/null 2>&1 || { tail -20 /var/log/mergevq-dockerd.log >&2; echo "docker-engine: dockerd did not come up" >&2; exit 1; }
log "engine $("$DOCKER" version --format '{{.Server.Version}}') ready"
echo "$DOCKER"
