# One image for every mlmesh service; docker-compose.yml picks the service with its command.
# (Not built on the development machine, which has no Docker engine; see README.)

# npm packages, with a compiler for better-sqlite3 when no prebuilt binary can be downloaded.
FROM node:20-bookworm-slim AS packages
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
# onnxruntime-node's install script (CUDA downloads) is disabled by allowScripts in package.json.
RUN npm ci --omit=dev --no-audit --no-fund

FROM node:20-bookworm-slim
WORKDIR /app
COPY --from=packages /app/node_modules node_modules
COPY package.json package-lock.json tsconfig.json ./
COPY bin bin
COPY scripts/build.mjs scripts/build-freshness.mjs scripts/
COPY gen gen
COPY services services
COPY models models
# The services compiled to JavaScript (dist/): they start without tsx's loader.
RUN node scripts/build.mjs --force
# Containers are reached over the compose network, so they listen on every interface.
ENV HOST=0.0.0.0
# Databases and artifacts (a volume in compose) belong to the user the services run as.
RUN mkdir -p /app/data && chown node:node /app/data
USER node
ENTRYPOINT ["node", "bin/mlmesh.js"]
