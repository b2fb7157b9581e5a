import type { Test } from 'tap'
import type { Sql, Tx } from '../../src/store/sql.ts'

// Failure injection for transactions. `withFaults(sql)` is `sql` whose transactions count the
// statements they make (ours and pg-boss's, which it runs on our transactions) and fail the
// one a test arms: that statement is not sent, and one that raises takes its place, so the
// server aborts the transaction exactly where the statement would have failed. Services built
// on the wrapped pool behave as in production until a fault is armed; nothing in src/ knows.

/** The SQLSTATE of an injected fault. */
export const INJECTED = 'FI001'
const RAISE = `DO $$BEGIN RAISE EXCEPTION 'injected fault' USING ERRCODE = '${INJECTED}'; END$$`

export interface Faults {
  /** The pool to build services on. */
  sql: Sql
  /** Fails the `at`-th statement made in a transaction from now on (1 is the next); 0 disarms. */
  arm(at: number): void
  /** Statements made in transactions since the last arm(). */
  readonly made: number
  /** Whether the armed fault has been injected. */
  readonly fired: boolean
}

interface QueryInternals {
  run(): void
  reject(err: unknown): void
}

export function withFaults(sql: Sql): Faults {
  let at = 0
  let made = 0
  let fired = false

  // A query runs (is handed to its connection) once, when first awaited or executed; a fragment
  // interpolated into another query never runs, so only statements are counted.
  const counted = <Q>(tx: Tx, query: Q): Q => {
    const q = query as unknown as QueryInternals
    const run = q.run
    q.run = function (this: QueryInternals) {
      made++
      if (made !== at || fired) return run.call(this)
      fired = true
      tx.unsafe(RAISE).then(
        () => q.reject(new Error('the injected fault did not raise')),
        (err: unknown) => q.reject(err),
      )
    }
    return query
  }

  const wrap = (tx: Tx): Tx =>
    new Proxy(tx, {
      apply(target, self, args: unknown[]) {
        const result = Reflect.apply(target as unknown as (...a: unknown[]) => unknown, self, args)
        const tagged = Array.isArray((args[0] as { raw?: unknown } | undefined)?.raw)
        return tagged ? counted(target, result) : result
      },
      get(target, prop) {
        if (prop === 'unsafe') return (...args: Parameters<Tx['unsafe']>) => counted(target, target.unsafe(...args))
        // A savepoint (or a begin nested in the transaction) runs its callback on a handle of its own.
        if (prop === 'savepoint' || prop === 'begin') return nested(target, prop)
        return Reflect.get(target, prop)
      },
    })

  // begin (or savepoint) with its callback given the counting handle.
  const nested = (target: Sql | Tx, method: 'begin' | 'savepoint') =>
    (...args: unknown[]) => {
      const fn = args.pop() as (tx: Tx) => unknown
      return (target[method as 'begin'] as (...a: unknown[]) => unknown)(...args, (tx: Tx) => fn(wrap(tx)))
    }

  const faulty = new Proxy(sql, {
    get(target, prop) {
      return prop === 'begin' ? nested(target, 'begin') : Reflect.get(target, prop)
    },
  })

  return {
    sql: faulty,
    arm(n: number) {
      at = n
      made = 0
      fired = false
    },
    get made() {
      return made
    },
    get fired() {
      return fired
    },
  }
}

/**
 * Every row of our tables and pg-boss's, each as JSON text, sorted: what a transaction that
 * failed must leave exactly as it was. Partitioned tables are read through their parent.
 */
export async function snapshot(sql: Sql): Promise<Record<string, string[]>> {
  const tables = await sql<{ name: string }[]>`
    SELECT format('%I.%I', n.nspname, c.relname) AS name
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname IN ('public', 'pgboss') AND c.relkind IN ('r', 'p') AND NOT c.relispartition
    ORDER BY 1`
  const rows: Record<string, string[]> = {}
  for (const { name } of tables) {
    rows[name] = (await sql.unsafe<{ row: string }[]>(`SELECT to_jsonb(t)::text AS row FROM ${name} t`)).map((r) => r.row).sort()
  }
  return rows
}

/**
 * Runs `act` (one transaction, and reads outside it) with its first statement failing, then
 * its second, and so on, checking after each that the database is exactly as before and that
 * `act` failed with the fault (`isFault`). Once `act` makes fewer statements than the one armed
 * to fail, it has run whole: it must then succeed and change something, or the checks before
 * could not have failed. Returns how many statements its transaction made.
 */
export async function failEachStatement(
  t: Test,
  faults: Faults,
  observe: Sql,
  act: () => Promise<unknown>,
  isFault: (err: unknown) => boolean = (err) => (err as { code?: string } | undefined)?.code === INJECTED,
): Promise<number> {
  const before = await snapshot(observe)
  for (let at = 1; ; at++) {
    faults.arm(at)
    const failure = await act().then(
      () => undefined,
      (err: unknown) => err ?? new Error('rejected with nothing'),
    )
    if (!faults.fired) {
      faults.arm(0)
      t.equal(failure, undefined, `it runs whole when none of its ${at - 1} statements fails`)
      t.ok(at > 2, 'a transaction of more than one statement')
      t.not(JSON.stringify(await snapshot(observe)), JSON.stringify(before), 'and then it changes something, so the checks before could fail')
      return at - 1
    }
    t.ok(isFault(failure), `statement ${at} failing fails it (${String((failure as Error | undefined)?.message ?? failure)})`)
    t.same(await snapshot(observe), before, `statement ${at} failing leaves nothing of the transaction`)
  }
}
