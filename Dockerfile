# One image for every mode: docker run IMAGE <api|worker|all|migrate|simulator>
FROM node:24-slim
WORKDIR /app
ENV NODE_ENV=production
COPY package.json package-lock.json ./
# npm ci applies patches/ (a fix for postgres.js 3.4.9; see the README's "Dependencies").
COPY patches ./patches
RUN npm ci --omit=dev --no-audit --no-fund
COPY bin ./bin
COPY src ./src
COPY sql ./sql
COPY .env.example tsconfig.json ./
USER node
ENTRYPOINT ["bin/orchestrator"]
CMD ["all"]
