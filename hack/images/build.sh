#!/usr/bin/env bash
# Build the project's images with no registry: operator, trainer (CPU, native libtensorflow + wasm fallback)
# and trainer-gpu (tfjs-node-gpu on the CUDA libtensorflow of PyPI's tensorflow wheel + NVIDIA runtime wheels).
#
#   hack/images/build.sh [operator|trainer|trainer-gpu|all]...   (default: operator trainer)
#
# Env: IMAGE_REGISTRY (default mergevq), IMAGE_TAG (default: package.json version), BASE_IMAGE (default: a
# Debian bookworm rootfs this repo builds with debootstrap, hack/images/rootfs.sh; any glibc ≥ 2.36 image
# with ca-certificates works), DOCKER (engine client; default /usr/bin/docker), BENCH_OUT (append build
# time/size JSON lines there).
#
# Every Dockerfile in images/ only COPYs a context staged here (no RUN, no network inside the build): the
# context holds Node 24 from the npm registry, tini, the compiled JavaScript (tsc → dist/, no transpiler at
# run time) and the production node_modules of the lockfile. A user with a registry and a different base sets
# BASE_IMAGE; a user who is air-gapped needs only npm + PyPI + Debian mirrors on the build host.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"
DOCKER="${DOCKER:-/usr/bin/docker}"
REGISTRY="${IMAGE_REGISTRY:-mergevq}"
TAG="${IMAGE_TAG:-$(node -p 'require("./package.json").version')}"
CACHE_ROOT="${MERGEVQ_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mergevq}"
WORK="$CACHE_ROOT/images"
log() { printf '[images %5ss] %s\n' "$SECONDS" "$*" >&2; }
targets=("$@"); [ ${#targets[@]} -gt 0 ] || targets=(operator trainer)
[ "${targets[0]}" = all ] && targets=(operator trainer trainer-gpu)

"$DOCKER" info >/dev/null 2>&1 || { echo "images: no Docker engine answers (hack/images/docker-engine.sh starts one)" >&2; exit 1; }
BASE="${BASE_IMAGE:-}"
if [ -z "$BASE" ]; then
  BASE=mergevq/base:bookworm
  # ca-certificates: TLS to S3; tini: PID 1 (also copied as a static binary below, for other bases).
  hack/images/rootfs.sh "$BASE" --packages "ca-certificates tini" >/dev/null
fi
NODE_PREFIX="$(hack/node.sh)"
mkdir -p "$WORK"

# --- shared staging: compiled JS, production node_modules (lockfile), node, tini ---------------------------
lockhash="$(cat package-lock.json .npmrc | sha256sum | cut -c1-16)"
PROD="$WORK/prod-$lockhash"
if [ ! -f "$PROD/.complete" ]; then
  log "npm ci --omit=dev (production dependencies of the lockfile, install scripts off)"
  rm -rf "$PROD" && mkdir -p "$PROD"
  cp package.json package-lock.json .npmrc "$PROD/"
  (cd "$PROD" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
  touch "$PROD/.complete"
fi
TINI="$WORK/tini-static"
if [ ! -x "$TINI" ]; then
  log "tini-static from Debian's tini package"
  t="$(mktemp -d)"; (cd "$t" && apt-get download tini >/dev/null 2>&1) || { apt-get update -qq && (cd "$t" && apt-get download tini >/dev/null); }
  dpkg-deb -x "$t"/tini_*.deb "$t/x" && install -m 0755 "$t/x/usr/bin/tini-static" "$TINI" && rm -rf "$t"
fi
log "tsc -p tsconfig.build.json → dist/"
rm -rf dist && npx tsc -p tsconfig.build.json

# Stage with hard links where the source shares the context's filesystem (it does: both live under the cache), so
# a context costs no disk of its own (the trainer-gpu one would be ~4 GB); only unlinks happen in a context, which
# leave the source alone. Falls back to a copy across filesystems.
link_tree() { # src… dst: the contents of every src dir merged into dst
  local dst="${*: -1}" srcs=("${@:1:$#-1}") s
  mkdir -p "$dst"
  for s in "${srcs[@]}"; do
    cp -al "$s/." "$dst/" 2>/dev/null && continue
    rm -rf "$dst" && mkdir -p "$dst" # not linkable (another filesystem): copy all of it
    for s in "${srcs[@]}"; do cp -a "$s/." "$dst/"; done
    return
  done
}

stage() { # name → fresh context dir with node, tini, package.json and dist/
  local ctx="$WORK/ctx-$1"
  rm -rf "$ctx" && mkdir -p "$ctx/app" "$ctx/bin"
  install -m 0755 "$NODE_PREFIX/bin/node" "$ctx/bin/node"
  install -m 0755 "$TINI" "$ctx/bin/tini"
  cp package.json "$ctx/app/"
  echo "$ctx"
}

# Drop what no Linux x64 container runs: other platforms' ORT binaries, wasm builds for browsers, TS sources.
prune_modules() { # node_modules dir
  local nm="$1"
  find "$nm/onnxruntime-node/bin" -mindepth 3 -maxdepth 3 -type d ! -path '*/linux/x64' -exec rm -rf {} + 2>/dev/null || true
  rm -rf "$nm"/.bin "$nm"/tsx "$nm"/esbuild "$nm"/@esbuild "$nm"/get-tsconfig "$nm"/resolve-pkg-maps
  find "$nm" \( -name '*.md' -o -name '*.map' -o -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' \) -type f -delete
}

build() { # name dockerfile ctx
  local name="$1" file="$2" ctx="$3" t0=$SECONDS ref="$REGISTRY/$1:$TAG"
  log "docker build $ref (base $BASE)"
  "$DOCKER" build -q -f "$file" --build-arg "BASE_IMAGE=$BASE" \
    --label "org.opencontainers.image.version=$TAG" --label "org.opencontainers.image.source=mergevq-k8s" \
    -t "$ref" "$ctx" >/dev/null
  rm -rf "$ctx" # the engine has it now (the trainer-gpu context alone is ~4 GB)
  # Earlier builds of our images that this one untagged: dangling, only disk.
  "$DOCKER" image prune -f --filter "label=org.opencontainers.image.source=mergevq-k8s" >/dev/null 2>&1 || true
  local size; size="$("$DOCKER" image inspect -f '{{.Size}}' "$ref")"
  log "$ref: $((size / 1000000)) MB, $((SECONDS - t0)) s"
  if [ -n "${BENCH_OUT:-}" ]; then
    printf '{"bench":"kind","metric":"image_size","value":%s,"unit":"MB","config":"%s"}\n' "$((size / 1000000))" "$name" >>"$BENCH_OUT"
    printf '{"bench":"kind","metric":"image_build_seconds","value":%s,"unit":"s","config":"%s"}\n' "$((SECONDS - t0))" "$name" >>"$BENCH_OUT"
  fi
  echo "$ref"
}

for target in "${targets[@]}"; do
  case "$target" in
    operator)
      ctx="$(stage operator)"
      mkdir -p "$ctx/app/dist" "$ctx/app/node_modules"
      cp -r dist/common dist/operator "$ctx/app/dist/"
      node hack/images/deps-closure.mjs "$PROD/node_modules" "$ctx/app/node_modules" \
        @kubernetes/client-node @aws-sdk/client-s3 pino prom-client yaml zod >/dev/null
      prune_modules "$ctx/app/node_modules"
      build operator images/operator.Dockerfile "$ctx"
      ;;
    trainer | trainer-gpu)
      variant=cpu pkg=tfjs-node; [ "$target" = trainer-gpu ] && variant=gpu pkg=tfjs-node-gpu
      native="$(hack/tfjs-native/build.sh --variant "$variant")"
      ctx="$(stage "$target")"
      cp -r dist "$ctx/app/dist"
      link_tree "$PROD/node_modules" "$ctx/app/node_modules"
      # One native package per image, with its addon and libtensorflow in place of the install-script download.
      rm -rf "$ctx/app/node_modules/@tensorflow/tfjs-node" "$ctx/app/node_modules/@tensorflow/tfjs-node-gpu"
      link_tree "$native" "$ctx/app/node_modules/@tensorflow/$pkg"
      rm -rf "$ctx/app/node_modules/@tensorflow/$pkg/node_modules" "$ctx/app/node_modules/@tensorflow/$pkg/build"
      if [ "$variant" = gpu ]; then # one flat library dir: LD_LIBRARY_PATH=/opt/nvidia/lib in the image
        link_tree "$native"/../../../nvidia/*/lib "$ctx/nvidia/lib"
        cp "$native/../../../nvidia/REQUIREMENTS.txt" "$ctx/nvidia/"
      fi
      prune_modules "$ctx/app/node_modules"
      build "$target" "images/$target.Dockerfile" "$ctx"
      ;;
    *) echo "images: unknown target $target (operator|trainer|trainer-gpu|all)" >&2; exit 2 ;;
  esac
done
