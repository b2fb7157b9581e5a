// npm run bench [-- --quick] [-- --only create|flow|saturation|backlog|workers|large]
//
// Every benchmark scenario in one run, on one PostgreSQL server (DATABASE_URL's, or an embedded
// one started for the run), each scenario on a fresh database of its own. Each scenario measures
// the service and its baseline back to back on that database and reports medians, p99s, ratios
// and the targets they are held to (see docs/performance.md). A missed target is
// reported, not fatal; a broken invariant (the provider saw more than the limit in flight, two
// calls for one phone, a request placed twice, or a call was lost) makes the run exit 1.
// --quick: small sizes, under a minute, for CI.
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { benchServer } from './database.ts'
import { machine, met, textTable, writeReport, type Scenario, type ScenarioResult } from './report.ts'
import { backlog } from './scenarios/backlog.ts'
import { create } from './scenarios/create.ts'
import { flow } from './scenarios/flow.ts'
import { saturation } from './scenarios/saturation.ts'
import { workers } from './scenarios/workers.ts'
import { large } from './scenarios/large.ts'

const SCENARIOS: Record<string, Scenario> = { create, flow, saturation, backlog, workers, large }

const { values: args } = parseArgs({ options: { quick: { type: 'boolean', default: false }, only: { type: 'string', multiple: true } } })
const only = args.only ?? Object.keys(SCENARIOS)
for (const name of only) if (!SCENARIOS[name]) throw new Error(`--only ${name}: no such scenario (${Object.keys(SCENARIOS).join(', ')})`)

const startedAt = new Date().toISOString()
const t0 = performance.now()
const server = await benchServer()
const results: ScenarioResult[] = []
try {
  for (const name of only) {
    results.push(
      await SCENARIOS[name]!({
        quick: args.quick,
        database: (db) => server.database(db),
        log: (message) => console.error(`[${((performance.now() - t0) / 1000).toFixed(1)} s] ${message}`),
      }),
    )
  }
} finally {
  await server.stop()
}

const run = { mode: args.quick ? 'quick' : 'full', startedAt, seconds: Math.round((performance.now() - t0) / 100) / 10, machine: machine(server.version), results }
const files = await writeReport(join(import.meta.dirname, '..', '..', 'bench-results'), run)
const m = run.machine
console.log(`\n${m.cpu}, ${m.cores} cores; Node ${m.node}; PostgreSQL ${m.postgres}; ${run.mode} run, ${run.seconds} s\n`)
console.log(textTable(results))
const missed = results.flatMap((r) => r.figures.filter((f) => met(f) === false).map((f) => `${r.scenario}: ${f.measure}`))
const broken = results.flatMap((r) => r.violations.map((v) => `${r.scenario}: ${v}`))
if (missed.length) console.log(`\nTargets missed (reported, not fatal): ${missed.length}`)
console.log(`\nResults: ${files.json}\n         ${files.markdown}`)
if (broken.length) {
  console.log(`\nINVARIANTS BROKEN:\n${broken.map((b) => `  - ${b}`).join('\n')}`)
  process.exitCode = 1
}
