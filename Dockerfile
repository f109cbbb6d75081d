# fairxray on an NVIDIA GPU: `docker run --gpus all ... IMAGE reproduce` runs the paper profile,
# `IMAGE demo` the embedded demo (docs/docker.md). Needs BuildKit (the default builder since
# Docker 23).
#
# Two recipes, one file; they differ only in the base image and where Python 3.11 comes from:
#
# - default (users): BASE_IMAGE=nvidia/cuda:13.0.2-runtime-ubuntu22.04, PYTHON_SOURCE=uv.
#   NVIDIA's CUDA 13.0 runtime image is the CUDA that torch 2.14.1 in requirements.lock is built
#   for (+cu130; tests/unit/test_dockerfile.py checks the two agree). torch brings its own CUDA
#   user-space libraries from the lock; the base supplies the NVIDIA container environment that
#   makes the container toolkit check for a driver able to run CUDA 13.0 (>= 580).
#   Python: a CPython build installed by uv, both pinned (uv 0.13.9, CPython 3.11.18); uv verifies
#   the download against the sha256 it ships with. Chosen over Ubuntu's universe python3.11
#   (whatever patch release the archive has that day) and the deadsnakes PPA (one more apt source
#   and signing key): one exact interpreter, no apt.
# - local (scripts/docker-check.sh, for machines that reach only Debian and PyPI):
#   --build-arg BASE_IMAGE=local/bookworm --build-arg PYTHON_SOURCE=debian, a Debian bookworm
#   minbase made by mmdebstrap and Debian's python3.11 from apt.
#
# Everything after the Python stage (install.sh plus the lock, uid 1000, environment, entrypoint)
# is the same for both. BuildKit builds only the stages the final one needs, so the debian recipe
# never pulls the uv image, and the uv recipe never runs apt.
ARG BASE_IMAGE=nvidia/cuda:13.0.2-runtime-ubuntu22.04
ARG PYTHON_SOURCE=uv

FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

FROM ${BASE_IMAGE} AS python-uv
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_PYTHON_BIN_DIR=/usr/local/bin \
    UV_PYTHON_PREFERENCE=only-managed
COPY --from=uv /uv /usr/local/bin/uv
RUN uv python install 3.11.18 \
    && python3.11 -c 'import sys; assert sys.version_info[:3] == (3, 11, 18), sys.version'

# Debian bookworm's python3.11 (3.11.2 plus Debian's fixes, from whatever security updates the
# base's apt sources carry) and its venv module, which install.sh uses; nothing else from apt.
# Not version-pinned: the archive drops superseded security releases, so a pin would break the
# build at the next update; the assert below holds the minor version the lock needs.
FROM ${BASE_IMAGE} AS python-debian
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       python3.11 python3.11-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -c 'import sys, venv; assert sys.version_info[:2] == (3, 11), sys.version'

# The Python stage chosen above (python-uv or python-debian), not an image from a registry.
# hadolint ignore=DL3006
FROM python-${PYTHON_SOURCE} AS fairxray

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# A fixed uid 1000 (the usual first user on a host) so files written to a bind-mounted /out
# belong to that user; other users pass `--user "$(id -u):$(id -g)"`.
RUN useradd --create-home --uid 1000 --shell /bin/bash fairxray \
    && mkdir -p /data/nih /weights /out \
    && chown fairxray:fairxray /out

WORKDIR /opt/fairxray

# The environment, through the same script and lock as CI and the README (no second list of
# dependencies). Only what the install reads is copied first, so code changes reuse this layer:
# the editable install points at /opt/fairxray/src, filled in by the next COPY.
# Behind a TLS-intercepting proxy, hand pip its CA bundle for this step only, never into the
# image: `docker build --secret id=pip-cert,src=/path/to/ca.pem ...` (docs/docker.md).
COPY requirements.lock pyproject.toml ./
COPY scripts/install.sh scripts/install.sh
COPY src/fairxray/__init__.py src/fairxray/__init__.py
RUN --mount=type=secret,id=pip-cert \
    if [ -s /run/secrets/pip-cert ]; then export PIP_CERT=/run/secrets/pip-cert; fi \
    && PYTHON=python3.11 bash scripts/install.sh \
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

# `--gpus all` with any base: the NVIDIA container toolkit reads these. A base that sets them
# (nvidia/cuda does) keeps its values; any other base gets all GPUs, compute and nvidia-smi, and
# the driver check for CUDA 13.0 (torch's +cu130 build).
ENV NVIDIA_VISIBLE_DEVICES=${NVIDIA_VISIBLE_DEVICES:-all} \
    NVIDIA_DRIVER_CAPABILITIES=${NVIDIA_DRIVER_CAPABILITIES:-compute,utility} \
    NVIDIA_REQUIRE_CUDA=${NVIDIA_REQUIRE_CUDA:-cuda>=13.0}

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
