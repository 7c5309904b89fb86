# opsync operator image.
#
#   docker build -t opsync:0.1.0 --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" .
#
# Stage 1 builds opsync's wheel and the wheels of its dependencies (all published as binary
# wheels: no compiler). Stage 2 installs them from that folder only (--no-index), so the final
# image holds the installed packages and nothing of the source tree or of the build. It runs as
# a numeric non-root user and works with a read-only root filesystem (no bytecode written at run
# time; the chart mounts an emptyDir on /tmp). No secret is passed to or stored in any layer.
#
# Needs BuildKit for RUN --mount (Docker's default builder since 23.0; buildah/podman have it too).
# The base image is pinned by version (bookworm: glibc 2.36, which the dependencies' binary wheels
# need); pin it by digest as well (python:3.11.13-slim-bookworm@sha256:…) where policy asks.

# BASE: the Python base of both stages. The default is the pinned official image; `make image`
# (no Docker Hub where opsync's node tests run) passes a python3.11 image it built locally from
# Debian bookworm packages with mmdebstrap. `docker build .` is unchanged.
ARG BASE=python:3.11.13-slim-bookworm

FROM ${BASE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip wheel --wheel-dir /wheels .

FROM ${BASE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="opsync" \
      org.opencontainers.image.description="Kubernetes operator that syncs 1Password Connect items into Secrets; a drop-in for the official 1Password operator." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.13-slim-bookworm"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# The wheels are mounted for this one step, not copied: they are not part of any layer.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels opsync \
    && groupadd --system --gid 65532 opsync \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin opsync \
    && printf '#!/bin/sh\n# The official operator image runs /manager; its manifests work unchanged.\nexec opsync run "$@"\n' > /manager \
    && chmod 0555 /manager
USER 65532:65532
# Metrics (/metrics) and probes (/healthz, /readyz), as the official operator.
EXPOSE 8080 8081
ENTRYPOINT ["opsync", "run"]
