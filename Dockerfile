# syntax=docker/dockerfile:1
# Two stages: compile TypeScript with dev dependencies, then ship only dist/, migrations and
# production dependencies on a slim Node LTS base, running as the unprivileged `node` user.

FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build && npm prune --omit=dev --no-audit --no-fund

FROM node:24-bookworm-slim
ENV NODE_ENV=production \
    SYNCV3_BINDADDR=0.0.0.0:8008 \
    SYNCV3_DATA_DIR=/data
WORKDIR /app
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY migrations ./migrations
COPY web ./web
# /data holds the embedded database and generated secret when SYNCV3_DB is unset.
RUN mkdir -p /data && chown node:node /data
VOLUME ["/data"]
USER node
EXPOSE 8008
# Node's global fetch: no curl in the slim image. Assumes the default TCP SYNCV3_BINDADDR port.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:8008/health').then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# Node directly (not npm) so SIGTERM reaches the proxy and it drains gracefully.
CMD ["node", "dist/main.js"]
