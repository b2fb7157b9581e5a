// The test command (npm test). Uses DATABASE_URL's server when set, otherwise starts an
// embedded PostgreSQL in a temporary directory. Builds one migrated template database, then
// runs tap; every test file clones the template into a database of its own (test/support/db.ts)
// so files run in parallel without seeing each other.
import { spawn } from 'node:child_process'
import { chmod, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startEmbeddedPostgres, type EmbeddedDatabase } from '../src/store/embedded.ts'
import { silentLogger } from '../src/platform/log.ts'
import { freePort } from './support/processes.ts'
import { buildTemplate, dropTemplate, TEMPLATE_DB } from './support/template.ts'

let embedded: EmbeddedDatabase | undefined
let dataDir: string | undefined
let serverUrl = process.env.DATABASE_URL
if (!serverUrl) {
  dataDir = await mkdtemp(join(tmpdir(), 'orchestrator-test-pg-'))
  await chmod(dataDir, 0o755) // as root, Postgres runs as "postgres" and must reach its data directory
  const port = await freePort()
  process.stdout.write(`DATABASE_URL not set: starting an embedded PostgreSQL on port ${port}\n`)
  embedded = await startEmbeddedPostgres({ dir: join(dataDir, 'data'), port, persistent: false }, silentLogger)
  serverUrl = embedded.url
}

await buildTemplate(serverUrl)
const args = process.argv.slice(2)
const tap = spawn(join(import.meta.dirname, '..', 'node_modules', '.bin', 'tap'), args, {
  stdio: ['inherit', 'pipe', 'inherit'],
  env: { ...process.env, TEST_SERVER_URL: serverUrl, TEST_TEMPLATE_DB: TEMPLATE_DB },
})
let summary = ''
tap.stdout.on('data', (chunk: Buffer) => {
  process.stdout.write(chunk)
  const match = /# (\{ total: .*\})/.exec(chunk.toString())
  if (match) summary = match[1]!
})
const code: number = await new Promise((resolve) => tap.on('exit', (c, signal) => resolve(c ?? (signal ? 1 : 0))))
// One plain closing line that any CI log reader understands.
const count = (name: string) => Number(new RegExp(`${name}: (\\d+)`).exec(summary)?.[1] ?? 0)
if (summary) process.stdout.write(`\n${count('pass')} passed, ${count('fail')} failed, ${count('skip') + count('todo')} skipped\n`)
await dropTemplate(serverUrl)
await embedded?.stop()
if (dataDir) await rm(dataDir, { recursive: true, force: true })
process.exit(code)
