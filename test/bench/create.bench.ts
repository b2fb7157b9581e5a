// npm run bench:create [-- --batches 10 --batch-size 1000 --singles 3000 --clients 16]
//
// How fast calls can be created, and how that compares with what PostgreSQL itself does, all in
// one run against one database (DATABASE_URL's server, or an embedded one):
//   - single: POST /calls, `--clients` requests at a time;
//   - batch: POST /calls/batch with `--batch-size` calls, one request at a time;
//   - bulk insert: the floor, one INSERT … SELECT of `--batch-size` rows into the same calls
//     table (same indexes and constraints), no jobs, no HTTP, no validation;
//   - bulk insert with jobs: the same plus one pg-boss insert of their jobs, in one transaction.
// The API process runs alone (no workers), so nothing else competes for the database. Reports
// calls per second for each and the ratios between them; absolute numbers vary by machine.
import { randomUUID } from 'node:crypto'
import { spawn, type ChildProcess } from 'node:child_process'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import postgres from 'postgres'
import { Queues } from '../../src/store/queues.ts'
import type { Tx } from '../../src/store/sql.ts'
import { silentLogger } from '../../src/platform/log.ts'
import { freePort } from '../support/processes.ts'
import { benchDatabase } from './database.ts'

const { values: args } = parseArgs({
  options: {
    batches: { type: 'string', default: '10' },
    'batch-size': { type: 'string', default: '1000' },
    singles: { type: 'string', default: '3000' },
    clients: { type: 'string', default: '16' },
  },
})
const BATCHES = Number(args.batches)
const SIZE = Number(args['batch-size'])
const SINGLES = Number(args.singles)
const CLIENTS = Number(args.clients)

const database = await benchDatabase('create')
const url = database.url
const sql = postgres(url, { max: 4, onnotice: () => {} })
const port = await freePort()
const base = `http://127.0.0.1:${port}`
const env = {
  PATH: process.env.PATH ?? '',
  HOME: process.env.HOME ?? '',
  DATABASE_URL: url,
  PORT: String(port),
  HOST: '127.0.0.1',
  LOG_LEVEL: 'error',
  WEBHOOK_SECRET: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
}
const procs: ChildProcess[] = []
const run = (mode: string) => {
  const child = spawn(join(import.meta.dirname, '..', '..', 'bin', 'orchestrator'), [mode], { env, stdio: 'inherit' })
  procs.push(child)
  return child
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
let phoneSeq = 0
const phone = () => `+1212${String(phoneSeq++ % 10_000_000).padStart(7, '0')}`
const perSecond = (n: number, ms: number) => Math.round((n / ms) * 1000)

const queue = new Queues(url, silentLogger, { supervise: false })
try {
  const migrated = run('migrate')
  await new Promise((r) => migrated.on('exit', r))
  run('api')
  while (!(await fetch(`${base}/readyz`).catch(() => undefined))?.ok) await sleep(100)
  await queue.start()

  // A warm-up of each path, not measured.
  await fetch(`${base}/calls`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ to: phone(), scriptId: 'warm' }) })
  const batchBody = () => JSON.stringify({ calls: Array.from({ length: SIZE }, () => ({ to: phone(), scriptId: 'bench', metadata: { source: 'bench' } })) })
  await fetch(`${base}/calls/batch`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: batchBody() })

  // 1. One call per request.
  let next = 0
  let t0 = performance.now()
  await Promise.all(
    Array.from({ length: CLIENTS }, async () => {
      while (next++ < SINGLES) {
        const res = await fetch(`${base}/calls`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ to: phone(), scriptId: 'bench', metadata: { source: 'bench' } }),
        })
        if (res.status !== 201) throw new Error(`POST /calls answered ${res.status}`)
        await res.arrayBuffer()
      }
    }),
  )
  const singleMs = performance.now() - t0

  // 2. Batches, one request at a time.
  const batchTimes: number[] = []
  for (let b = 0; b < BATCHES; b++) {
    const body = batchBody()
    t0 = performance.now()
    const res = await fetch(`${base}/calls/batch`, { method: 'POST', headers: { 'content-type': 'application/json' }, body })
    const answer = (await res.json()) as { created: number }
    batchTimes.push(performance.now() - t0)
    if (res.status !== 201 || answer.created !== SIZE) throw new Error(`POST /calls/batch answered ${res.status}, created ${answer.created}`)
  }
  const batchMs = batchTimes.reduce((a, b) => a + b, 0)

  // 3. The floor: PostgreSQL inserting the same rows by itself, in the same table.
  const bulk = async (withJobs: boolean) => {
    const times: number[] = []
    for (let b = 0; b < BATCHES; b++) {
      const rows = Array.from({ length: SIZE }, () => ({ id: randomUUID(), job_id: randomUUID(), phone: phone() }))
      t0 = performance.now()
      await sql.begin(async (tx) => {
        await tx`
          INSERT INTO calls (id, job_id, phone, script_id, metadata, expires_at, time_zones)
          SELECT r.id, r.job_id, r.phone, 'bench', '{"source":"bench"}', now() + interval '1 day', '{America/New_York}'
          FROM jsonb_to_recordset(${tx.json(rows)}) AS r(id uuid, job_id uuid, phone text)`
        if (withJobs) {
          await queue.calls.enqueueMany(tx as unknown as Tx, rows.map((r) => ({ id: r.id, jobId: r.job_id, phone: r.phone, startAfter: null })))
        }
      })
      times.push(performance.now() - t0)
    }
    return times.reduce((a, b) => a + b, 0)
  }
  const bulkMs = await bulk(false)
  const bulkJobsMs = await bulk(true)

  const report = {
    batchSize: SIZE,
    batches: BATCHES,
    callsPerSecond: {
      single: perSecond(SINGLES, singleMs),
      batch: perSecond(BATCHES * SIZE, batchMs),
      bulkInsertWithJobs: perSecond(BATCHES * SIZE, bulkJobsMs),
      bulkInsert: perSecond(BATCHES * SIZE, bulkMs),
    },
    batchRequestMs: { median: Math.round(batchTimes.sort((a, b) => a - b)[Math.floor(BATCHES / 2)]!), max: Math.round(batchTimes.at(-1)!) },
  }
  const c = report.callsPerSecond
  const ratio = (a: number, b: number) => Math.round((a / b) * 100) / 100
  console.log(JSON.stringify({ ...report, ratios: { batchToBulkInsert: ratio(c.batch, c.bulkInsert), batchToBulkWithJobs: ratio(c.batch, c.bulkInsertWithJobs), batchToSingle: ratio(c.batch, c.single) } }, null, 2))
  console.log(
    `\ncreate: batch ${c.batch}/s = ${ratio(c.batch, c.bulkInsert)} x a bare bulk insert (${c.bulkInsert}/s), ` +
      `${ratio(c.batch, c.bulkInsertWithJobs)} x bulk insert with jobs (${c.bulkInsertWithJobs}/s), ${ratio(c.batch, c.single)} x single POSTs (${c.single}/s)`,
  )
} finally {
  await queue.stop().catch(() => {})
  for (const p of procs) if (p.exitCode === null) p.kill('SIGTERM')
  await Promise.all(procs.map((p) => (p.exitCode === null ? new Promise((r) => p.on('exit', r)) : undefined)))
  await sql.end()
  await database.drop()
}
