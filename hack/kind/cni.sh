#!/usr/bin/env bash
# Pod networking for a kind cluster created with disableDefaultCNI, using only the reference CNI plugins that
# Debian ships in the node image (ptp + host-local + portmap): each node gets a CNI config for its own
# spec.podCIDR, and a route to every other node's pod CIDR via that node's address on the kind network. This is
# what kindnetd does for a fixed set of nodes; kindnetd itself is not published on any registry these machines
# reach (its Go module is not on the module proxy). Idempotent: re-run after adding a node.
#   hack/kind/cni.sh CLUSTER_NAME   (KUBECONFIG must point at the cluster)
set -euo pipefail
NAME="${1:?usage: cni.sh CLUSTER_NAME}"
DOCKER="${DOCKER:-/usr/bin/docker}"
KIND="${KIND:-kind}"
KUBECTL="${KUBECTL:-kubectl}"
declare -A ip cidr
nodes=$("$KIND" get nodes --name "$NAME")
for n in $nodes; do
  ip[$n]="$("$DOCKER" inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$n")"
  for _ in $(seq 1 60); do
    cidr[$n]="$("$KUBECTL" get node "$n" -o jsonpath='{.spec.podCIDR}' 2>/dev/null || true)"
    [ -n "${cidr[$n]}" ] && break; sleep 1
  done
  [ -n "${cidr[$n]}" ] || { echo "cni: node $n has no spec.podCIDR" >&2; exit 1; }
done
for n in $nodes; do
  "$DOCKER" exec -i "$n" sh -c 'mkdir -p /etc/cni/net.d && cat > /etc/cni/net.d/10-mergevq.conflist.tmp && mv /etc/cni/net.d/10-mergevq.conflist.tmp /etc/cni/net.d/10-mergevq.conflist' <<JSON
{
  "cniVersion": "0.4.0",
  "name": "mergevq",
  "plugins": [
    { "type": "ptp", "ipMasq": false, "mtu": 1500,
      "ipam": { "type": "host-local", "ranges": [[{ "subnet": "${cidr[$n]}" }]], "routes": [{ "dst": "0.0.0.0/0" }] } },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
JSON
  for m in $nodes; do
    [ "$m" = "$n" ] || "$DOCKER" exec "$n" ip route replace "${cidr[$m]}" via "${ip[$m]}"
  done
  printf '[cni] %s %s pods %s\n' "$n" "${ip[$n]}" "${cidr[$n]}" >&2
done
