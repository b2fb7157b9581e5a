import { readFileSync } from 'node:fs'
import { mkdir, writeFile } from 'node:fs/promises'
import { cpus } from 'node:os'
import { join } from 'node:path'
import type { ProcessUsage } from './measure.ts'
import type { ProviderRecord } from './stack.ts'

// What a scenario hands back and how the run is written out: a table on stdout, the same
// table as Markdown, and everything as JSON, under bench-results/ (gitignored).

export interface Target {
  op: '>=' | '<='
  value: number
}

export interface Figure {
  measure: string
  /** The median (or the one value, for a rate). */
  value: number
  p99?: number | undefined
  unit: string
  target?: Target | undefined
  /** Which of value or p99 the target is about; value by default. */
  targetOn?: 'value' | 'p99'
}

export interface ScenarioResult {
  scenario: string
  params: Record<string, unknown>
  figures: Figure[]
  /** The simulator's record. */
  provider: ProviderRecord | null
  /** Invariants broken: any makes the run exit non-zero. */
  violations: string[]
  resources?: Record<string, ProcessUsage & { cpuSecondsPerCall?: number }> | undefined
  seconds: number
}

export const met = (f: Figure): boolean | undefined => {
  if (!f.target) return undefined
  const x = f.targetOn === 'p99' ? f.p99 : f.value
  if (x === undefined || !Number.isFinite(x)) return false
  return f.target.op === '>=' ? x >= f.target.value : x <= f.target.value
}

export function machine(postgresVersion: string) {
  let cpu: string | undefined
  try {
    cpu = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]
  } catch {}
  return { cpu: cpu ?? cpus()[0]?.model ?? 'unknown', cores: cpus().length, node: process.version, postgres: postgresVersion }
}

const fmt = (x: number | undefined) => (x === undefined ? '' : !Number.isFinite(x) ? String(x) : Math.abs(x) >= 100 ? String(Math.round(x)) : String(Math.round(x * 100) / 100))
const targetText = (f: Figure) => (f.target ? `${f.targetOn === 'p99' ? 'p99 ' : ''}${f.target.op === '>=' ? '≥' : '≤'} ${f.target.value}` : '')
const verdict = (f: Figure) => ({ true: 'pass', false: 'MISS', undefined: '' })[String(met(f)) as 'true']

type Table = { header: string[]; rows: string[][]; numeric: number[] }

function figureTable(results: ScenarioResult[]): Table {
  const rows = results.flatMap((r) => r.figures.map((f) => [r.scenario, f.measure, fmt(f.value), fmt(f.p99), f.unit, targetText(f), verdict(f)]))
  return { header: ['scenario', 'measure', 'median / value', 'p99', 'unit', 'target', 'result'], rows, numeric: [2, 3] }
}

/** The simulator's record for every scenario, and whether its invariants held. */
function providerTable(results: ScenarioResult[]): Table {
  const rows = results.map((r) => {
    const p = r.provider
    const cells = p ? [p.placed, p.maxInFlight, p.maxInFlightPerPhone, p.phoneOverlaps, p.keysAcceptedTwice, p.callsPlacedTwice].map(String) : ['', '', '', '', '', '']
    return [r.scenario, ...cells, r.violations.length ? `VIOLATED: ${r.violations.join('; ')}` : 'held']
  })
  return { header: ['scenario', 'placed', 'max in flight', 'max per phone', 'phone overlaps', 'keys placed twice', 'calls placed twice', 'invariants'], rows, numeric: [1, 2, 3, 4, 5, 6] }
}

function resourceTable(results: ScenarioResult[]): Table {
  const rows = results.flatMap((r) =>
    Object.entries(r.resources ?? {}).map(([proc, u]) => [r.scenario, proc, fmt(u.peakRssMb), fmt(u.cpuSeconds), fmt(u.cpuSecondsPerCall === undefined ? undefined : u.cpuSecondsPerCall * 1000)]),
  )
  return { header: ['scenario', 'process', 'peak RSS (MiB)', 'CPU (s)', 'CPU per completed call (ms)'], rows, numeric: [2, 3, 4] }
}

const tables = (results: ScenarioResult[]) => [figureTable(results), providerTable(results), resourceTable(results)].filter((t) => t.rows.length > 0)

export function textTable(results: ScenarioResult[]): string {
  return tables(results)
    .map(({ header, rows, numeric }) => {
      const all = [header, ...rows]
      const widths = header.map((_, i) => Math.max(...all.map((r) => r[i]!.length)))
      return all.map((r) => r.map((c, i) => (numeric.includes(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd()).join('\n')
    })
    .join('\n\n')
}

export function markdownTable(results: ScenarioResult[]): string {
  const line = (cells: string[]) => `| ${cells.map((c) => c.replaceAll('|', '\\|')).join(' | ')} |`
  return tables(results)
    .map(({ header, rows, numeric }) => [line(header), line(header.map((_, i) => (numeric.includes(i) ? '---:' : '---'))), ...rows.map(line)].join('\n'))
    .join('\n\n')
}

export async function writeReport(dir: string, run: { machine: ReturnType<typeof machine>; mode: string; startedAt: string; results: ScenarioResult[] }) {
  await mkdir(dir, { recursive: true })
  const stem = join(dir, run.startedAt.replaceAll(':', '-').replace(/\.\d+Z$/, 'Z'))
  const m = run.machine
  const violations = run.results.flatMap((r) => r.violations.map((v) => `${r.scenario}: ${v}`))
  await writeFile(`${stem}.json`, JSON.stringify(run, null, 2) + '\n')
  await writeFile(
    `${stem}.md`,
    [
      `# npm run bench (${run.mode}), ${run.startedAt}`,
      '',
      `Machine: ${m.cpu}, ${m.cores} cores; Node ${m.node}; PostgreSQL ${m.postgres}.`,
      '',
      markdownTable(run.results),
      '',
      violations.length ? `**Invariants broken:**\n\n${violations.map((v) => `- ${v}`).join('\n')}` : 'No invariant broken.',
      '',
    ].join('\n'),
  )
  return { json: `${stem}.json`, markdown: `${stem}.md` }
}

export interface ScenarioContext {
  quick: boolean
  /** A fresh database for this scenario on the run's server. */
  database(name: string): Promise<{ url: string; drop(): Promise<void> }>
  log(message: string): void
}

export type Scenario = (ctx: ScenarioContext) => Promise<ScenarioResult>
