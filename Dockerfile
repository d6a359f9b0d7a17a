# syntax=docker/dockerfile:1
# Two stages: compile TypeScript with dev dependencies, then ship only dist/, migrations and
# production dependencies on a slim Node LTS base, running as the unprivileged `node` user.

FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
# The Sentry CLI (22 MB) comes in only for @sentry/bundler-plugins' build-time uploads; the runtime
# SDK, loaded when SYNCV3_SENTRY_DSN is set, never uses it.
RUN npm run build && npm prune --omit=dev --no-audit --no-fund && rm -rf node_modules/sentry

FROM node:24-bookworm-slim
# LANG: the embedded PostgreSQL's cluster and its messages are UTF-8 (initdb reads the locale).
ENV NODE_ENV=production \
    LANG=C.UTF-8 \
    SYNCV3_BINDADDR=0.0.0.0:8008 \
    SYNCV3_DATA_DIR=/data \
    SYNCV3_REQUIRE_PERSISTENT_DATA=1
WORKDIR /app
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY migrations ./migrations
COPY .env.example ./
COPY web ./web
# /data holds the embedded database and generated secret when SYNCV3_DB is unset. It is not a
# VOLUME: an anonymous volume is lost to the next container just the same, so the proxy refuses
# to start the embedded database unless a volume is mounted here (SYNCV3_REQUIRE_PERSISTENT_DATA;
# see README, "Running in a container").
RUN mkdir -p /data && chown node:node /data
USER node
EXPOSE 8008
# /ready where SYNCV3_BINDADDR (host:port, :port or a unix socket) and SYNCV3_TLS_* say the proxy
# listens: unhealthy when the database is gone. Node itself, since the slim image has no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["node", "dist/healthcheck.js"]
# Node directly (not npm) so SIGTERM reaches the proxy and it drains gracefully. The stop fits
# Docker's default 10 s; raise it (docker stop -t, compose stop_grace_period) with SYNCV3_SHUTDOWN_GRACE_SECS.
CMD ["node", "dist/main.js"]
