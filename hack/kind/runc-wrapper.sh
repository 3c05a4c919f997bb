#!/usr/bin/env bash
# OCI runtime wrapper used for kind's node containers on VMs whose capability bounding set lacks
# CAP_SYS_RESOURCE: kind always runs nodes --privileged, and runc then fails with "unable to apply caps:
# operation not permitted". On create/run this deletes CAP_SYS_RESOURCE from the bundle's config.json (and from
# the --process file on exec), then execs the real runc with the same arguments. Hosts that have the capability
# are unaffected (the wrapper only runs for containers started with --runtime=mergevq-runc).
set -euo pipefail
RUNC="${MERGEVQ_REAL_RUNC:-/usr/sbin/runc}"
[ -x "$RUNC" ] || RUNC=/usr/bin/runc
if ! grep -q '^CapBnd:.*' /proc/self/status || [ $(( 0x$(awk '/^CapBnd/{print $2}' /proc/self/status) >> 24 & 1 )) = 1 ]; then
  exec "$RUNC" "$@"   # CAP_SYS_RESOURCE (bit 24) is in the bounding set: nothing to fix
fi
strip() { # file
  local f="$1" tmp
  [ -f "$f" ] || return 0
  tmp="$(mktemp "$f.XXXXXX")"
  jq 'def drop: if type == "array" then map(select(. != "CAP_SYS_RESOURCE")) else . end;
      (if .process then .process.capabilities else .capabilities end) |= (if . then with_entries(.value |= drop) else . end)' \
    "$f" >"$tmp" && mv "$tmp" "$f"
}
bundle="" process="" cmd=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    create | run | exec) [ -z "$cmd" ] && cmd="${args[i]}" ;;
    --bundle | -b) bundle="${args[i + 1]}" ;;
    --bundle=*) bundle="${args[i]#--bundle=}" ;;
    --process | -p) process="${args[i + 1]}" ;;
    --process=*) process="${args[i]#--process=}" ;;
  esac
done
case "$cmd" in
  create | run) strip "${bundle:-.}/config.json" ;;
  exec) [ -n "$process" ] && strip "$process" ;;
esac
exec "$RUNC" "$@"
