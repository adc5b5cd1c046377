# syntax=docker/dockerfile:1
# Herald's images: one build, one target per deployable (docs/operations.md).
#
#   docker build --target api -t herald/api .      # api | status | sender | messageapp | migrate
#
# Each deployable has a build stage of its own that resolves exactly uv.lock into a virtualenv
# holding only that package and what it declares (`uv sync --package`); its final stage copies
# only that virtualenv onto a slim Python, so uv, build backends, caches and the other
# deployables' code and libraries never reach it.

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
# The lock and every member's metadata (uv reads the whole workspace), but no source yet.
COPY pyproject.toml uv.lock ./
COPY shared/pyproject.toml shared/
COPY services/api/pyproject.toml services/api/
COPY services/status/pyproject.toml services/status/
COPY services/sender/pyproject.toml services/sender/
COPY services/messageapp/pyproject.toml services/messageapp/

# One build stage per deployable. In each: third-party dependencies first (rebuilt when a
# dependency changes, not when our code does), then the package and herald-core installed as
# wheels (not editable): the runtime needs no source tree.

FROM build AS build-api
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace --package herald-api
COPY shared shared
COPY services/api services/api
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package herald-api

FROM build AS build-status
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace --package herald-status
COPY shared shared
COPY services/status services/status
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package herald-status

FROM build AS build-sender
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace --package herald-sender
COPY shared shared
COPY services/sender services/sender
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package herald-sender

FROM build AS build-messageapp
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace --package herald-messageapp
COPY shared shared
COPY services/messageapp services/messageapp
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package herald-messageapp

FROM build AS build-migrate
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace --package herald-core
COPY shared shared
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package herald-core

FROM ${PYTHON_IMAGE} AS runtime
# A fixed, unprivileged uid/gid: Kubernetes' runAsUser and file ownership can rely on it.
RUN groupadd --system --gid 10001 herald \
    && useradd --system --uid 10001 --gid herald --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin herald
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
USER 10001:10001

# Each final stage: its own virtualenv, owned by root and read-only for herald (COPY ignores
# USER), so a compromised process cannot rewrite its own code.
FROM runtime AS api
COPY --from=build-api /app/.venv /app/.venv
EXPOSE 8000
CMD ["herald-api", "--bind", "0.0.0.0:8000"]

FROM runtime AS status
COPY --from=build-status /app/.venv /app/.venv
EXPOSE 8001
CMD ["herald-status", "--bind", "0.0.0.0:8001"]

FROM runtime AS sender
COPY --from=build-sender /app/.venv /app/.venv
# Metrics and /healthz (HERALD_SENDER_METRICS_PORT).
EXPOSE 9191
CMD ["herald-sender"]

FROM runtime AS messageapp
COPY --from=build-messageapp /app/.venv /app/.venv
EXPOSE 3000
CMD ["herald-messageapp", "--bind", "0.0.0.0:3000"]

FROM runtime AS migrate
# herald-migrate is herald-core's: the migrations ship in its wheel.
COPY --from=build-migrate /app/.venv /app/.venv
CMD ["herald-migrate"]
