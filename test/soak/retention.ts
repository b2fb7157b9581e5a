// npm run soak:retention [-- --calls 20000 --phones 5000 --rate 60 --limit 60 --workers 2 --retention 1m] [-- --quick]
//
// Memory and tables over a long run: with CALLBACK_RETENTION and EVENT_RETENTION at one minute
// (--quick: 4,000 calls, 10 s) and the simulator forgetting ended calls as soon, the callbacks, events and event
// deliveries stop growing once the first minute has passed, and no process's memory grows
// with the number of calls it has handled. One API, N workers and the provider simulator run
// as processes of their own (each one's RSS read from /proc) against a private embedded
// PostgreSQL; an event receiver takes every event. Every sample is printed: table sizes, row
// counts, RSS per process. It exits 1 when:
//   - a call is not final, or the provider saw the limit or the one-call-per-phone rule broken,
//     or a call request placed twice;
//   - callbacks, events or deliveries (rows, or MB on disk) in the last third of the run exceed
//     those of the middle third by more than a quarter (growth with the run, not level);
//   - a process's RSS in the last third exceeds its middle third's by more than a quarter and
//     by more than 32 MB;
//   - the simulator's memory (its entries) grows with the run.
// --quick (CI) judges rows and the simulator's entries, and reports disk and RSS: autovacuum
// wakes once a minute and a process warms up for about as long, which a one-minute run cannot
// tell from growth.
import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises'
import { createServer } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import postgres from 'postgres'
import { startEmbeddedPostgres } from '../../src/store/embedded.ts'
import { silentLogger } from '../../src/platform/log.ts'
import { freePort } from '../support/processes.ts'
import { runLogged, until, type LoggedProc } from './processes.ts'

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    calls: { type: 'string' },
    phones: { type: 'string', default: '5000' },
    workers: { type: 'string', default: '2' },
    limit: { type: 'string', default: '60' },
    rate: { type: 'string', default: '60' },
    'sample-seconds': { type: 'string' },
    /** CALLBACK_RETENTION, EVENT_RETENTION and SIMULATOR_FORGET_AFTER: one minute; --quick, 10 s. */
    retention: { type: 'string' },
    keep: { type: 'boolean', default: false },
  },
})
const CALLS = Number(args.calls ?? (args.quick ? 4000 : 20_000))
const PHONES = Number(args.phones)
const WORKERS = Number(args.workers)
const LIMIT = Number(args.limit)
const RATE = Number(args.rate)
const SAMPLE_MS = Number(args['sample-seconds'] ?? (args.quick ? 4 : 15)) * 1000
const RETENTION = args.retention ?? (args.quick ? '10s' : '1m')
const SECRET = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'
const started = Date.now()
const seconds = () => Math.round((Date.now() - started) / 1000)
const say = (line: string) => process.stdout.write(`retention ${seconds()}s: ${line}\n`)
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

const dir = await mkdtemp(join(tmpdir(), 'orchestrator-retention-'))
await chmod(dir, 0o755)
const pg = await startEmbeddedPostgres({ dir: join(dir, 'data'), port: await freePort(), persistent: false }, silentLogger)
say(`private PostgreSQL at ${pg.url.replace(/\/\/[^@]*@/, '//')}; logs in ${dir}`)

// The client's event receiver: it accepts everything and keeps only a count.
let eventsReceived = 0
const receiver = createServer((req, res) => {
  req.resume()
  req.on('end', () => {
    eventsReceived++
    res.writeHead(204).end()
  })
})
await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r))
const receiverUrl = `http://127.0.0.1:${(receiver.address() as { port: number }).port}/events`

const apiPort = await freePort()
const simPort = await freePort()
const base = `http://127.0.0.1:${apiPort}`
const env: Record<string, string> = {
  PATH: process.env.PATH ?? '',
  HOME: process.env.HOME ?? '',
  DATABASE_URL: pg.url,
  DATABASE_CONNECTIONS: '8',
  HOST: '127.0.0.1',
  PORT: String(apiPort),
  PROVIDER_BASE_URL: `http://127.0.0.1:${simPort}`,
  PUBLIC_BASE_URL: base,
  WEBHOOK_SECRET: SECRET,
  MAX_CONCURRENT_CALLS: String(LIMIT),
  WORKER_POLL_MS: '1000',
  LOG_LEVEL: 'warn',
  METRICS_PORT: '0',
  CALLBACK_RETENTION: RETENTION,
  EVENT_RETENTION: RETENTION,
  EVENT_WEBHOOK_URL: receiverUrl,
  EVENT_WEBHOOK_SECRET: 'whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD',
  EVENT_ALLOW_INSECURE_URLS: 'true',
  // This run judges retention, so deliveries must keep up with ~120 events a second. At the
  // default of 4 in flight to one endpoint they take 80 to 130 a second here (docs/scaling.md),
  // and whether the backlog grew decided the verdict from run to run.
  EVENT_MAX_IN_FLIGHT_PER_ENDPOINT: '16',
  SIMULATOR_PORT: String(simPort),
  SIMULATOR_MIN_DURATION_MS: '100',
  SIMULATOR_MAX_DURATION_MS: '400',
  SIMULATOR_STATUS_MIX: 'COMPLETED:8,FAILED:1,BUSY:0.5,NO_ANSWER:0.5',
  SIMULATOR_DUPLICATE_CALLBACK_RATE: '0.1',
  SIMULATOR_FORGET_AFTER: RETENTION,
}

type Proc = LoggedProc & { rss: number[] }
const procs: Proc[] = []
function run(mode: 'api' | 'worker' | 'simulator', name: string): Proc {
  const proc: Proc = { ...runLogged(mode, name, env, dir), rss: [] }
  procs.push(proc)
  return proc
}

run('simulator', 'simulator')
await until('the simulator', async () => (await fetch(`http://127.0.0.1:${simPort}/stats`)).ok, 120_000)
run('api', 'api')
await until('the API', async () => (await fetch(`${base}/readyz`)).ok, 120_000)
for (let i = 1; i <= WORKERS; i++) run('worker', `worker-${i}`)
const db = postgres(pg.url, { max: 2, onnotice: () => {} })

/** Resident memory of a process, in MB, from /proc. */
async function rssOf(pid: number | undefined): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '')
  return Math.round(Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024)
}

const TABLES = ['calls', 'call_dials', 'callbacks', 'events', 'event_deliveries', 'pgboss.job', 'simulator.calls'] as const
interface Sample {
  at: number
  created: number
  ended: number
  rows: { callbacks: number; events: number; deliveries: number }
  mb: Record<(typeof TABLES)[number], number>
  simulator: Record<string, number>
}
const samples: Sample[] = []
let created = 0
async function sample(): Promise<Sample> {
  const [row] = await db<{ callbacks: number; events: number; deliveries: number; ended: number; mb: Record<string, number> }[]>`
    SELECT (SELECT count(*)::int FROM callbacks) AS callbacks,
           (SELECT count(*)::int FROM events) AS events,
           (SELECT count(*)::int FROM event_deliveries) AS deliveries,
           (SELECT count(*)::int FROM calls WHERE status NOT IN ('PENDING', 'IN_PROGRESS')) AS ended,
           (SELECT json_object_agg(t, round(pg_total_relation_size(t::regclass) / 1048576.0, 1))
              FROM unnest(${TABLES as unknown as string[]}::text[]) AS t WHERE to_regclass(t) IS NOT NULL) AS mb`
  for (const p of procs) p.rss.push(await rssOf(p.child.pid))
  const simulator = (await fetch(`http://127.0.0.1:${simPort}/memory`).then((r) => r.json()).catch(() => ({}))) as Record<string, number>
  const s: Sample = { at: seconds(), created, ended: row!.ended, rows: { callbacks: row!.callbacks, events: row!.events, deliveries: row!.deliveries }, mb: row!.mb as Sample['mb'], simulator }
  samples.push(s)
  say(
    `created ${s.created}, ended ${s.ended} | rows: callbacks ${s.rows.callbacks}, events ${s.rows.events}, deliveries ${s.rows.deliveries} | MB: ${TABLES.map((t) => `${t} ${s.mb[t] ?? '-'}`).join(', ')} | RSS MB: ${procs.map((p) => `${p.name} ${p.rss.at(-1)}`).join(', ')} | simulator entries ${Object.values(simulator).reduce((a, b) => a + b, 0)}`,
  )
  return s
}

// The load: batches of 100, paced at RATE calls a second.
async function createAll() {
  const BATCH = 100
  for (let i = 0; i < CALLS; i += BATCH) {
    const due = started + (i / RATE) * 1000
    if (due > Date.now()) await sleep(due - Date.now())
    const calls = Array.from({ length: Math.min(BATCH, CALLS - i) }, (_, j) => ({ to: `+4420800${String((i + j) % PHONES).padStart(5, '0')}`, scriptId: 'retention' }))
    for (;;) {
      const res = await fetch(`${base}/calls/batch`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': `retention-${i}` },
        body: JSON.stringify({ calls }),
      }).catch(() => undefined)
      if (res?.status === 201 || res?.status === 200) break
      if (res && res.status !== 503) throw new Error(`POST /calls/batch answered ${res.status}: ${await res.text()}`)
      await sleep(500)
    }
    created += calls.length
  }
}

const violations: string[] = []
const fail = (what: string) => violations.push(what)
const sampler = setInterval(() => void sample().catch((err: unknown) => say(`sample failed: ${(err as Error).message}`)), SAMPLE_MS)
try {
  await createAll()
  say(`all ${CALLS} calls created; waiting for every call to end`)
  await until('every call to end', async () => (await db<{ n: number }[]>`SELECT count(*)::int AS n FROM calls WHERE status IN ('PENDING', 'IN_PROGRESS')`)[0]!.n === 0, 10 * 60_000)
} catch (err) {
  fail(`did not finish: ${(err as Error).message}`)
}
clearInterval(sampler)
const last = await sample()
const stats = (await (await fetch(`http://127.0.0.1:${simPort}/stats`)).json()) as Record<string, number>

// ---- the verdict: the guarantees, then level tables and memory --------------------------------
if (last.ended !== CALLS) fail(`${last.ended} of ${CALLS} calls final`)
if (stats.maxInFlight! > LIMIT) fail(`the provider had ${stats.maxInFlight} calls live at once (limit ${LIMIT})`)
if (stats.phoneOverlaps !== 0) fail(`${stats.phoneOverlaps} calls placed while their phone had one live`)
if (stats.keysAcceptedTwice !== 0 || stats.callsPlacedTwice !== 0) fail(`placed twice: ${stats.keysAcceptedTwice} keys, ${stats.callsPlacedTwice} calls`)
// The load's samples only (the drain at the end is quieter), in thirds.
const loaded = samples.filter((s) => s.created < CALLS)
const third = Math.floor(loaded.length / 3)
const middle = loaded.slice(third, 2 * third)
const end = loaded.slice(2 * third)
const max = (xs: number[]) => Math.max(0, ...xs)
const level: Array<[string, number, number]> = []
if (third < 2) fail(`too few samples under load (${loaded.length}) to tell growth from level: run longer or sample more often`)
else {
  for (const key of ['callbacks', 'events', 'deliveries'] as const) {
    const [m, e] = [max(middle.map((s) => s.rows[key])), max(end.map((s) => s.rows[key]))]
    level.push([`${key} rows`, m, e])
    if (e > m * 1.25) fail(`${key}: ${e} rows in the last third of the run, ${m} in the middle third: growing, not level`)
  }
  // On disk too: space freed by the deletes is reused (autovacuum), not added to.
  for (const table of ['callbacks', 'events', 'event_deliveries'] as const) {
    const [m, e] = [max(middle.map((s) => s.mb[table])), max(end.map((s) => s.mb[table]))]
    level.push([`${table} MB`, m, e])
    // Autovacuum wakes once a minute, and a process's memory warms up for about as long: a
    // --quick run reports both, and judges only the full run by them.
    if (!args.quick && e > m * 1.25 && e - m > 1) fail(`${table}: ${e} MB in the last third of the run, ${m} MB in the middle third: growing, not level`)
  }
  const simEntries = (s: Sample) => Object.values(s.simulator).reduce((a, b) => a + b, 0)
  const [sm, se] = [max(middle.map(simEntries)), max(end.map(simEntries))]
  level.push(['simulator entries', sm, se])
  if (se > sm * 1.25) fail(`the simulator's memory: ${se} entries in the last third, ${sm} in the middle third`)
  for (const p of procs) {
    const rss = p.rss.slice(0, loaded.length)
    const [m, e] = [max(rss.slice(third, 2 * third)), max(rss.slice(2 * third))]
    level.push([`${p.name} RSS MB`, m, e])
    if (!args.quick && e > m * 1.25 && e - m > 32) fail(`${p.name}: RSS ${e} MB in the last third, ${m} MB in the middle third`)
  }
}

for (const p of procs) p.child.kill('SIGTERM')
await Promise.all(procs.map((p) => p.exited))
await db.end({ timeout: 1 })
receiver.close()
await pg.stop()
if (!args.keep) await rm(dir, { recursive: true, force: true })

console.log('\n| | middle third (max) | last third (max) |\n|---|---|---|')
for (const [what, m, e] of level) console.log(`| ${what} | ${m} | ${e} |`)
console.log(`\n${CALLS} calls in ${seconds()} s; provider: ${stats.accepted} placed, at most ${stats.maxInFlight} live (limit ${LIMIT}); ${eventsReceived} event deliveries received`)
if (violations.length) {
  console.log(`\nVIOLATIONS (${violations.length}):\n${violations.map((v) => `  - ${v}`).join('\n')}`)
  process.exit(1)
}
console.log('\nlevel: tables and memory stopped growing with the run; every guarantee held')
