# syntax=docker/dockerfile:1
#
# LLM Foundry image: the locked environment (uv.lock) on an official PyTorch CUDA runtime image.
#
#   docker build -t llmfoundry .                                  # base dependencies
#   docker build -t llmfoundry --build-arg EXTRAS="--extra serve" .   # + the OpenAI-compatible endpoint
#   docker run --rm llmfoundry                                    # prints the CLI's help
#   docker run --rm --gpus all -v "$PWD/runs:/app/runs" llmfoundry \
#       composer scripts/train/train.py scripts/train/yamls/pretrain/<config>.yaml
#   docker run --rm --gpus all -p 8000:8000 -v "$PWD/model:/model" llmfoundry \
#       python scripts/inference/serve.py --name_or_path /model --host 0.0.0.0 --port 8000
#
# Base: pytorch/pytorch:2.14.1-cuda13.0-cudnn9-runtime. uv.lock pins torch 2.14.1 built against
# CUDA 13.0 (torch.version.cuda == "13.0", nvidia-cuda-runtime 13.0.x), so the image's CUDA runtime
# and cuDNN match the wheels the venv installs. The venv has its own torch from the lock (the same
# version as the image's), so the image runs exactly what `make test` runs.
#
# EXTRAS takes uv's extra flags, e.g. "--extra serve --extra loggers" (xargs splits them into
# separate arguments). The gpu extra (flash-attn) ships only as a source distribution that
# imports torch and compiles with nvcc while it builds: it needs --build-arg BUILDER_FLAVOR=devel
# (same OS and Python as the runtime image, so the venv still runs in the final stage) and torch
# in flash-attn's build environment (uv's extra-build-dependencies in pyproject.toml).

ARG PYTORCH_TAG=2.14.1-cuda13.0-cudnn9
ARG BUILDER_FLAVOR=runtime

# ---------------------------------------------------------------------------- builder: the venv
FROM pytorch/pytorch:${PYTORCH_TAG}-${BUILDER_FLAVOR} AS builder

ARG UV_VERSION=0.13.9
ARG EXTRAS=""

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# The image's Python is externally managed (PEP 668); uv only lives in this throw-away stage.
RUN python3 -m pip install --no-cache-dir --break-system-packages "uv==${UV_VERSION}"

# The venv sits outside the source tree so it can be copied on its own. Bytecode is compiled
# here because the final stage's user cannot write to it; copy mode because the uv cache is a
# separate mount. uv uses the image's Python and never downloads one.
ENV UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never

WORKDIR /app

# Dependencies first (this layer is reused until pyproject.toml or uv.lock change), then the
# project itself, installed editable from /app, where the final stage puts the same sources.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    printf '%s' "${EXTRAS}" | xargs uv sync --frozen --no-dev --no-install-project

COPY setup.py README.md ./
COPY llmfoundry/ llmfoundry/
RUN --mount=type=cache,target=/root/.cache/uv \
    printf '%s' "${EXTRAS}" | xargs uv sync --frozen --no-dev

# ---------------------------------------------------------------------------- final: runtime
FROM pytorch/pytorch:${PYTORCH_TAG}-runtime

# SERVE_PORT is the port the HEALTHCHECK probes: ServeConfig's default port of
# scripts/inference/serve.py. Pass the same value to --port (or set both).
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    SERVE_PORT=8000

# A non-root user; it owns /app itself (not the sources in it), so runs can write their
# checkpoints and outputs there while the code stays read-only.
RUN groupadd --gid 10001 foundry \
    && useradd --no-log-init --create-home --uid 10001 --gid foundry --shell /bin/bash foundry \
    && install -d -o foundry -g foundry /app

WORKDIR /app

COPY --from=builder /opt/venv /opt/venv
COPY llmfoundry/ llmfoundry/
COPY scripts/ scripts/

USER 10001:10001

EXPOSE 8000

# For `scripts/inference/serve.py --host 0.0.0.0`: healthy once the model is loaded and
# GET /health answers 200 (503 once the generation worker has stopped). Python's urllib, since
# the image has no curl. Containers that train or evaluate can run with --no-healthcheck.
HEALTHCHECK --interval=30s --timeout=10s --start-period=300s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ['SERVE_PORT'], timeout=5)"]

CMD ["llmfoundry", "--help"]
