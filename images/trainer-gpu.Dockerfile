# Trainer image (NVIDIA): @tensorflow/tfjs-node-gpu on a CUDA 11.8 / cuDNN 8 base (libtensorflow 2.9.1 needs
# CUDA 11.2+ and cuDNN 8.1+). Build on a host that can reach the libtensorflow download (install scripts enabled).
FROM nvidia/cuda:11.8.0-cudnn8-runtime-ubuntu22.04
RUN apt-get update && apt-get install -y --no-install-recommends curl ca-certificates build-essential python3 \
 && curl -fsSL https://deb.nodesource.com/setup_20.x | bash - && apt-get install -y nodejs && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
RUN npm ci --omit=dev --no-audit --no-fund --allow-scripts=@tensorflow/tfjs-node-gpu \
 && node -e "require('@tensorflow/tfjs-node-gpu')"
COPY tsconfig.json ./
COPY common ./common
COPY trainer ./trainer
ENV TFJS_BACKEND=tensorflow-gpu
USER 65532:65532
ENTRYPOINT ["node", "--import", "tsx", "trainer/src/cli.ts"]
