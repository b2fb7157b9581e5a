import t from 'tap'
import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort, runBinary, waitFor } from './support/processes.ts'

// The embedded PostgreSQL belongs to the process that started it. One left running by a
// process that died (SIGKILL, a crash) is found by the next start, which says so, naming the
// server's PID, and then owns it: it stops it when it stops. `bin/orchestrator db stop` stops
// one by hand.

type T = Parameters<typeof runBinary>[0]

const alive = (pid: number) => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

async function setup(t: T) {
  const dir = await mkdtemp(join(tmpdir(), 'orchestrator-owner-'))
  await chmod(dir, 0o755) // as root, Postgres runs as "postgres" and must reach its data directory
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const env = { EMBEDDED_PG_DIR: join(dir, 'data'), EMBEDDED_PG_PORT: String(await freePort()), LOG_LEVEL: 'info' }
  const postmaster = async () => Number((await readFile(join(dir, 'data', 'postmaster.pid'), 'utf8').catch(() => '')).split('\n')[0])
  t.teardown(async () => {
    const pid = await postmaster()
    if (pid && alive(pid)) process.kill(pid, 'SIGKILL')
  })
  return { env, postmaster }
}

async function startApi(t: T, env: Record<string, string>) {
  const port = await freePort()
  const proc = runBinary(t, 'api', { ...env, PORT: String(port) })
  await waitFor('the API', async () => (await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined))?.ok, 120_000)
  return proc
}

t.test('a server left by a killed process is adopted, said with its PID, and stopped with the next', async (t) => {
  const { env, postmaster } = await setup(t)
  const first = await startApi(t, env)
  const pid = await postmaster()
  t.ok(pid > 0 && alive(pid), 'the server runs')
  first.child.kill('SIGKILL')
  await first.exited
  t.ok(alive(pid), 'a killed process leaves it running')

  const second = await startApi(t, env)
  t.match(second.output(), new RegExp(`"postmasterPid":${pid}`), 'the start says which server it found')
  t.equal(await postmaster(), pid, 'the same server, reused')
  second.child.kill('SIGINT')
  t.equal(await second.exited, 0)
  await waitFor('the server to stop', async () => !alive(pid), 30_000)
  t.pass('stopped with the process that adopted it')
})

t.test('bin/orchestrator db stop stops one by hand', async (t) => {
  const { env, postmaster } = await setup(t)
  const first = await startApi(t, env)
  const pid = await postmaster()
  first.child.kill('SIGKILL')
  await first.exited
  t.ok(alive(pid))
  const stop = runBinary(t, 'db', env, ['stop'])
  t.equal(await stop.exited, 0, stop.output())
  t.notOk(alive(pid), 'stopped')
  t.match(stop.output(), new RegExp(`${pid}`), 'it says which')
  const again = runBinary(t, 'db', env, ['stop'])
  t.equal(await again.exited, 0, 'nothing running: nothing to do, and no error')
})
