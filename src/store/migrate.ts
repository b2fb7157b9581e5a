import { readdir, readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import type { Sql } from './sql.ts'

// Forward-only numbered migrations from sql/: NNN_name.sql, applied in order in one
// transaction under an advisory lock, so processes that start together apply each file once.

const MIGRATION_LOCK = 7_261_001
export const sqlDir = fileURLToPath(new URL('../../sql/', import.meta.url))

export interface Migration {
  version: number
  name: string
  text: string
}

export async function readMigrations(dir = sqlDir): Promise<Migration[]> {
  const files = (await readdir(dir)).filter((f) => f.endsWith('.sql')).sort()
  const migrations: Migration[] = []
  for (const [index, file] of files.entries()) {
    const match = /^(\d{3})_([a-z0-9_]+)\.sql$/.exec(file)
    if (!match) throw new Error(`migration ${file}: name must be NNN_lowercase_words.sql`)
    const version = Number(match[1])
    if (version !== index + 1) {
      throw new Error(`migration ${file}: expected number ${String(index + 1).padStart(3, '0')}; numbers must have no gaps`)
    }
    migrations.push({ version, name: match[2]!, text: await readFile(dir + file, 'utf8') })
  }
  return migrations
}

/** Applies what is missing; returns the versions it applied (empty when up to date). */
export async function migrate(sql: Sql, dir = sqlDir): Promise<number[]> {
  const migrations = await readMigrations(dir)
  return sql.begin(async (tx) => {
    await tx`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK})`
    await tx`
      CREATE TABLE IF NOT EXISTS schema_migrations (
        version    integer PRIMARY KEY,
        name       text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now()
      )`
    const rows = await tx<{ version: number }[]>`SELECT version FROM schema_migrations ORDER BY version`
    const applied = rows.map((r) => r.version)
    const newest = migrations.length
    if (applied.some((version, i) => version !== i + 1) || applied.length > newest) {
      throw new Error(
        `database has migrations [${applied.join(', ')}] but this build knows 1..${newest}; ` +
          'is a newer version of the service running against it?',
      )
    }
    const pending = migrations.slice(applied.length)
    for (const m of pending) {
      await tx.unsafe(m.text)
      await tx`INSERT INTO schema_migrations (version, name) VALUES (${m.version}, ${m.name})`
    }
    return pending.map((m) => m.version)
  })
}

/** True when every migration this build knows is applied (for /readyz); false on a database never migrated. */
export async function isMigrated(sql: Sql, expected: number): Promise<boolean> {
  const [table] = await sql<{ exists: boolean }[]>`SELECT to_regclass('schema_migrations') IS NOT NULL AS exists`
  if (!table!.exists) return false
  const [row] = await sql<{ n: number }[]>`
    SELECT count(*)::int AS n FROM schema_migrations WHERE version <= ${expected}`
  return row?.n === expected
}
