import type { Context } from 'hono'
import * as v from 'valibot'
import { deliveryKeys } from '../../store/callbacks.ts'
import type { Sql } from '../../store/sql.ts'
import { FINAL_PROVIDER_STATUSES } from '../../provider/client.ts'
import type { ProviderWebhook } from '../../provider/webhook.ts'
import type { Queues } from '../../store/queues.ts'
import { bearerToken, matchesSecret } from '../auth.ts'
import { readBody } from '../body.ts'
import { isJsonObject, textFault } from '../input.ts'
import { HttpProblem, type ProblemCode } from '../problem.ts'
import { singleQuery, timestamp } from '../schemas.ts'
import { refusalTally, throttled, type Logger } from '../../platform/log.ts'
import type { CallingPolicy } from '../../domain/policy.ts'
import { metrics } from '../../platform/metrics.ts'
import { deliveredBefore, keepRefused, receiveReport, type Delivery } from '../../services/callbacks/receive.ts'
import type { RefusalBackoff } from '../../services/callbacks/apply.ts'
import { verifyCallbackSignature } from '../../domain/signature.ts'
import { urlTokenSecrets, verifyCallbackToken } from '../../domain/callback-token.ts'

// POST /callbacks/call-status?callId=…&dial=…&token=…: the provider's final report on a call.
// In this order: authenticated (Standard Webhooks signature, or a static API key), addressed to
// a URL we issued for that call and dial (the token), well-formed, then applied once per
// webhook-id and bound to its dial (src/services/callbacks/receive.ts and apply.ts). Nothing a request that fails the
// first two checks sends is written anywhere: it is counted and logged (at most every few
// seconds), so a flood fills neither the disk nor the logs. Authenticated callbacks are kept in
// the callbacks table with their verdict; a malformed one without its body.

// Lenient about extra fields (providers add them over time), strict about the ones we use.
export const CallbackBody = v.object({
  callId: v.pipe(
    v.string('must be a string'),
    v.minLength(1, 'must not be empty'),
    v.maxLength(200, 'must be at most 200 characters'),
    v.check((s) => !textFault(s), 'must not contain NUL characters or unpaired surrogates'),
  ),
  status: v.picklist(FINAL_PROVIDER_STATUSES, `must be one of ${FINAL_PROVIDER_STATUSES.join(', ')}`),
  // Bounded by what the columns hold (integer, timestamptz from year 1), so an out-of-range
  // value is a 400 rather than a database error.
  durationSec: v.optional(v.nullable(v.pipe(v.number('must be a number'), v.integer('must be a whole number'), v.minValue(0, 'must not be negative'), v.maxValue(2_147_483_647, 'must be at most 2147483647')))),
  completedAt: v.optional(v.nullable(timestamp)),
})

export const CallbackUrl = v.object({
  callId: v.pipe(v.string(), v.uuid()),
  dial: v.pipe(v.string(), v.regex(/^[1-9]\d{0,8}$/), v.transform(Number)),
  token: v.pipe(v.string(), v.regex(/^[A-Za-z0-9_-]{43}$/)),
})

export interface CallbackDeps {
  sql: Sql
  queue: Queues
  /** For outcome retries (a BUSY callback may start a new dial rather than end the call). */
  calling?: CallingPolicy | undefined
  /** WEBHOOK_SECRET: with one, every callback must be signed. */
  secrets: readonly string[]
  /** WEBHOOK_API_KEY: accepted only when no secret is configured. */
  apiKey: string | undefined
  /** CALLBACK_URL_SECRET: the URL tokens' key when set, else the secrets (src/domain/callback-token.ts). */
  urlSecret?: string | undefined
  /** RETRY_BASE_SECONDS and RETRY_MAX_SECONDS: a new dial after the provider refused to place one waits this backoff. */
  backoff?: RefusalBackoff | undefined
  /** The provider's webhook (Vapi, Retell): who sent a delivery and what it says. Absent: the generic contract, with `secrets` and `apiKey`. */
  webhook?: ProviderWebhook | undefined
  log: Logger
}

/**
 * The generic contract's webhook (docs/dispatch.md): Standard Webhooks signatures with
 * WEBHOOK_SECRET, or a static API key when no secret is set; the body is CallbackBody.
 */
export function genericWebhook(deps: Pick<CallbackDeps, 'secrets' | 'apiKey'>): ProviderWebhook {
  return {
    provider: 'generic',
    configured: deps.secrets.length > 0 || Boolean(deps.apiKey),
    notConfigured: 'Callback authentication is not configured (WEBHOOK_SECRET, or WEBHOOK_API_KEY with CALLBACK_URL_SECRET); every callback is refused.',
    authenticate(header, body, nowMs) {
      // With a secret configured every callback must be signed: the API key is no way around it.
      if (deps.secrets.length > 0) {
        const check = verifyCallbackSignature(
          { id: header('webhook-id'), timestamp: header('webhook-timestamp'), signature: header('webhook-signature') },
          body,
          deps.secrets,
          Math.floor(nowMs / 1000),
        )
        return check.ok ? { ok: true, webhookId: check.webhookId } : { ok: false, code: 'invalid_signature', detail: `Callback signature rejected: ${check.reason}.` }
      }
      const presented = bearerToken(header('authorization')) ?? header('x-api-key')
      return deps.apiKey && matchesSecret(presented, [deps.apiKey])
        ? { ok: true, webhookId: null }
        : { ok: false, code: 'invalid_api_key', detail: 'Callback API key missing or wrong.' }
    },
    read(json) {
      const parsed = v.safeParse(CallbackBody, json)
      if (!parsed.success) {
        return { kind: 'invalid', summary: parsed.issues.map((i) => `body.${v.getDotPath(i) ?? ''} ${i.message}`.replace('body. ', 'body ')).join('; ') }
      }
      const cb = parsed.output
      return {
        kind: 'final',
        report: {
          providerCallId: cb.callId,
          providerStatus: cb.status,
          durationSec: cb.durationSec ?? null,
          completedAt: cb.completedAt ? new Date(cb.completedAt) : null,
          endReason: null,
        },
      }
    },
  }
}

export interface CallbackRoute {
  handle(c: Context): Promise<Response>
}

export function createCallbackRoute(deps: CallbackDeps): CallbackRoute {
  const { sql, queue, log } = deps
  const webhook = deps.webhook ?? genericWebhook(deps)
  const tokenSecrets = urlTokenSecrets(deps)
  const floods = throttled(log, 5_000)

  const refusals = refusalTally(log, 'callbacks refused in the last minute')

  /**
   * Refused before it proved who sent it or that we issued its URL: counted, and logged at
   * debug level and in a summary once a minute, never stored.
   */
  const refuse = (status: 400 | 401, code: ProblemCode, detail: string) => {
    metrics.callbacksRefused.inc({ reason: code })
    log.debug('callback refused', { code, reason: detail })
    refusals.count(code)
    return new HttpProblem(status, code, detail)
  }

  const handle = async (c: Context): Promise<Response> => {
    if (tokenSecrets.length === 0 || !webhook.configured) throw refuse(401, 'callbacks_not_configured', webhook.notConfigured)
    // The URL first: it needs no body, so a request at a URL we never issued costs no read.
    let query: Record<string, string>
    try {
      query = singleQuery(c.req.queries())
    } catch {
      throw refuse(401, 'invalid_callback_url', 'The callback URL is not one we issued: a query parameter is repeated.')
    }
    const url = v.safeParse(CallbackUrl, query)
    if (!url.success || !verifyCallbackToken(url.output.token, url.output.callId, url.output.dial, tokenSecrets)) {
      throw refuse(401, 'invalid_callback_url', 'The callback URL is not one we issued for a call: use the webhookUrl sent with the dial, as it is.')
    }
    const { callId, dial } = url.output

    const body = await readBody(c)
    const sender = webhook.authenticate((name) => c.req.header(name), body, Date.now())
    if (!sender.ok) throw refuse(401, sender.code, sender.detail)
    const { webhookId } = sender

    let json: unknown
    try {
      json = JSON.parse(body)
    } catch {
      json = undefined
    }
    const reading = isJsonObject(json) ? webhook.read(json) : undefined
    if (reading?.kind === 'progress') {
      // About the call but not its end (ringing, a transcript so far): nothing to apply, nothing
      // kept, no statement made. Vapi sends many of these.
      metrics.webhookProgress.inc({ provider: webhook.provider })
      log.debug('callback reports progress', { callId, dial, event: reading.event })
      return c.json({ verdict: 'progress', callId })
    }

    // A delivery we have had before (a replay, or the provider trying again) is counted on the
    // first one's row and changes nothing (src/store/callbacks.ts, DeliveryKeys).
    const delivery: Delivery = { callId, dial, webhookId, keys: deliveryKeys(webhookId, body), body }
    const duplicate = () => {
      log.debug('callback delivered again', { callId, dial, webhookId: webhookId ?? undefined })
      return c.json({ verdict: 'duplicate', callId })
    }
    if (await deliveredBefore(sql, delivery.keys)) return duplicate()

    // From here the sender is authenticated and the URL is ours: what it sends is kept, once.
    const refused = async (reason: string, problem: HttpProblem): Promise<never> => {
      floods.warn('callback rejected', { callId, dial, reason })
      await keepRefused(sql, delivery, 'rejected', reason)
      throw problem
    }
    if (json === undefined) {
      return refused('the body is not valid JSON', new HttpProblem(400, 'malformed_json', 'The callback body is not valid JSON.'))
    }
    if (!reading) {
      return refused('the body is not a JSON object', new HttpProblem(400, 'validation_failed', 'The callback is not valid: the body must be a JSON object.'))
    }
    if (reading.kind === 'invalid') {
      return refused(`not valid: ${reading.summary}`, new HttpProblem(400, 'validation_failed', `The callback is not valid: ${reading.summary}.`))
    }
    const cb = { callId: reading.report.providerCallId, status: reading.report.providerStatus }

    const received = await receiveReport({ sql, queue, calling: deps.calling, backoff: deps.backoff }, delivery, reading.report)
    switch (received.kind) {
      case 'duplicate':
        return duplicate()
      case 'unknown_call':
        floods.warn('callback rejected', { callId, dial, reason: `no call ${callId}` })
        throw new HttpProblem(404, 'call_not_found', `No call ${callId}; the callback changed nothing.`)
      case 'provider_call_id_taken':
        floods.warn('callback rejected', { callId, dial, reason: `provider callId ${cb.callId} already belongs to another call` })
        throw new HttpProblem(409, 'provider_call_id_conflict', `Provider callId ${cb.callId} already belongs to another call; nothing was changed.`)
    }
    const { outcome } = received
    const fields = { callId, dial, providerStatus: cb.status, webhookId: webhookId ?? undefined, from: outcome.before, to: outcome.call.status }
    if (outcome.verdict === 'rejected') {
      floods.warn('callback not bound to the dial', { ...fields, reason: outcome.reason })
      throw new HttpProblem(409, 'callback_not_bound', `This callback does not belong to the call's current dial: it ${outcome.reason}; nothing was changed.`, {
        callId,
      })
    }
    if (outcome.verdict === 'corrected') log.warn('callback corrected a call we had declared FAILED', { ...fields, reason: outcome.reason })
    else log.info(`callback ${outcome.verdict}`, fields)
    return c.json({ verdict: outcome.verdict, callId, status: outcome.call.status })
  }

  return { handle }
}
