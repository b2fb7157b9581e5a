import postgres from 'postgres'

export type Sql = postgres.Sql
/**
 * A transaction's handle, as `sql.begin` gives it to its callback. Every statement on it is
 * awaited inside the callback before the next is made, and nothing is sent on it once the
 * callback has returned: no Promise.all over async functions, no query left running. postgres.js
 * 4 backs this up: it refuses a statement made on a transaction that has ended
 * (UNSAFE_TRANSACTION), and a statement that fails aborts the whole transaction even when its
 * error is caught, so nothing of a transaction ever commits on its own
 * (test/transactions.test.ts).
 */
export type Tx = postgres.TransactionSql

/**
 * The service's own connection pool (postgres.js). pg-boss keeps a separate pool of its own.
 * `pooled`: the URL is a pooler in transaction mode (PgBouncer, Supavisor, RDS Proxy), which
 * hands each transaction to any server connection. Then no named prepared statements, since the
 * next statement may reach a connection that never saw them; and one statement at a time per
 * connection, since postgres.js would otherwise pipeline a statement behind another's
 * Parse/Describe/Flush, and PgBouncer (1.18 here) sends it to a server connection where that
 * exchange never ends: the query hangs (test/pooler.test.ts).
 */
export function connect(url: string, options: { max?: number; applicationName?: string; pooled?: boolean } = {}): Sql {
  return postgres(url, {
    max: options.max ?? 10,
    prepare: !options.pooled,
    ...(options.pooled ? { max_pipeline: 1 } : {}),
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

// Errors that mean "the database is not there right now", not "this request is wrong": a
// refused or dropped connection (postgres.js's own codes and socket errors), a terminated
// backend (57P01-57P03), a server starting or shutting down, no connection slots left (53300),
// and SQLSTATE class 08 (connection exception). Clients get 503 with Retry-After for these.
const UNAVAILABLE_CODES = new Set([
  'CONNECTION_CLOSED',
  'CONNECTION_ENDED',
  'CONNECTION_DESTROYED',
  'CONNECT_TIMEOUT',
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  '57P01',
  '57P02',
  '57P03',
  '53300',
])

export function isDatabaseUnavailable(err: unknown): boolean {
  for (let e = err, depth = 0; e && depth < 4; e = (e as { cause?: unknown }).cause, depth++) {
    const code = pgErrorCode(e)
    if (code && (UNAVAILABLE_CODES.has(code) || code.startsWith('08'))) return true
    // pg (pg-boss's driver) says so in words when a connection ends under a query.
    if (e instanceof Error && /Connection terminated|connection timeout|Client has encountered a connection error/i.test(e.message)) return true
  }
  return false
}
