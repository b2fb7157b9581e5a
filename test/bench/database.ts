import { chmod, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import postgres from 'postgres'
import { startEmbeddedPostgres } from '../../src/db/embedded.ts'
import { silentLogger } from '../../src/log.ts'
import { freePort } from '../support/processes.ts'
import { withDatabase } from '../support/template.ts'

/**
 * A fresh database for one benchmark run: on DATABASE_URL's server, or on an embedded
 * PostgreSQL started for the run. drop() removes the database (and the embedded server).
 */
export async function benchDatabase(name: string): Promise<{ url: string; drop(): Promise<void> }> {
  let serverUrl = process.env.DATABASE_URL
  let stopEmbedded = async () => {}
  if (!serverUrl) {
    const dir = await mkdtemp(join(tmpdir(), 'orchestrator-bench-pg-'))
    await chmod(dir, 0o755) // as root, Postgres runs as "postgres" and must reach its data directory
    const embedded = await startEmbeddedPostgres({ dir: join(dir, 'data'), port: await freePort(), persistent: false }, silentLogger)
    serverUrl = embedded.url
    stopEmbedded = async () => {
      await embedded.stop()
      await rm(dir, { recursive: true, force: true })
    }
  }
  const dbName = `orchestrator_bench_${name}_${process.pid}`
  const admin = postgres(withDatabase(serverUrl, 'postgres'), { max: 1, onnotice: () => {} })
  await admin.unsafe(`CREATE DATABASE ${dbName}`)
  return {
    url: withDatabase(serverUrl, dbName),
    async drop() {
      await admin.unsafe(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`)
      await admin.end()
      await stopEmbedded()
    },
  }
}
