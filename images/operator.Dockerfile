# Operator image: Node 20, production deps only, runs as non-root (65532) with a read-only root filesystem.
FROM node:20-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
RUN npm ci --omit=dev --omit=optional --no-audit --no-fund

FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
COPY --from=deps /app/node_modules ./node_modules
COPY package.json tsconfig.json ./
COPY common ./common
COPY operator ./operator
USER 65532:65532
ENTRYPOINT ["node", "--import", "tsx", "operator/src/main.ts"]
