// npm run stress [-- --runs 20] [-- --burners 2] [-- test/a.test.ts …]
//
// Runs the race and fault test files (or the files given) again and again, each run one
// `npm test` of all of them, while `--burners` processes spin on the CPU, and reports how many
// runs each file passed. A test that synchronises on time rather than on the condition it
// waits for shows here as a file that fails some runs on a loaded machine.
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { parseArgs } from 'node:util'

/** The files that race many connections or processes, or inject faults, or once waited on time. */
export const RACE_AND_FAULT_FILES = [
  'test/api.test.ts',
  'test/batch-race.test.ts',
  'test/callback-conflict.test.ts',
  'test/cancel.test.ts',
  'test/database-faults.test.ts',
  'test/dispatch-crash.test.ts',
  'test/dispatch-race.test.ts',
  'test/dispatch-shutdown.test.ts',
  'test/driver-faults.test.ts',
  'test/e2e-window.test.ts',
  'test/events.test.ts',
  'test/patch-claim-race.test.ts',
  'test/patch-worker-race.test.ts',
  'test/policy-race.test.ts',
  'test/status-page.test.ts',
  'test/suppressions.test.ts',
  // Since issue 18: every transaction's statements failing in turn, the driver's transaction
  // guarantees, and the retry and SQL-request races.
  'test/failure-injection.test.ts',
  'test/transactions.test.ts',
  'test/retry.test.ts',
  'test/operator-sql.test.ts',
]

const { values: args, positionals } = parseArgs({
  allowPositionals: true,
  options: { runs: { type: 'string', default: '20' }, burners: { type: 'string', default: '2' } },
})
const runs = Number(args.runs)
const files = positionals.length ? positionals : RACE_AND_FAULT_FILES
const root = join(import.meta.dirname, '..')

const burners: ChildProcess[] = Array.from({ length: Number(args.burners) }, () =>
  spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' }),
)
const stopBurners = () => burners.forEach((b) => b.kill('SIGKILL'))
process.on('exit', stopBurners)
process.on('SIGINT', () => process.exit(130))

/** One `npm test` of `files` with the TAP reporter; which files passed, and which failed. */
function runOnce(): Promise<{ passed: Set<string>; failed: Set<string>; seconds: number; output: string }> {
  const started = performance.now()
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['test/run.ts', '--reporter=tap', ...files], { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    child.stdout!.on('data', (c: Buffer) => (out += c))
    child.on('exit', () => {
      const passed = new Set<string>()
      const failed = new Set<string>()
      // The top-level TAP lines, one per file: "ok 3 - test/x.test.ts # time=…" or "not ok 3 - …".
      for (const match of out.matchAll(/^(not ok|ok) \d+ - (\S+\.test\.ts)/gm)) (match[1] === 'ok' ? passed : failed).add(match[2]!)
      for (const file of files) if (!passed.has(file) && !failed.has(file)) failed.add(file) // never reported: it crashed
      resolve({ passed, failed, seconds: (performance.now() - started) / 1000, output: out })
    })
  })
}

const passes = new Map(files.map((f) => [f, 0]))
let green = 0
for (let run = 1; run <= runs; run++) {
  const { passed, failed, seconds, output } = await runOnce()
  // What failed, kept for reading afterwards (test/artifacts is not committed).
  if (failed.size) {
    await mkdir(join(root, 'test', 'artifacts'), { recursive: true })
    await writeFile(join(root, 'test', 'artifacts', `stress-run-${run}.tap`), output)
  }
  for (const f of passed) passes.set(f, (passes.get(f) ?? 0) + 1)
  if (failed.size === 0) green++
  console.log(`run ${run}/${runs}: ${passed.size} files passed, ${failed.size} failed${failed.size ? ` (${[...failed].join(', ')}; test/artifacts/stress-run-${run}.tap)` : ''}, ${seconds.toFixed(0)} s`)
}
stopBurners()

console.log(`\n${runs} runs with ${burners.length} CPU burners:`)
for (const [file, n] of passes) console.log(`  ${n === runs ? '  ' : '✗ '}${String(n).padStart(2)}/${runs}  ${file}`)
const clean = [...passes.values()].filter((n) => n === runs).length
console.log(`\n${green} of ${runs} runs passed whole; ${clean} of ${files.length} files passed every run`)
process.exitCode = clean === files.length ? 0 : 1
