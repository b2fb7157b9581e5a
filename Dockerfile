# One image for every mode: docker run IMAGE <api|worker|all|migrate|simulator>
# Two stages: dependencies are installed where npm and its cache live, and the
# image that runs holds only production dependencies and our sources, owned by root and run as
# the unprivileged "node" user. No build step: Node 24 runs the TypeScript sources directly.

FROM node:24-slim AS deps
WORKDIR /app
ENV NODE_ENV=production
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

FROM node:24-slim
WORKDIR /app
ENV NODE_ENV=production
COPY --from=deps /app/node_modules ./node_modules
COPY package.json package-lock.json .env.example tsconfig.json ./
COPY bin ./bin
COPY src ./src
COPY sql ./sql
# "all" without DATABASE_URL keeps an embedded PostgreSQL's data here: the one place node writes.
RUN mkdir .data && chown node:node .data
USER node
# The API (PORT) and a worker's own metrics and health check (METRICS_PORT).
EXPOSE 3000 9464
ENTRYPOINT ["bin/orchestrator"]
CMD ["all"]
