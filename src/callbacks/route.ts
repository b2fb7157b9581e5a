import type { Context } from 'hono'
import * as v from 'valibot'
import type { CallRow } from '../calls/model.ts'
import { lockClaimsShared, wakeWorkers } from '../db/locks.ts'
import { PgError, pgErrorCode, type Sql, type Tx } from '../db/sql.ts'
import { finish } from '../db/transitions.ts'
import type { CallQueue } from '../dispatch/queue.ts'
import { bearerToken, matchesSecret } from '../http/auth.ts'
import { HttpProblem } from '../http/problem.ts'
import { timestamp } from '../http/schemas.ts'
import type { Logger } from '../log.ts'
import { verifyCallbackSignature } from './signature.ts'

// POST /callbacks/call-status: the provider's final word on a call. Authenticated (Standard
// Webhooks signature, or a static API key), idempotent per webhook-id, order-proof (a callback
// may arrive before we processed the dial's 202, twice, or after the call ended), and kept in
// the callbacks table with its verdict.

const PROVIDER_STATUSES = ['COMPLETED', 'FAILED', 'BUSY', 'NO_ANSWER'] as const

// Lenient about extra fields (providers add them over time), strict about the ones we use.
const CallbackBody = v.object({
  callId: v.pipe(v.string('must be a string'), v.minLength(1, 'must not be empty'), v.maxLength(200, 'must be at most 200 characters')),
  status: v.picklist(PROVIDER_STATUSES, `must be one of ${PROVIDER_STATUSES.join(', ')}`),
  // Bounded by what the columns hold (integer, timestamptz from year 1), so an out-of-range
  // value is a 400 rather than a database error.
  durationSec: v.optional(v.nullable(v.pipe(v.number('must be a number'), v.integer('must be a whole number'), v.minValue(0, 'must not be negative'), v.maxValue(2_147_483_647, 'must be at most 2147483647')))),
  completedAt: v.optional(v.nullable(timestamp)),
})

const OurCallId = v.pipe(v.string(), v.uuid())

export type Verdict = 'applied' | 'duplicate' | 'already_final' | 'unknown_call' | 'rejected'

interface Record {
  webhookId: string | null
  callId: string | null
  providerCallId: string | null
  providerStatus: string | null
  verdict: Verdict
  reason: string | null
  body: string
}

async function keep(db: Sql | Tx, r: Record): Promise<void> {
  await db`
    INSERT INTO callbacks (webhook_id, call_id, provider_call_id, provider_status, verdict, reason, body)
    VALUES (${r.webhookId}, ${r.callId}, ${r.providerCallId}, ${r.providerStatus}, ${r.verdict}, ${r.reason},
            ${r.body.slice(0, 4096)})`
}

export interface CallbackDeps {
  sql: Sql
  queue: CallQueue
  secrets: readonly string[]
  apiKey: string | undefined
  log: Logger
}

export function createCallbackRoute(deps: CallbackDeps) {
  const { sql, queue, log } = deps

  const reject = async (status: 400 | 401 | 404 | 409, code: string, reason: string, r: Partial<Record> & { body: string }) => {
    log.warn('callback rejected', { code, reason, webhookId: r.webhookId ?? undefined })
    await keep(sql, {
      webhookId: null,
      callId: null,
      providerCallId: null,
      providerStatus: null,
      verdict: status === 404 ? 'unknown_call' : 'rejected',
      ...r,
      reason,
    }).catch((err) => log.error('could not record rejected callback', { err }))
    return new HttpProblem(status, code, reason)
  }

  return async (c: Context): Promise<Response> => {
    const body = await c.req.text()

    let webhookId: string | null = null
    if (deps.secrets.length === 0 && !deps.apiKey) {
      throw await reject(401, 'callbacks_not_configured', 'Callback authentication is not configured (WEBHOOK_SECRET or WEBHOOK_API_KEY); every callback is refused.', { body })
    }
    const presentedKey = bearerToken(c.req.header('authorization')) ?? c.req.header('x-api-key')
    const signed = c.req.header('webhook-signature') !== undefined
    if (deps.secrets.length > 0 && (signed || !deps.apiKey)) {
      const check = verifyCallbackSignature(
        { id: c.req.header('webhook-id'), timestamp: c.req.header('webhook-timestamp'), signature: c.req.header('webhook-signature') },
        body,
        deps.secrets,
      )
      if (!check.ok) throw await reject(401, 'invalid_signature', `Callback signature rejected: ${check.reason}.`, { body })
      webhookId = check.webhookId
    } else if (!deps.apiKey || !matchesSecret(presentedKey, [deps.apiKey])) {
      throw await reject(401, 'invalid_api_key', 'Callback API key missing or wrong.', { body })
    }

    let json: unknown
    try {
      json = JSON.parse(body)
    } catch {
      throw await reject(400, 'malformed_json', 'The callback body is not valid JSON.', { body, webhookId })
    }
    const parsed = v.safeParse(CallbackBody, json)
    if (!parsed.success) {
      const summary = parsed.issues.map((i) => `${v.getDotPath(i) ?? 'body'} ${i.message}`).join('; ')
      throw await reject(400, 'validation_failed', `The callback is not valid: ${summary}.`, { body, webhookId })
    }
    const cb = parsed.output
    const ourId = c.req.query('callId')
    if (ourId !== undefined && !v.is(OurCallId, ourId)) {
      throw await reject(400, 'validation_failed', 'query.callId must be a UUID.', { body, webhookId })
    }

    const base = { webhookId, providerCallId: cb.callId, providerStatus: cb.status, body, reason: null }
    try {
      const outcome = await sql.begin(async (tx) => {
        await lockClaimsShared(tx)
        const [call] = ourId
          ? await tx<CallRow[]>`SELECT * FROM calls WHERE id = ${ourId} FOR UPDATE`
          : await tx<CallRow[]>`SELECT * FROM calls WHERE provider_call_id = ${cb.callId} FOR UPDATE`
        if (!call) return { verdict: 'unknown_call' as const }
        if (webhookId) {
          const [seen] = await tx`SELECT 1 FROM callbacks WHERE webhook_id = ${webhookId} AND verdict = 'applied'`
          if (seen) {
            await keep(tx, { ...base, callId: call.id, verdict: 'duplicate' })
            return { verdict: 'duplicate' as const, call }
          }
        }
        const row = await finish(tx, call.id, {
          status: cb.status === 'COMPLETED' ? 'COMPLETED' : 'FAILED',
          providerStatus: cb.status,
          providerCallId: cb.callId,
          durationSec: cb.durationSec ?? null,
          endedAt: cb.completedAt ? new Date(cb.completedAt) : null,
        })
        if (!row) {
          await keep(tx, { ...base, callId: call.id, verdict: 'already_final', reason: `call was already ${call.status}` })
          return { verdict: 'already_final' as const, call }
        }
        if (call.job_id) await queue.settle(tx, call.job_id)
        await keep(tx, { ...base, callId: call.id, verdict: 'applied' })
        await wakeWorkers(tx)
        return { verdict: 'applied' as const, call: row }
      })
      if (outcome.verdict === 'unknown_call') {
        throw await reject(404, 'call_not_found', `No call matches this callback (callId ${cb.callId}${ourId ? `, our id ${ourId}` : ''}).`, base)
      }
      log.info(`callback ${outcome.verdict}`, { callId: outcome.call.id, providerStatus: cb.status, webhookId: webhookId ?? undefined })
      return c.json({ verdict: outcome.verdict, callId: outcome.call.id, status: outcome.call.status })
    } catch (err) {
      if (pgErrorCode(err) === PgError.uniqueViolation) {
        const constraint = (err as { constraint_name?: string }).constraint_name
        // Two deliveries of one webhook-id raced past the check: the index kept one.
        if (constraint === 'callbacks_applied_webhook_id') return c.json({ verdict: 'duplicate' })
        if (constraint === 'calls_provider_call_id_key') {
          throw await reject(409, 'provider_call_id_conflict', `Provider callId ${cb.callId} already belongs to another call; nothing was changed.`, {
            ...base,
            callId: ourId ?? null,
          })
        }
      }
      throw err
    }
  }
}
