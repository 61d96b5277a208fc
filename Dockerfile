# syntax=docker/dockerfile:1
# One image for both Mail-Plus commands: `mailplus operator` and `mailplus relay` (and the rest of
# the CLI). The code is TypeScript run by Node 24's type stripping: there is no build step, only
# production dependencies are installed. Build:
#   docker build --build-arg VERSION=$(node -p 'require("./package.json").version') \
#     --build-arg REVISION=$(git rev-parse HEAD) -t mailplus:dev .
ARG NODE_IMAGE=node:24-bookworm-slim

# --- production dependencies ---------------------------------------------------------------
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
# --omit=dev: no TypeScript, Biome, vitest or the pinned `node` devDependency (the image has Node 24).
# --ignore-scripts: no dependency needs an install script at runtime.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
  && npm cache clean --force
# CycloneDX SBOM of exactly these dependencies (npm sbom, from the lock file), shipped in the image.
COPY scripts/sbom.sh ./scripts/
RUN bash scripts/sbom.sh /app/sbom.cdx.json

# --- runtime -------------------------------------------------------------------------------
FROM ${NODE_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="mailplus" \
  org.opencontainers.image.description="Mail-Plus: Kubernetes-native inbound mail routing (operator and SMTP relay)" \
  org.opencontainers.image.source="https://github.com/mail-plus/mail-plus" \
  org.opencontainers.image.licenses="Apache-2.0" \
  org.opencontainers.image.version="${VERSION}" \
  org.opencontainers.image.revision="${REVISION}"
ENV NODE_ENV=production
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY --from=deps /app/sbom.cdx.json ./
COPY package.json THIRD_PARTY_NOTICES* ./
COPY bin ./bin
COPY contract ./contract
COPY platform ./platform
COPY operator ./operator
COPY relay ./relay
COPY cli ./cli
# Warm Node's compile cache at build time: it keeps the type-stripped source of every module, so
# pods never load Node's TypeScript stripper (a WebAssembly module that stays resident, ~28 MB of
# RSS per process). Node keeps a cache per set of V8 flags: the script loads every module with the
# flags of each command (bin/warm-compile-cache.js).
ENV NODE_COMPILE_CACHE=/app/.node-compile-cache
RUN node bin/warm-compile-cache.js
# Numeric non-root UID/GID (matches the chart's runAsUser), so runAsNonRoot can verify it.
# The files stay root-owned and read-only for this user: the root filesystem can be read-only.
USER 10001:10001
# SMTP (unprivileged; the Service maps 25), relay admin HTTP, operator metrics.
EXPOSE 2525 9090 8080
# No HEALTHCHECK: Kubernetes probes /healthz and /readyz (the chart sets them).
ENTRYPOINT ["node", "bin/mailplus.js"]
CMD ["--help"]
