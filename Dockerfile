# fairxray on an NVIDIA GPU: `docker run --gpus all ... IMAGE reproduce` runs the paper profile,
# `IMAGE demo` the embedded demo (docs/docker.md).
#
# Base: NVIDIA's CUDA 13.0 runtime image, the CUDA that torch 2.14.1 in requirements.lock is built
# for (+cu130; tests/unit/test_dockerfile.py checks the two agree). torch brings its own CUDA
# user-space libraries from the lock; the base supplies the NVIDIA container environment that
# makes the container toolkit check for a driver able to run CUDA 13.0 (>= 580).
#
# Python 3.11, the version requirements.lock was made on: a CPython build installed by uv, both
# pinned (uv 0.13.9, CPython 3.11.18); uv verifies the download against the sha256 it ships with.
# Chosen over Ubuntu's universe python3.11 (whatever patch release the archive has that day) and
# the deadsnakes PPA (one more apt source and signing key): one exact interpreter, no apt.
FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

FROM nvidia/cuda:13.0.2-runtime-ubuntu22.04

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_PYTHON_BIN_DIR=/usr/local/bin \
    UV_PYTHON_PREFERENCE=only-managed
COPY --from=uv /uv /usr/local/bin/uv
RUN uv python install 3.11.18 \
    && python3.11 -c 'import sys; assert sys.version_info[:3] == (3, 11, 18), sys.version'

# A fixed uid 1000 (the usual first user on a host) so files written to a bind-mounted /out
# belong to that user; other users pass `--user "$(id -u):$(id -g)"`.
RUN useradd --create-home --uid 1000 --shell /bin/bash fairxray \
    && mkdir -p /data/nih /weights /out \
    && chown fairxray:fairxray /out

WORKDIR /opt/fairxray

# The environment, through the same script and lock as CI and the README (no second list of
# dependencies). Only what the install reads is copied first, so code changes reuse this layer:
# the editable install points at /opt/fairxray/src, filled in by the next COPY.
COPY requirements.lock pyproject.toml ./
COPY scripts/install.sh scripts/install.sh
COPY src/fairxray/__init__.py src/fairxray/__init__.py
RUN PYTHON=python3.11 bash scripts/install.sh \
    && rm -rf /root/.cache

COPY . .
# Compile now: the non-root user cannot write __pycache__ under /opt/fairxray. The CLI listing
# imports every stage, so a broken install fails the build here rather than at run time.
RUN .venv/bin/python -m compileall -q src \
    && .venv/bin/fairxray --help > /dev/null

# The commit the image was built from, for MLflow tags (the image has no .git):
# docker build --build-arg GIT_SHA="$(git rev-parse HEAD)" ...
ARG GIT_SHA=unknown
LABEL org.opencontainers.image.title="fairxray" \
      org.opencontainers.image.revision="${GIT_SHA}"

# Offline at run time: weights come from /weights, never from a hub. The FAIRXRAY_* folders are
# the defaults of `fairxray reproduce` / `fairxray demo` and the mount points in docs/docker.md.
ENV PATH=/opt/fairxray/.venv/bin:${PATH} \
    FAIRXRAY_GIT_SHA=${GIT_SHA} \
    FAIRXRAY_IMAGES_DIR=/data/nih \
    FAIRXRAY_WEIGHTS_DIR=/weights \
    FAIRXRAY_OUT=/out \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    DVC_NO_ANALYTICS=1 \
    MLFLOW_ENABLE_TELEMETRY=false \
    DO_NOT_TRACK=1 \
    GIT_PYTHON_REFRESH=quiet \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    XDG_CACHE_HOME=/tmp/cache

USER 1000:1000
ENTRYPOINT ["fairxray"]
CMD ["demo"]
