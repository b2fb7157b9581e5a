import { randomBytes } from 'node:crypto'
import postgres from 'postgres'
import { connect, type Sql } from '../../src/store/sql.ts'
import { withDatabase } from './template.ts'

// Each test file gets its own database, cloned from the migrated template that test/run.ts
// built, and dropped when the file ends.

export interface TestDatabase {
  url: string
  name: string
  sql: Sql
}

interface Teardown {
  teardown(fn: () => Promise<void> | void): void
}

export async function createTestDatabase(t: Teardown): Promise<TestDatabase> {
  const server = process.env.TEST_SERVER_URL
  const template = process.env.TEST_TEMPLATE_DB
  if (!server || !template) throw new Error('run the tests with `npm test`, which prepares the database server')
  const name = `orchestrator_test_${randomBytes(6).toString('hex')}`
  const admin = postgres(withDatabase(server, 'postgres'), { max: 1, onnotice: () => {} })
  // CREATE DATABASE … TEMPLATE fails while another session is cloning the same template.
  for (let tries = 0; ; tries++) {
    try {
      await admin.unsafe(`CREATE DATABASE ${name} TEMPLATE ${template}`)
      break
    } catch (err) {
      if (tries > 50 || !/being accessed by other users/.test(String(err))) throw err
      await new Promise((r) => setTimeout(r, 100 + Math.random() * 200))
    }
  }
  const url = withDatabase(server, name)
  const sql = connect(url, { max: 10 })
  t.teardown(async () => {
    await sql.end({ timeout: 5 })
    await admin.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
    await admin.end()
  })
  return { url, name, sql }
}
