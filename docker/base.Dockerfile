# syntax=docker/dockerfile:1.7
# The shared stages of the four agent images, built once by docker-bake.hcl and handed to
# every service Dockerfile as the named contexts `builder` and `runtime`:
#
#   builder  Python + uv + the workspace sources; each service runs
#            `uv sync --frozen --no-dev --package <member>` on top of it.
#   runtime  Python slim with nothing to build with: no uv, no pip, no compiler; a
#            non-root numeric user. Each service copies its virtualenv into it.
#
# Both stages start from the same Python image, so the virtualenv's interpreter path
# (/usr/local/bin/python3.11) is valid in the final image.

# The uv release that wrote uv.lock (`uv --version`), so the lock reads the same.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

FROM ${PYTHON_IMAGE} AS builder
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# The lock file and every member's pyproject first, so dependency layers are cached
# until one of them changes; the sources after.
COPY pyproject.toml uv.lock ./
COPY libs/agentkit/pyproject.toml libs/agentkit/
COPY services/registrar/pyproject.toml services/registrar/
COPY services/tunnel/pyproject.toml services/tunnel/
COPY services/gateway/pyproject.toml services/gateway/
COPY services/http-api/pyproject.toml services/http-api/
COPY dev/controlplane/pyproject.toml dev/controlplane/
COPY dev/kubesim/pyproject.toml dev/kubesim/
COPY libs/ libs/
COPY services/ services/
COPY dev/ dev/
COPY proto/ proto/

FROM ${PYTHON_IMAGE} AS runtime
ARG PYTHON_IMAGE
ARG UID=10001
# pip, setuptools and wheel are build tools: the final images carry none.
RUN python -m pip uninstall --yes --no-cache-dir pip setuptools wheel \
    && groupadd --system --gid "${UID}" pipeops \
    && useradd --system --uid "${UID}" --gid "${UID}" --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin pipeops
# One malloc arena: every Kubernetes call and gRPC poller runs in a thread, and glibc
# gives each thread its own arena (a few MiB resident each); measured 2-5 MiB less per
# container idle. PYTHONOPTIMIZE=2: no docstrings in memory (and no asserts, which the
# code uses only to narrow types), 2 MiB less per container idle; each service image
# compiles its .opt-2.pyc at build (bench/memory_notes.md).
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONOPTIMIZE=2 \
    MALLOC_ARENA_MAX=1
LABEL org.opencontainers.image.vendor="PipeOps" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/PipeOpsHQ/pipeops-agent" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
WORKDIR /app
USER 10001:10001
STOPSIGNAL SIGTERM
