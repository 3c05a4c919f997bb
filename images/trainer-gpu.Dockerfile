# Trainer image (NVIDIA GPU). Same layout as trainer.Dockerfile, with @tensorflow/tfjs-node-gpu built against
# the CUDA libtensorflow 2.18 of PyPI's `tensorflow` wheel and the NVIDIA runtime libraries of the wheels that
# wheel names (cuDNN, cuBLAS, cuFFT, …; hack/tfjs-native/build.sh --variant gpu) under /opt/nvidia. No
# nvidia/cuda base: the driver (libcuda.so) comes from the node through the NVIDIA container runtime, as
# for any CUDA image. Without a GPU libtensorflow runs its CPU kernels (and says it found no device).
ARG BASE_IMAGE=mergevq/base:bookworm
FROM ${BASE_IMAGE}
COPY bin/node bin/tini /usr/local/bin/
COPY nvidia /opt/nvidia
COPY app /app
WORKDIR /app
ENV NODE_ENV=production HOME=/tmp MERGEVQ_CACHE=/tmp/mergevq-cache TF_CPP_MIN_LOG_LEVEL=1 \
    TFJS_BACKEND=tensorflow-gpu \
    NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    LD_LIBRARY_PATH=/opt/nvidia/lib
USER 65532:65532
VOLUME ["/tmp"]
ENTRYPOINT ["/usr/local/bin/tini", "--", "/usr/local/bin/node", "/app/dist/trainer/src/cli.js"]
