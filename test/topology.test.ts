import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { parse } from 'yaml'
import { createTestDatabase } from './support/db.ts'
import { WEBHOOK_SECRET } from './support/harness.ts'
import { freePort, runBinary, waitFor, type Proc } from './support/processes.ts'

// No Docker engine runs here, so this starts compose.yaml's services by hand: each service's
// own command and environment (its ${VAR:-default}s resolved, the service names it uses for
// hosts pointed at 127.0.0.1 ports), then probes each with the URL its health check uses. Calls
// go through the API, the workers and the simulator as they would under compose, and each
// worker's metrics port answers. What it cannot check: the image build itself (see the
// Dockerfile checks at the end) and Docker's networking.

const root = join(import.meta.dirname, '..')

interface Service {
  command?: string[]
  environment?: Record<string, string>
  healthcheck?: { test: string[] }
  deploy?: { replicas?: number }
  profiles?: string[]
  image?: string
}

/** What the test sets for compose's required variables, `${NAME:?message}`. */
const REQUIRED: Record<string, string> = {
  WEBHOOK_SECRET,
  API_TOKENS: 'a-token-of-32-characters-or-more!',
  POSTGRES_PASSWORD: 'superuser-password',
  ORCHESTRATOR_DB_PASSWORD: 'service-password',
}

/** `${NAME:-default}` and `${NAME:?message}` as compose reads them, with REQUIRED set in the environment. */
const interpolate = (value: string) =>
  value.replace(/\$\{([A-Z_]+):-([^}]*)\}/g, '$2').replace(/\$\{([A-Z_]+):\?[^}]*\}/g, (_, name: string) => {
    if (!(name in REQUIRED)) throw new Error(`compose.yaml requires ${name}, which this test does not set`)
    return REQUIRED[name]!
  })

t.test('compose.yaml, started by hand: migrate, simulator, API and two workers serve calls and answer their health checks', async (t) => {
  const compose = parse(await readFile(join(root, 'compose.yaml'), 'utf8'), { merge: true }) as { services: Record<string, Service> }
  const services = compose.services
  t.same(Object.keys(services).sort(), ['api', 'migrate', 'postgres', 'prometheus', 'simulator', 'worker'])
  t.same(services.prometheus!.profiles, ['monitoring'], 'Prometheus only on request')
  const declared = services.api!.environment ?? {}
  for (const name of ['API_TOKENS', 'WEBHOOK_SECRET']) {
    t.match(String(declared[name]), new RegExp(`^\\$\\{${name}:\\?`), `${name} is required: compose refuses to start without it, and no value is committed`)
  }
  // The service connects as "orchestrator", which the init script makes without any power
  // beyond its own database; the superuser's password is for administrators.
  t.match(String(declared.DATABASE_URL), /^postgres:\/\/orchestrator:\$\{ORCHESTRATOR_DB_PASSWORD:\?/)
  const init = (compose as unknown as { configs: Record<string, { content: string }> }).configs['service-role']!.content
  t.match(init, /CREATE ROLE orchestrator LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'password';/)
  t.match(init, /CREATE DATABASE orchestrator OWNER orchestrator;/)
  t.notMatch(JSON.stringify(services.postgres!.environment), /POSTGRES_USER/, 'the superuser keeps the image\'s own name, not the service\'s')

  const db = await createTestDatabase(t)
  // Where each service name compose resolves is reachable here.
  const ports = { api: await freePort(), simulator: await freePort() }
  const rewrite = (value: string) =>
    interpolate(value)
      .replace(/postgres:\/\/[^@]+@postgres:5432\/orchestrator/, db.url)
      .replace('http://simulator:4010', `http://127.0.0.1:${ports.simulator}`)
      .replace('http://api:3000', `http://127.0.0.1:${ports.api}`)
  const envOf = (service: Service, own: Record<string, string>) => ({
    ...Object.fromEntries(Object.entries(service.environment ?? {}).map(([k, v]) => [k, rewrite(String(v))])),
    HOST: '127.0.0.1',
    DATABASE_CONNECTIONS: '8', // the shared test server has 100 connections for every test at once
    ...own,
  })
  /** The URL a health check fetches, on the port this process got instead of its compose port. */
  const probeOf = (service: Service, port: number) => {
    const url = /fetch\('([^']+)'\)/.exec(service.healthcheck?.test.join(' ') ?? '')?.[1]
    if (!url) throw new Error('health check without a URL')
    return url.replace(/:\d+\//, `:${port}/`)
  }
  const healthy = (name: string, url: string) => waitFor(`${name} healthy at ${url}`, async () => (await fetch(url).catch(() => undefined))?.ok, 90_000)

  const migrate = runBinary(t, services.migrate!.command![0]!, envOf(services.migrate!, {}))
  t.equal(await migrate.exited, 0, `migrate exits 0 (${migrate.output().slice(-300)})`)

  const sim = services.simulator!
  const simulator = runBinary(t, sim.command![0]!, envOf(sim, { SIMULATOR_PORT: String(ports.simulator), SIMULATOR_MIN_DURATION_MS: '100', SIMULATOR_MAX_DURATION_MS: '300' }))
  await healthy('simulator', probeOf(sim, ports.simulator))

  const apiService = services.api!
  const api = runBinary(t, apiService.command![0]!, envOf(apiService, { PORT: String(ports.api) }))
  await healthy('api', probeOf(apiService, ports.api))

  const workerService = services.worker!
  const replicas = workerService.deploy?.replicas ?? 1
  t.equal(replicas, 2)
  const metricsPorts: number[] = []
  const workers: Proc[] = []
  for (let i = 0; i < replicas; i++) {
    const port = await freePort()
    metricsPorts.push(port)
    workers.push(runBinary(t, workerService.command![0]!, envOf(workerService, { METRICS_PORT: String(port) })))
  }
  for (const port of metricsPorts) await healthy('worker', probeOf(workerService, port))

  const base = `http://127.0.0.1:${ports.api}`
  const created = await Promise.all(
    Array.from({ length: 20 }, (_, i) =>
      fetch(`${base}/calls`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${REQUIRED.API_TOKENS}` },
        body: JSON.stringify({ to: `+1415555${String(1000 + i)}`, scriptId: 'compose' }),
      }).then((r) => r.status),
    ),
  )
  t.ok(created.every((s) => s === 201), 'the API takes calls')
  const done = await waitFor('every call to end', async () => {
    const m = (await (await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${REQUIRED.API_TOKENS}` } })).json()) as { calls: Record<string, number> }
    return m.calls.COMPLETED === 20 ? m : undefined
  }, 120_000)
  t.equal(done.calls.COMPLETED, 20, 'dialed by the workers through the simulator, completed by its signed callbacks')

  const claims = await Promise.all(
    metricsPorts.map(async (port) => Number(/^orchestrator_claims_total (\d+)$/m.exec(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text())?.[1])),
  )
  t.equal(claims.reduce((a, b) => a + b, 0), 20, `the workers' own metrics add up to every claim (${claims.join(' + ')})`)

  for (const proc of [...workers, api, simulator]) proc.child.kill('SIGTERM')
  for (const proc of [...workers, api, simulator]) t.equal(await proc.exited, 0, 'stops cleanly on SIGTERM, as docker stop sends')
})

t.test('the Dockerfile builds a production image: two stages, no dev dependencies, not root', async (t) => {
  const dockerfile = await readFile(join(root, 'Dockerfile'), 'utf8')
  const froms = dockerfile.match(/^FROM .+$/gm) ?? []
  t.equal(froms.length, 2, 'a dependencies stage and the image that runs')
  t.match(dockerfile, /npm ci --omit=dev/, 'production dependencies only')
  t.match(dockerfile, /^USER node$/m, 'runs as the unprivileged node user')
  t.match(dockerfile, /^ENTRYPOINT \["bin\/orchestrator"\]$/m)
  const dockerignore = await readFile(join(root, '.dockerignore'), 'utf8')
  for (const kept of ['node_modules', '.git', '.env', 'test']) t.ok(dockerignore.split('\n').includes(kept), `${kept} stays out of the build context`)
  // Every file the image copies exists.
  for (const [, paths] of dockerfile.matchAll(/^COPY (?!--from)(.+) \S+$/gm)) {
    for (const path of paths!.split(' ')) await t.resolves(readFile(join(root, path)).catch(async (err) => {
      if ((err as NodeJS.ErrnoException).code === 'EISDIR') return
      throw err
    }), `${path} exists`)
  }
})
