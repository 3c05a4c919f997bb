# Trainer image (CPU). Built by hack/images/build.sh (`make images`) from a staged context: bin/node (Node 24
# LTS), bin/tini (static), app/ = compiled JavaScript (dist/) + the lockfile's production node_modules, with
# @tensorflow/tfjs-node's addon built against the libtensorflow 2.18 of PyPI's tensorflow-cpu wheel
# (hack/tfjs-native/build.sh) in place of its install-time download. The trainer picks the native backend
# and falls back to wasm (logged either way). No RUN: no network and no shell needed in the base.
ARG BASE_IMAGE=mergevq/base:bookworm
FROM ${BASE_IMAGE}
COPY bin/node bin/tini /usr/local/bin/
COPY app /app
WORKDIR /app
# Non-root; writable paths: /tmp (declared volume: the operator mounts an emptyDir there) and
# /dev/termination-log. Caches (Inception/teacher ONNX fetched from S3) live under /tmp.
ENV NODE_ENV=production HOME=/tmp MERGEVQ_CACHE=/tmp/mergevq-cache TF_CPP_MIN_LOG_LEVEL=1
USER 65532:65532
VOLUME ["/tmp"]
# tini as PID 1: SIGTERM reaches the trainer (checkpoint on SIGTERM, then exit) and children are reaped.
ENTRYPOINT ["/usr/local/bin/tini", "--", "/usr/local/bin/node", "/app/dist/trainer/src/cli.js"]
