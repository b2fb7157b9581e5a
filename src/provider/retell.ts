import { createHmac, timingSafeEqual } from 'node:crypto'
import type { Logger } from '../platform/log.ts'
import { fetchJson, httpExchange, sendCreate, webhookUrl, type DialResult, type FoundDial, type LookupResult, type ProviderClient } from './client.ts'
import { retellEnd, type VoicemailOutcome } from './end-reasons.ts'
import { noteEndReason } from './observe.ts'
import { resultOf, WEBHOOK_TOLERANCE_MS, type HeaderOf, type ProviderWebhook, type WebhookReading, type WebhookSender } from './webhook.ts'

// Retell (api.retellai.com), from its TypeScript SDK (RetellAI/retell-typescript-sdk: the call
// and concurrency resources, and its webhook verification). POST /v2/create-phone-call has no
// idempotency key (and the SDK retries creates by default, which we never use): every create
// carries our ids in its metadata, and an unknown outcome is settled by listing the calls with
// those ids (POST /v3/list-calls, filtered on metadata). The webhook URL we issue per call and
// dial goes in agent_override.agent.webhook_url; call_ended ends the call, call_analyzed comes
// after it with the analysis (and ends it too, if call_ended was lost).

export interface RetellOptions {
  apiKey: string
  fromNumber: string
  baseUrl: string
  timeoutMs: number
  publicBaseUrl: string
  callbackSecret: string
  voicemail: VoicemailOutcome
}

/** What a Retell call (get-call, list-calls, or a webhook's call) holds that we read. */
interface RetellCall {
  call_id?: unknown
  call_status?: unknown
  disconnection_reason?: unknown
  duration_ms?: unknown
  end_timestamp?: unknown
  metadata?: { orchestrator_call_id?: unknown; orchestrator_dial?: unknown } | null
  transcript?: unknown
  recording_url?: unknown
  call_analysis?: { call_summary?: unknown } | null
}

/** Retell's call_status: registered and ongoing are live; ended, not_connected and error are final. */
const LIVE = new Set(['registered', 'ongoing'])

export function createRetellClient(options: RetellOptions): ProviderClient {
  const base = options.baseUrl.replace(/\/+$/, '')
  const exchange = httpExchange({ timeoutMs: options.timeoutMs, headers: { Authorization: `Bearer ${options.apiKey}` } })

  return {
    name: 'retell',
    idempotent: false,

    async dial(request, signal): Promise<DialResult> {
      const body = {
        from_number: options.fromNumber,
        to_number: request.to,
        override_agent_id: request.scriptId,
        // Retell's dynamic variables are strings.
        retell_llm_dynamic_variables: Object.fromEntries(Object.entries(request.metadata).map(([k, v]) => [k, typeof v === 'string' ? v : JSON.stringify(v)])),
        metadata: { orchestrator_call_id: request.callId, orchestrator_dial: String(request.dial) },
        agent_override: { agent: { webhook_url: webhookUrl(options.publicBaseUrl, request.callId, request.dial, options.callbackSecret) } },
      }
      // 402 (no payment method) and 422 are final; 429 (rate or concurrency limited) is worth sending again.
      return sendCreate(exchange, `${base}/v2/create-phone-call`, { body, id: { name: 'call_id', of: (json) => (json as RetellCall | null)?.call_id } }, signal)
    },

    async lookup(providerCallId, signal): Promise<LookupResult> {
      const got = await fetchJson<RetellCall>(exchange, `${base}/v2/get-call/${encodeURIComponent(providerCallId)}`, { method: 'GET' }, 'get-call', signal)
      if (!got.ok) return { kind: 'error', error: got.error, retryAfterMs: got.retryAfterMs }
      const call = got.value
      if (call?.call_id !== providerCallId) return { kind: 'error', error: `get-call ${providerCallId} answered about ${String(call?.call_id)}` }
      if (typeof call.call_status !== 'string' || LIVE.has(call.call_status)) return { kind: 'live', status: String(call.call_status) }
      const reason = typeof call.disconnection_reason === 'string' ? call.disconnection_reason : ''
      const end = retellEnd(reason, options.voicemail)
      const result = resultOf({ transcript: call.transcript, recordingUrl: call.recording_url, summary: call.call_analysis?.call_summary, analysis: call.call_analysis })
      return { kind: 'final', status: end.status, providerCallId, ...timesOf(call), endReason: reason || null, ...(end.notPlaced ? { notPlaced: true } : {}), ...(result ? { result } : {}) }
    },

    async findDialed({ callId, dial }, signal): Promise<FoundDial> {
      const filter = {
        filter_criteria: {
          metadata: [
            { key: 'orchestrator_call_id', type: 'string', op: 'eq', value: callId },
            { key: 'orchestrator_dial', type: 'string', op: 'eq', value: String(dial) },
          ],
        },
        limit: 10,
        sort_order: 'ascending',
      }
      const got = await fetchJson<{ items?: RetellCall[] }>(exchange, `${base}/v3/list-calls`, { method: 'POST', body: filter }, 'list-calls', signal)
      if (!got.ok) return { kind: 'error', error: got.error }
      if (!Array.isArray(got.value?.items)) return { kind: 'error', error: 'list-calls answered without items' }
      // Checked here too: a filter the server ignored must not adopt another dial's call.
      const ours = got.value.items.find((c) => c?.metadata?.orchestrator_call_id === callId && String(c.metadata?.orchestrator_dial) === String(dial) && typeof c.call_id === 'string')
      return ours ? { kind: 'found', providerCallId: ours.call_id as string } : { kind: 'none' }
    },

    /** GET /get-concurrency: warns when MAX_CONCURRENT_CALLS is more than the account may place at once (the rest would be refused). */
    async checkLimit(maxConcurrentCalls, log) {
      const got = await fetchJson<RetellConcurrency>(exchange, `${base}/get-concurrency`, { method: 'GET' }, 'get-concurrency', undefined)
      if (!got.ok) return log.warn('could not read the Retell account\'s concurrency limit', { error: got.error })
      warnOverLimit(got.value, maxConcurrentCalls, log)
    },
  }
}

interface RetellConcurrency {
  current_concurrency?: number
  concurrency_limit?: number
  reserved_inbound_concurrency?: number
}

function warnOverLimit(answer: RetellConcurrency, maxConcurrentCalls: number, log: Logger): void {
  const limit = answer.concurrency_limit
  if (typeof limit !== 'number') return log.warn('Retell answered no concurrency_limit', {})
  const outbound = limit - (answer.reserved_inbound_concurrency ?? 0)
  if (maxConcurrentCalls > outbound) {
    log.warn('MAX_CONCURRENT_CALLS is more than the Retell account can place at once; calls over it will be refused and tried again', {
      maxConcurrentCalls,
      concurrencyLimit: limit,
      reservedInbound: answer.reserved_inbound_concurrency ?? 0,
    })
  } else log.info('Retell concurrency', { maxConcurrentCalls, concurrencyLimit: limit })
}

function timesOf(call: RetellCall): { durationSec: number | null; completedAt: Date | null } {
  const ms = typeof call.duration_ms === 'number' && Number.isFinite(call.duration_ms) && call.duration_ms >= 0 ? call.duration_ms : null
  const end = typeof call.end_timestamp === 'number' && Number.isFinite(call.end_timestamp) ? new Date(call.end_timestamp) : null
  const durationSec = ms === null ? null : Math.round(ms / 1000)
  return { durationSec: durationSec !== null && durationSec <= 2_147_483_647 ? durationSec : null, completedAt: end && !Number.isNaN(end.getTime()) ? end : null }
}

/**
 * Retell's webhook: `x-retell-signature: v=<ms>,d=<hex>`, the HMAC-SHA256 keyed with the API
 * key of the raw body followed by the timestamp, within five minutes.
 */
export function createRetellWebhook(options: { apiKey: string | undefined; voicemail: VoicemailOutcome; log: Logger }): ProviderWebhook {
  const { apiKey } = options
  return {
    provider: 'retell',
    configured: Boolean(apiKey),
    notConfigured: 'Retell webhook verification needs RETELL_API_KEY (the key with the webhook badge); every callback is refused.',

    authenticate(header: HeaderOf, body: string, nowMs: number): WebhookSender {
      const check = apiKey ? verifyRetellSignature(header('x-retell-signature'), body, apiKey, nowMs) : 'no key'
      return check === true ? { ok: true, webhookId: null } : { ok: false, code: 'invalid_signature', detail: `Callback signature rejected: ${check}.` }
    },

    read(json): WebhookReading {
      const event = json.event
      const call = json.call as RetellCall | undefined
      if (typeof event !== 'string') return { kind: 'invalid', summary: 'body.event must be a string (a Retell webhook)' }
      if (event !== 'call_ended' && event !== 'call_analyzed') return { kind: 'progress', event }
      const id = call?.call_id
      if (typeof id !== 'string' || id === '' || id.length > 200) return { kind: 'invalid', summary: 'body.call.call_id must be a string of 1 to 200 characters' }
      const reason = typeof call?.disconnection_reason === 'string' ? call.disconnection_reason : ''
      const end = retellEnd(reason, options.voicemail)
      noteEndReason('retell', reason, end, options.log)
      const result = resultOf({ transcript: call?.transcript, recordingUrl: call?.recording_url, summary: call?.call_analysis?.call_summary, analysis: call?.call_analysis })
      return {
        kind: 'final',
        report: { providerCallId: id, providerStatus: end.status, endReason: reason || null, ...timesOf(call!), ...(end.notPlaced ? { notPlaced: true } : {}), ...(result ? { result } : {}) },
      }
    },
  }
}

/** True, or why not. */
export function verifyRetellSignature(header: string | undefined, body: string, apiKey: string, nowMs: number): true | string {
  if (!header) return 'missing x-retell-signature header'
  const match = /^v=(\d{1,16}),d=([0-9a-f]{64})$/i.exec(header.trim())
  if (!match) return 'x-retell-signature is not v=<timestamp>,d=<hex digest>'
  const stamp = Number(match[1])
  if (Math.abs(nowMs - stamp) > WEBHOOK_TOLERANCE_MS) return `its timestamp is more than ${WEBHOOK_TOLERANCE_MS / 60_000} minutes from now`
  const expected = createHmac('sha256', apiKey).update(body + String(stamp)).digest()
  return timingSafeEqual(Buffer.from(match[2]!, 'hex'), expected) ? true : 'no valid signature'
}
