// npm run bench:counts [-- --rows 1000000]
//
// What calls by status cost to read (GET /metrics, the status page) at `--rows` calls, and
// what keeping them costs writers, in one run against one database (DATABASE_URL's server, or
// an embedded one):
//   - read: count(*) … GROUP BY status over the calls table (what /metrics did before) against
//     the call_counts view (sql/006: folded counters plus the changes not folded yet), medians;
//   - write: inserting calls in chunks with the counting triggers on, and with them disabled;
//   - exactness: the view equals the GROUP BY at the end.
import { parseArgs } from 'node:util'
import postgres from 'postgres'
import { migrate } from '../../src/store/migrate.ts'
import { benchDatabase } from './database.ts'

const { values: args } = parseArgs({ options: { rows: { type: 'string', default: '1000000' }, chunk: { type: 'string', default: '50000' } } })
const ROWS = Number(args.rows)
const CHUNK = Number(args.chunk)

const database = await benchDatabase('counts')
const sql = postgres(database.url, { max: 2, onnotice: () => {} })

const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
const timed = async (fn: () => Promise<unknown>) => {
  const t0 = performance.now()
  await fn()
  return performance.now() - t0
}
let seq = 0
/** `n` calls, a fifth of them then cancelled: two statements, as the API's writes are. */
const insertChunk = async (n: number) => {
  const from = seq
  seq += n
  await sql`
    INSERT INTO calls (id, phone, script_id, metadata, expires_at, time_zones)
    SELECT gen_random_uuid(), '+1' || lpad(g::text, 10, '0'), 'bench', '{}', now() + interval '1 day', '{America/New_York}'
    FROM generate_series(${from}::bigint, ${from + n - 1}::bigint) g`
  await sql`
    UPDATE calls SET status = 'CANCELLED', ended_at = now(), updated_at = now(), next_attempt_at = NULL, waiting_for = NULL
    WHERE phone IN (SELECT '+1' || lpad(g::text, 10, '0') FROM generate_series(${from}::bigint, ${from + n - 1}::bigint, 5) g)`
}

try {
  await migrate(sql as never)
  // Writers: the same chunk with the counting triggers on and off, alternating, after a warm-up.
  await insertChunk(CHUNK)
  const withTriggers: number[] = []
  const without: number[] = []
  for (let i = 0; i < 3; i++) {
    withTriggers.push(await timed(() => insertChunk(CHUNK)))
    await sql`ALTER TABLE calls DISABLE TRIGGER calls_count_inserted, DISABLE TRIGGER calls_count_updated`
    without.push(await timed(() => insertChunk(CHUNK)))
    await sql`ALTER TABLE calls ENABLE TRIGGER calls_count_inserted, ENABLE TRIGGER calls_count_updated`
  }
  // The untriggered chunks are missing from the counters: start them again from the table.
  await sql`DELETE FROM call_status_changes`
  await sql`DELETE FROM call_status_counts`
  await sql`INSERT INTO call_status_counts (status, calls) SELECT status, count(*) FROM calls GROUP BY status`
  while (seq < ROWS) await insertChunk(Math.min(CHUNK, ROWS - seq))
  await sql`VACUUM ANALYZE calls`

  type Counts = Array<{ status: string; calls: string }>
  const groupBy = () => sql<Counts>`SELECT status, count(*)::bigint AS calls FROM calls GROUP BY status`
  const view = () => sql<Counts>`SELECT status, calls FROM call_counts`
  const unfolded = (await sql<{ n: number }[]>`SELECT count(*)::int AS n FROM call_status_changes`)[0]!.n
  const read = async () => {
    await groupBy()
    await view()
    const g: number[] = []
    const v: number[] = []
    for (let i = 0; i < 7; i++) g.push(await timed(groupBy))
    for (let i = 0; i < 101; i++) v.push(await timed(view))
    return { groupByMs: median(g), viewMs: median(v) }
  }
  const beforeFold = await read()
  await sql`SELECT fold_call_status_changes()`
  const afterFold = await read()
  const asMap = (rows: Counts) => JSON.stringify(Object.fromEntries(rows.map((r) => [r.status, Number(r.calls)]).sort()))
  const exact = asMap(await groupBy()) === asMap(await view())

  const round = (x: number, d = 2) => Math.round(x * 10 ** d) / 10 ** d
  const report = {
    rows: seq,
    unfoldedChangesBeforeFold: unfolded,
    readMs: { groupBy: round(afterFold.groupByMs), view: round(afterFold.viewMs, 3), viewWithUnfoldedChanges: round(beforeFold.viewMs, 3) },
    readRatio: { groupByToView: round(afterFold.groupByMs / afterFold.viewMs, 0) },
    writeMsPerChunk: { chunk: CHUNK, withTriggers: round(median(withTriggers)), withoutTriggers: round(median(without)) },
    writeOverhead: round(median(withTriggers) / median(without)),
    exact,
  }
  console.log(JSON.stringify(report, null, 2))
  console.log(
    `\ncounts at ${seq} calls: GROUP BY ${report.readMs.groupBy} ms, call_counts ${report.readMs.view} ms ` +
      `(${report.readRatio.groupByToView}x faster; ${report.readMs.viewWithUnfoldedChanges} ms with ${unfolded} changes unfolded); ` +
      `writes with the counting triggers take ${report.writeOverhead}x as long; view exact: ${exact}`,
  )
  if (!exact) process.exitCode = 1
} finally {
  await sql.end()
  await database.drop()
}
