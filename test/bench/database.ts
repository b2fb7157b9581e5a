import { chmod, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import postgres from 'postgres'
import { startEmbeddedPostgres } from '../../src/store/embedded.ts'
import { silentLogger } from '../../src/platform/log.ts'
import { freePort } from '../support/processes.ts'
import { withDatabase } from '../support/template.ts'

export interface BenchDatabase {
  url: string
  drop(): Promise<void>
}

/** A PostgreSQL server for a benchmark run, on which each scenario makes a database of its own. */
export interface BenchServer {
  /** The server's version string (SHOW server_version). */
  version: string
  database(name: string): Promise<BenchDatabase>
  stop(): Promise<void>
}

/**
 * DATABASE_URL's server, or an embedded PostgreSQL started for the run (started once, so a
 * run of several scenarios pays for one start-up, not one per scenario).
 */
export async function benchServer(): Promise<BenchServer> {
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
  const admin = postgres(withDatabase(serverUrl, 'postgres'), { max: 1, onnotice: () => {} })
  const [{ server_version: version }] = (await admin`SHOW server_version`) as unknown as [{ server_version: string }]
  return {
    version,
    async database(name) {
      const dbName = `orchestrator_bench_${name}_${process.pid}`
      await admin.unsafe(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`)
      await admin.unsafe(`CREATE DATABASE ${dbName}`)
      return {
        url: withDatabase(serverUrl, dbName),
        drop: async () => void (await admin.unsafe(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`)),
      }
    },
    async stop() {
      await admin.end()
      await stopEmbedded()
    },
  }
}

/** A fresh database on a server of its own (see benchServer); drop() removes both. */
export async function benchDatabase(name: string): Promise<BenchDatabase> {
  const server = await benchServer()
  const database = await server.database(name)
  return {
    url: database.url,
    async drop() {
      await database.drop()
      await server.stop()
    },
  }
}
