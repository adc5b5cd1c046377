# syntax=docker/dockerfile:1
# Herald's images: one build, one target per deployable (docs/operations.md).
#
#   docker build --target api -t herald/api .      # api | status | sender | messageapp | migrate
#
# The build stage resolves exactly uv.lock into a virtualenv; the runtime stages copy only that
# virtualenv onto a slim Python, so uv, build backends and caches never reach a final image.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

FROM ${PYTHON_IMAGE} AS build
COPY --from=uv /uv /usr/local/bin/uv
# Byte-compile now (the runtime filesystem is read-only); copy, not hardlink, out of the cache;
# use the image's Python, never a downloaded one; build the environment where runtime expects it.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# Third-party dependencies first, from the lock and the members' metadata only: this layer is
# rebuilt when a dependency changes, not when our code does.
COPY pyproject.toml uv.lock ./
COPY shared/pyproject.toml shared/
COPY services/api/pyproject.toml services/api/
COPY services/status/pyproject.toml services/status/
COPY services/sender/pyproject.toml services/sender/
COPY services/messageapp/pyproject.toml services/messageapp/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace
# Then Herald itself, installed as wheels (not editable): the runtime needs no source tree.
COPY shared shared
COPY services services
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

FROM ${PYTHON_IMAGE} AS runtime
# A fixed, unprivileged uid/gid: Kubernetes' runAsUser and file ownership can rely on it.
RUN groupadd --system --gid 10001 herald \
    && useradd --system --uid 10001 --gid herald --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin herald
# Owned by root and read-only for herald: a compromised process cannot rewrite its own code.
COPY --from=build /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
USER 10001:10001

FROM runtime AS api
EXPOSE 8000
CMD ["herald-api", "--bind", "0.0.0.0:8000"]

FROM runtime AS status
EXPOSE 8001
CMD ["herald-status", "--bind", "0.0.0.0:8001"]

FROM runtime AS sender
# Metrics and /healthz (HERALD_SENDER_METRICS_PORT).
EXPOSE 9191
CMD ["herald-sender"]

FROM runtime AS messageapp
EXPOSE 3000
CMD ["herald-messageapp", "--bind", "0.0.0.0:3000"]

FROM runtime AS migrate
CMD ["herald-migrate"]
