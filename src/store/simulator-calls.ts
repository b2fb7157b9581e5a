import type { Sql } from './sql.ts'

// The built-in provider simulator's memory of the calls it placed ("all" mode without a
// provider), in a schema of its own beside ours: a real provider remembers its calls across
// our restarts, so the simulator must too, or a look-up after a restart answers 404 and a
// repeated Idempotency-Key places a second call. Not part of our migrations: it is a test
// double's table, made when the simulator starts and only then.

export interface SimulatedCall {
  providerCallId: string
  idempotencyKey: string
  to: string
  /** The final status it will report. */
  status: string
  startedAt: Date
  endsAt: Date
  webhookUrl: string
  /** The lost-callback fault: its callback is never sent. */
  lost: boolean
}

type Row = { provider_call_id: string; idempotency_key: string; to_number: string; status: string; started_at: Date; ends_at: Date; webhook_url: string; lost: boolean }

const fromRow = (r: Row): SimulatedCall => ({
  providerCallId: r.provider_call_id,
  idempotencyKey: r.idempotency_key,
  to: r.to_number,
  status: r.status,
  startedAt: r.started_at,
  endsAt: r.ends_at,
  webhookUrl: r.webhook_url,
  lost: r.lost,
})

export async function prepareSimulatorCalls(sql: Sql): Promise<void> {
  await sql`CREATE SCHEMA IF NOT EXISTS simulator`
  await sql`
    CREATE TABLE IF NOT EXISTS simulator.calls (
      provider_call_id text PRIMARY KEY,
      idempotency_key  text NOT NULL UNIQUE,
      to_number        text NOT NULL,
      status           text NOT NULL,
      started_at       timestamptz NOT NULL,
      ends_at          timestamptz NOT NULL,
      webhook_url      text NOT NULL,
      lost             boolean NOT NULL
    )`
}

/** The secret the built-in simulator signs with when WEBHOOK_SECRET is unset: `fresh` the first time, the same ever after. */
export async function simulatorSecret(sql: Sql, fresh: string): Promise<string> {
  await sql`CREATE TABLE IF NOT EXISTS simulator.secret (one boolean PRIMARY KEY DEFAULT true CHECK (one), secret text NOT NULL)`
  await sql`INSERT INTO simulator.secret (secret) VALUES (${fresh}) ON CONFLICT DO NOTHING`
  const [row] = await sql<{ secret: string }[]>`SELECT secret FROM simulator.secret`
  return row!.secret
}

export async function recordSimulatedCall(sql: Sql, c: SimulatedCall): Promise<void> {
  await sql`
    INSERT INTO simulator.calls (provider_call_id, idempotency_key, to_number, status, started_at, ends_at, webhook_url, lost)
    VALUES (${c.providerCallId}, ${c.idempotencyKey}, ${c.to}, ${c.status}, ${c.startedAt}, ${c.endsAt}, ${c.webhookUrl}, ${c.lost})
    ON CONFLICT DO NOTHING`
}

export async function simulatedCallByKey(sql: Sql, key: string): Promise<SimulatedCall | undefined> {
  const [row] = await sql<Row[]>`SELECT * FROM simulator.calls WHERE idempotency_key = ${key}`
  return row && fromRow(row)
}

export async function simulatedCallById(sql: Sql, id: string): Promise<SimulatedCall | undefined> {
  const [row] = await sql<Row[]>`SELECT * FROM simulator.calls WHERE provider_call_id = ${id}`
  return row && fromRow(row)
}

/** Calls still live: their end, and callback, is yet to come. */
export async function liveSimulatedCalls(sql: Sql): Promise<SimulatedCall[]> {
  return (await sql<Row[]>`SELECT * FROM simulator.calls WHERE ends_at > now() ORDER BY ends_at`).map(fromRow)
}
