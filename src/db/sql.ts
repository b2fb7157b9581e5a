import postgres from 'postgres'

export type Sql = postgres.Sql
export type Tx = postgres.TransactionSql

/** The service's own connection pool (postgres.js). pg-boss keeps a separate pool of its own. */
export function connect(url: string, options: { max?: number; applicationName?: string } = {}): Sql {
  return postgres(url, {
    max: options.max ?? 10,
    onnotice: () => {},
    connection: { application_name: options.applicationName ?? 'call-orchestrator' },
    transform: { undefined: null },
  })
}

/** Postgres error codes this service reacts to. */
export const PgError = {
  uniqueViolation: '23505',
} as const

export function pgErrorCode(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err ? String((err as { code: unknown }).code) : undefined
}
