# Operator image. Built by hack/images/build.sh (`make images`) from a staged context: bin/node (Node 24 LTS),
# bin/tini (static), app/ = compiled JavaScript (dist/common, dist/operator) + only the operator's runtime
# dependency closure (client-node, client-s3, pino, prom-client, yaml, zod). No RUN: the build needs no network
# and no shell in the base, so any glibc base works (BASE_IMAGE; default: the repo's debootstrapped bookworm).
ARG BASE_IMAGE=mergevq/base:bookworm
FROM ${BASE_IMAGE}
COPY bin/node bin/tini /usr/local/bin/
COPY app /app
WORKDIR /app
# Non-root; the only writable path is the declared /tmp volume (the chart mounts an emptyDir there and sets
# readOnlyRootFilesystem). HOME points into it for libraries that cache under ~.
ENV NODE_ENV=production HOME=/tmp
USER 65532:65532
VOLUME ["/tmp"]
# tini as PID 1: forwards SIGTERM to node (graceful shutdown, Lease release) and reaps zombies. A 2 MiB young
# generation (V8's default is 16 MiB semi-spaces) keeps the idle operator ~30 MiB smaller, and --lite-mode (no
# optimising compilers) ~14 MiB more, and halves its memory at 5,000 runs, for slower CPU-bound work (the chart's
# nodeFlags brings the compilers back; operator/src/README.md has the figures). The operator benches read these
# flags from this line (bench/operatorHarness.ts imageNodeArgs).
ENTRYPOINT ["/usr/local/bin/tini", "--", "/usr/local/bin/node", "--max-semi-space-size=2", "--lite-mode", "/app/dist/operator/src/main.js"]
