# syntax=docker/dockerfile:1
# One image for the Tether gateway (default command) and the reference LLM worker
# (`node dist/src/llm-worker/main.js`); docker-compose.yml runs both.
#
# Debian (glibc), not Alpine: the uWebSockets.js package ships glibc binaries only, and on
# musl it silently falls back to its slow JavaScript implementation (README, "About the
# uWebSockets.js dependency"). Tether logs which binary it loaded at start-up.
ARG NODE_IMAGE=node:20-bookworm-slim

# --- build: compile TypeScript with the dev dependencies, then drop them ------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /app
# Manifests first, so the dependency layer is rebuilt only when they change.
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY machines ./machines
COPY workers ./workers
COPY src ./src
RUN npm run build \
 && npm prune --omit=dev --no-audit --no-fund

# --- runtime -------------------------------------------------------------------------------
FROM ${NODE_IMAGE}
# tini as PID 1. The kernel ignores signals a namespace's PID 1 has no handler for, so node
# as PID 1 would survive the watchdog's SIGUSR2 (and even its SIGKILL fallback), and a
# stalled gateway would never be restarted. Under tini, node ends with the signal and tini
# exits 140 (128 + SIGUSR2), which the restart policy acts on.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/*
ENV NODE_ENV=production \
    PORT=8000 \
    DATA_DIR=/var/lib/tether
WORKDIR /app
# package.json carries "type": "module", which the compiled ESM files need.
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# The application files stay root-owned and read-only to the process; only DATA_DIR (the
# embedded PostgreSQL and generated secret, unused when DATABASE_URL and AUTH_SECRET are
# set) is the node user's.
RUN install -d -o node -g node -m 0700 /var/lib/tether
USER node
EXPOSE 8000
# Liveness only: the process answers HTTP. docker-compose.yml checks /readyz instead, for
# ordering; the worker (no HTTP server) turns this check off.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 8000) + '/livez').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["node", "dist/src/main.js"]
