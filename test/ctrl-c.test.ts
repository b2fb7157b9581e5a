import t from 'tap'
import { spawn } from 'node:child_process'
import { chmod, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import postgres from 'postgres'
import { startEmbeddedPostgres } from '../src/store/embedded.ts'
import { silentLogger } from '../src/platform/log.ts'
import { freePort, waitFor } from './support/processes.ts'

// Ctrl-C on `npm start`: a terminal sends SIGINT to the whole foreground process group. The
// embedded PostgreSQL runs in a group of its own, so only our process gets it: it stops its
// worker (which records that it stopped) and its API, then the server, quietly, and exits 0.

t.test('SIGINT to the process group of `bin/orchestrator all` on an embedded PostgreSQL', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'orchestrator-ctrl-c-'))
  await chmod(dir, 0o755) // as root, Postgres runs as "postgres" and must reach its data directory
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const pgPort = await freePort()
  const port = await freePort()
  const child = spawn(join(import.meta.dirname, '..', 'bin', 'orchestrator'), ['all'], {
    env: {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '',
      EMBEDDED_PG_DIR: join(dir, 'data'),
      EMBEDDED_PG_PORT: String(pgPort),
      PORT: String(port),
      HOST: '127.0.0.1',
      SIMULATOR_MIN_DURATION_MS: '50',
      SIMULATOR_MAX_DURATION_MS: '100',
      LOG_LEVEL: 'info',
    },
    detached: true, // a process group of its own, as a shell gives a foreground job
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let output = ''
  child.stdout!.on('data', (c) => (output += c))
  child.stderr!.on('data', (c) => (output += c))
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  t.teardown(() => {
    if (child.exitCode === null) process.kill(-child.pid!, 'SIGKILL')
  })

  const base = `http://127.0.0.1:${port}`
  await waitFor('the API', async () => (await fetch(`${base}/readyz`).catch(() => undefined))?.ok, 120_000)
  const created = (await (await fetch(`${base}/calls`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ to: '+966501234567', scriptId: 'ctrl-c' }),
  })).json()) as { id: string }
  await waitFor('the call to complete', async () => {
    const call = (await (await fetch(`${base}/calls/${created.id}`)).json()) as { status: string }
    return call.status === 'COMPLETED'
  }, 60_000)

  process.kill(-child.pid!, 'SIGINT') // what Ctrl-C in a terminal does
  t.equal(await exited, 0, 'a clean exit')
  const errors = output.split('\n').filter((line) => /"level":"error"/.test(line))
  t.same(errors, [], 'no error on the way out')
  t.notMatch(output, /terminating connection due to administrator command/)
  t.match(output, /worker stopped/)

  // The data directory tells the rest: the server was stopped after the worker recorded its stop.
  const server = await startEmbeddedPostgres({ dir: join(dir, 'data'), port: pgPort }, silentLogger)
  t.teardown(() => server.stop())
  const db = postgres(server.url, { max: 1, onnotice: () => {} })
  t.teardown(() => db.end({ timeout: 1 }))
  const workers = await db<{ stopped_at: Date | null }[]>`SELECT stopped_at FROM workers`
  t.equal(workers.length, 1)
  t.ok(workers[0]!.stopped_at, 'the worker recorded that it stopped')
})
