import type { Context } from 'hono'
import * as v from 'valibot'
import type { CallRow } from '../calls/model.ts'
import { recordCallback, type CallbackEntry } from '../db/callbacks.ts'
import { lockClaimsShared } from '../db/locks.ts'
import { PgError, pgErrorCode, type Sql } from '../db/sql.ts'
import { FINAL_PROVIDER_STATUSES } from '../dispatch/provider.ts'
import type { CallQueue } from '../dispatch/queue.ts'
import { bearerToken, matchesSecret } from '../http/auth.ts'
import { HttpProblem } from '../http/problem.ts'
import { timestamp } from '../http/schemas.ts'
import type { Logger } from '../log.ts'
import { applyProviderWord } from './apply.ts'
import { verifyCallbackSignature } from './signature.ts'

// POST /callbacks/call-status?callId=…&dial=…: the provider's final word on a call.
// Authenticated (Standard Webhooks signature, or a static API key), idempotent per webhook-id,
// bound to the dial the URL names (src/callbacks/apply.ts), order-proof (a callback may arrive
// before we processed the dial's 202, twice, or after the call ended), and kept in the
// callbacks table with its verdict.

// Lenient about extra fields (providers add them over time), strict about the ones we use.
const CallbackBody = v.object({
  callId: v.pipe(v.string('must be a string'), v.minLength(1, 'must not be empty'), v.maxLength(200, 'must be at most 200 characters')),
  status: v.picklist(FINAL_PROVIDER_STATUSES, `must be one of ${FINAL_PROVIDER_STATUSES.join(', ')}`),
  // Bounded by what the columns hold (integer, timestamptz from year 1), so an out-of-range
  // value is a 400 rather than a database error.
  durationSec: v.optional(v.nullable(v.pipe(v.number('must be a number'), v.integer('must be a whole number'), v.minValue(0, 'must not be negative'), v.maxValue(2_147_483_647, 'must be at most 2147483647')))),
  completedAt: v.optional(v.nullable(timestamp)),
})

const OurCallId = v.pipe(v.string(), v.uuid())
const DialNumber = v.pipe(v.string(), v.regex(/^[1-9]\d{0,8}$/), v.transform(Number))

export interface CallbackDeps {
  sql: Sql
  queue: CallQueue
  secrets: readonly string[]
  apiKey: string | undefined
  log: Logger
}

export function createCallbackRoute(deps: CallbackDeps) {
  const { sql, queue, log } = deps

  const reject = async (status: 400 | 401 | 404 | 409, code: string, reason: string, r: Partial<CallbackEntry> & { body: string }) => {
    log.warn('callback rejected', { code, reason, webhookId: r.webhookId ?? undefined })
    await recordCallback(sql, {
      source: 'webhook',
      webhookId: null,
      callId: null,
      dial: null,
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
    const dialParam = c.req.query('dial')
    const dial = dialParam === undefined ? null : v.safeParse(DialNumber, dialParam)
    if (dial && !dial.success) throw await reject(400, 'validation_failed', 'query.dial must be a dial number (1 or more).', { body, webhookId })
    if (dial && ourId === undefined) throw await reject(400, 'validation_failed', 'query.dial needs query.callId.', { body, webhookId })
    const dialNumber = dial ? dial.output : null

    const base = { source: 'webhook' as const, webhookId, dial: dialNumber, providerCallId: cb.callId, providerStatus: cb.status, body, reason: null }
    try {
      const outcome = await sql.begin(async (tx) => {
        await lockClaimsShared(tx)
        const [call] = ourId
          ? await tx<CallRow[]>`SELECT * FROM calls WHERE id = ${ourId} FOR UPDATE`
          : await tx<CallRow[]>`SELECT * FROM calls WHERE provider_call_id = ${cb.callId} FOR UPDATE`
        if (!call) return undefined
        return applyProviderWord(tx, queue, call, {
          source: 'webhook',
          webhookId,
          dial: dialNumber,
          providerCallId: cb.callId,
          providerStatus: cb.status,
          durationSec: cb.durationSec ?? null,
          completedAt: cb.completedAt ? new Date(cb.completedAt) : null,
          body,
        })
      })
      if (!outcome) {
        throw await reject(404, 'call_not_found', `No call matches this callback (callId ${cb.callId}${ourId ? `, our id ${ourId}` : ''}).`, base)
      }
      const fields = { callId: outcome.call.id, dial: dialNumber ?? undefined, providerStatus: cb.status, webhookId: webhookId ?? undefined }
      if (outcome.verdict === 'rejected') {
        log.warn('callback rejected', { ...fields, reason: outcome.reason })
        throw new HttpProblem(409, 'callback_not_bound', `This callback does not belong to the call's current dial: it ${outcome.reason}; nothing was changed.`, {
          callId: outcome.call.id,
        })
      }
      if (outcome.verdict === 'corrected') log.warn('callback corrected a call we had declared FAILED', { ...fields, reason: outcome.reason })
      else log.info(`callback ${outcome.verdict}`, fields)
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
