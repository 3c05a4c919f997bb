# Trainer image (CPU): tfjs (wasm, or tfjs-node when built) + onnxruntime-node + sharp.
FROM node:20-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
RUN npm ci --omit=dev --no-audit --no-fund

FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
COPY --from=deps /app/node_modules ./node_modules
COPY package.json tsconfig.json ./
COPY common ./common
COPY trainer ./trainer
USER 65532:65532
ENTRYPOINT ["node", "--import", "tsx", "trainer/src/cli.ts"]
