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

/**
 * Runs these statements of one transaction in this order without waiting between them.
 * postgres.js writes them to the socket together and PostgreSQL runs each after the one before,
 * just as if each were awaited before the next was sent: each sees what the earlier ones did,
 * takes its own snapshot when it starts (READ COMMITTED), and one that waits for a lock holds
 * back the rest. The transaction pays one round trip for all of them instead of one each, and
 * on a busy machine every round trip is also a wake-up of the backend and of this process.
 * Rejects with the first one's error (the transaction is then aborted and rolls back).
 *
 * A query is sent either when it is made (a function that returns `tx\`…\`.execute()` or
 * `tx\`…\`.then(…)` without awaiting it) or, if it was only built (`tx\`…\``), when this
 * sends it. Queries sent when made went out while the arguments were evaluated, before any
 * this sends, so they must come first; this throws rather than let the order differ from the
 * one written. Never pass the promise of an async function: it sends its query a microtask or
 * more after it is called, so its place would not be the one it has here. Statements whose
 * order does not matter (no lock order between them, neither reads what the other writes) can
 * simply share a Promise.all, which pipelines them all the same.
 */
export function inOrder<const Q extends ReadonlyArray<PromiseLike<unknown>>>(...queries: Q): Promise<{ -readonly [K in keyof Q]: Awaited<Q[K]> }> {
  let built = false
  for (const q of queries) {
    const query = q as { executed?: boolean; execute?: () => unknown }
    const sent = query.execute === undefined || query.executed === true
    if (sent && built) throw new Error('inOrder: a query sent when it was made is listed after one only built; it went out first, out of the order written')
    if (!sent) {
      built = true
      query.execute!()
    }
  }
  return Promise.all(queries) as Promise<{ -readonly [K in keyof Q]: Awaited<Q[K]> }>
}

/** Postgres error codes this service reacts to. */
export const PgError = {
  uniqueViolation: '23505',
  /** Raised by refuse_suppressed() (sql/009): the number is on the do-not-call list. */
  phoneSuppressed: 'DNC01',
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
