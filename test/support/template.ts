import postgres from 'postgres'
import { migrate } from '../../src/store/migrate.ts'
import { Queues } from '../../src/store/queues.ts'
import { silentLogger } from '../../src/platform/log.ts'

export const TEMPLATE_DB = `orchestrator_test_template_${process.pid}`

export function withDatabase(serverUrl: string, database: string): string {
  const url = new URL(serverUrl)
  url.pathname = `/${database}`
  return url.toString()
}

/** A database with our migrations, pg-boss's schema and the calls queue, to clone per test file. */
export async function buildTemplate(serverUrl: string): Promise<void> {
  const admin = postgres(withDatabase(serverUrl, 'postgres'), { max: 1, onnotice: () => {} })
  await admin.unsafe(`DROP DATABASE IF EXISTS ${TEMPLATE_DB}`)
  await admin.unsafe(`CREATE DATABASE ${TEMPLATE_DB}`)
  const url = withDatabase(serverUrl, TEMPLATE_DB)
  const sql = postgres(url, { max: 1, onnotice: () => {} })
  await migrate(sql)
  await sql.end()
  const queue = new Queues(url, silentLogger, { supervise: false })
  await queue.start()
  await queue.stop()
  await admin.end()
}

export async function dropTemplate(serverUrl: string): Promise<void> {
  const admin = postgres(withDatabase(serverUrl, 'postgres'), { max: 1, onnotice: () => {} })
  await admin.unsafe(`DROP DATABASE IF EXISTS ${TEMPLATE_DB} WITH (FORCE)`)
  await admin.end()
}
