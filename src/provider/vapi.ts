import { createHmac, timingSafeEqual } from 'node:crypto'
import type { Logger } from '../platform/log.ts'
import { fetchJson, httpExchange, sendCreate, webhookUrl, type DialResult, type FoundDial, type LookupResult, type ProviderClient } from './client.ts'
import { vapiEnd, type VoicemailOutcome } from './end-reasons.ts'
import { resultOf, WEBHOOK_TOLERANCE_MS, type FinalReport, type HeaderOf, type ProviderWebhook, type WebhookReading, type WebhookSender } from './webhook.ts'
import { noteEndReason } from './observe.ts'

// Vapi (api.vapi.ai), from VapiAI/docs fern/apis/api/openapi.json. A call is created with
// POST /call and has no idempotency key: sending a create again may ring the person again, so
// every create carries our ids (the call's name, and assistantOverrides.metadata) and an
// unknown outcome is settled by finding the call by them (GET /call, findDialed). Its webhook
// URL is the one we issue per call and dial (assistantOverrides.server.url); Vapi sends its
// server messages there, and the one that ends the call is the end-of-call-report, or a
// status-update with status "ended" that may come first or alone.

export interface VapiOptions {
  apiKey: string
  phoneNumberId: string
  baseUrl: string
  timeoutMs: number
  publicBaseUrl: string
  callbackSecret: string
  voicemail: VoicemailOutcome
}

/** What a Vapi call (GET /call/{id}, or a webhook's message.call) holds that we read. */
interface VapiCall {
  id?: unknown
  status?: unknown
  endedReason?: unknown
  startedAt?: unknown
  endedAt?: unknown
  name?: unknown
  createdAt?: unknown
  assistantOverrides?: { metadata?: { orchestratorCallId?: unknown; orchestratorDial?: unknown } }
  artifact?: VapiMessage['artifact']
  analysis?: VapiMessage['analysis']
}

/** A server message, as far as we read it (end-of-call-report, status-update); the legacy top-level fields are read if the artifact lacks them. */
interface VapiMessage {
  type?: unknown
  status?: unknown
  endedReason?: unknown
  startedAt?: unknown
  endedAt?: unknown
  call?: VapiCall
  artifact?: { transcript?: unknown; recordingUrl?: unknown; recording?: { stereoUrl?: unknown; mono?: { combinedUrl?: unknown } } }
  analysis?: { summary?: unknown }
  transcript?: unknown
  recordingUrl?: unknown
  summary?: unknown
}

/** GET /call answers at most this many calls (its maximum `limit`). */
const LIST_LIMIT = 1000

export function createVapiClient(options: VapiOptions): ProviderClient {
  const base = options.baseUrl.replace(/\/+$/, '')
  const exchange = httpExchange({ timeoutMs: options.timeoutMs, headers: { Authorization: `Bearer ${options.apiKey}` } })

  return {
    name: 'vapi',
    idempotent: false,

    async dial(request, signal): Promise<DialResult> {
      const body = {
        assistantId: request.scriptId,
        phoneNumberId: options.phoneNumberId,
        customer: { number: request.to },
        name: vapiCallName(request.callId, request.dial),
        assistantOverrides: {
          variableValues: request.metadata,
          metadata: { orchestratorCallId: request.callId, orchestratorDial: request.dial },
          server: { url: webhookUrl(options.publicBaseUrl, request.callId, request.dial, options.callbackSecret) },
          // Only the messages that tell the call's end: the rest (speech, conversation updates)
          // would cost a request each and tell us nothing. Tools keep their own server URLs.
          serverMessages: ['status-update', 'end-of-call-report'],
        },
      }
      // A 400 about the account's concurrency limit placed nothing: worth sending again later.
      const id = { name: 'call id', of: (json: unknown) => (json as VapiCall | null)?.id }
      return sendCreate(exchange, `${base}/call`, { body, id, refusal: (status, text) => (status === 400 && /concurrency/i.test(text) ? true : undefined) }, signal)
    },

    async lookup(providerCallId, signal): Promise<LookupResult> {
      const got = await fetchJson<VapiCall>(exchange, `${base}/call/${encodeURIComponent(providerCallId)}`, { method: 'GET' }, 'GET /call', signal)
      if (!got.ok) return { kind: 'error', error: got.error, retryAfterMs: got.retryAfterMs }
      const call = got.value
      if (call?.id !== providerCallId) return { kind: 'error', error: `GET /call/${providerCallId} answered about ${String(call?.id)}` }
      if (call.status !== 'ended') return { kind: 'live', status: String(call.status) }
      const reason = typeof call.endedReason === 'string' ? call.endedReason : ''
      const end = vapiEnd(reason, options.voicemail)
      const result = resultOf({
        transcript: call.artifact?.transcript,
        recordingUrl: call.artifact?.recording?.mono?.combinedUrl ?? call.artifact?.recording?.stereoUrl ?? call.artifact?.recordingUrl,
        summary: call.analysis?.summary,
        analysis: call.analysis,
      })
      return { kind: 'final', status: end.status, providerCallId, ...timesOf(call), endReason: reason || null, ...(end.notPlaced ? { notPlaced: true } : {}), ...(result ? { result } : {}) }
    },

    async findDialed({ callId, dial, since }, signal): Promise<FoundDial> {
      const query = new URLSearchParams({ createdAtGe: since.toISOString(), limit: String(LIST_LIMIT), phoneNumberId: options.phoneNumberId })
      const got = await fetchJson<VapiCall[]>(exchange, `${base}/call?${query}`, { method: 'GET' }, 'GET /call', signal)
      if (!got.ok) return { kind: 'error', error: got.error }
      const calls = got.value
      if (!Array.isArray(calls)) return { kind: 'error', error: 'GET /call answered something other than a list' }
      // Vapi filters by time and number only: ours are told by the ids we sent with the create.
      const ours = calls.filter((c) => {
        const m = c?.assistantOverrides?.metadata
        return (m?.orchestratorCallId === callId && Number(m?.orchestratorDial) === dial) || c?.name === vapiCallName(callId, dial)
      })
      const first = ours.filter((c) => typeof c.id === 'string').sort((a, b) => String(a.createdAt).localeCompare(String(b.createdAt)))[0]
      if (first) return { kind: 'found', providerCallId: first.id as string }
      // A full page may have cut ours off; with no order or cursor to page by, it cannot be told.
      if (calls.length >= LIST_LIMIT) return { kind: 'error', error: `GET /call answered ${calls.length} calls since ${since.toISOString()}, its most: ours may be beyond them` }
      return { kind: 'none' }
    },
  }
}

/** The call's name at Vapi (at most 40 characters): our call and dial, also for the dashboard. */
export const vapiCallName = (callId: string, dial: number) => `${callId}:${dial}`

function timesOf(call: { startedAt?: unknown; endedAt?: unknown }): { durationSec: number | null; completedAt: Date | null } {
  const date = (v: unknown) => {
    const d = typeof v === 'string' ? new Date(v) : null
    return d && !Number.isNaN(d.getTime()) ? d : null
  }
  const started = date(call.startedAt)
  const ended = date(call.endedAt)
  const durationSec = started && ended && ended >= started ? Math.round((ended.getTime() - started.getTime()) / 1000) : null
  return { durationSec: durationSec !== null && durationSec <= 2_147_483_647 ? durationSec : null, completedAt: ended }
}

export interface VapiWebhookOptions {
  /** VAPI_WEBHOOK_SECRET: the HMAC credential's secret key. */
  secret: string | undefined
  /** VAPI_WEBHOOK_TOKEN: the Bearer credential's token, when no HMAC secret is set. */
  token: string | undefined
  voicemail: VoicemailOutcome
  log: Logger
}

/**
 * Vapi's server messages. Authenticated by Vapi's HMAC credential (x-signature: the hex
 * HMAC-SHA256, keyed with the secret, of "{x-timestamp}.{raw body}"; the timestamp in seconds or
 * milliseconds, within five minutes) or, without a secret, its Bearer credential.
 */
export function createVapiWebhook(options: VapiWebhookOptions): ProviderWebhook {
  const { secret, token } = options
  return {
    provider: 'vapi',
    configured: Boolean(secret || token),
    notConfigured: 'Vapi webhook authentication is not configured (VAPI_WEBHOOK_SECRET, or VAPI_WEBHOOK_TOKEN); every callback is refused.',

    authenticate(header: HeaderOf, body: string, nowMs: number): WebhookSender {
      if (secret) {
        const check = verifyVapiSignature(header('x-signature'), header('x-timestamp'), body, secret, nowMs)
        return check === true ? { ok: true, webhookId: null } : { ok: false, code: 'invalid_signature', detail: `Callback signature rejected: ${check}.` }
      }
      const presented = /^Bearer\s+(\S+)\s*$/i.exec(header('authorization') ?? '')?.[1]
      return presented !== undefined && token !== undefined && sameText(presented, token)
        ? { ok: true, webhookId: null }
        : { ok: false, code: 'invalid_api_key', detail: 'Callback bearer token missing or wrong.' }
    },

    read(json): WebhookReading {
      const message = json.message as VapiMessage | undefined
      if (typeof message !== 'object' || message === null || typeof message.type !== 'string') {
        return { kind: 'invalid', summary: 'body.message.type must be a string (a Vapi server message)' }
      }
      const ends = message.type === 'end-of-call-report' || (message.type === 'status-update' && message.status === 'ended')
      if (!ends) return { kind: 'progress', event: typeof message.status === 'string' ? `${message.type} ${message.status}` : message.type }
      const id = message.call?.id
      if (typeof id !== 'string' || id === '' || id.length > 200) return { kind: 'invalid', summary: 'body.message.call.id must be a string of 1 to 200 characters' }
      const said = message.endedReason ?? message.call?.endedReason
      const reason = typeof said === 'string' ? said : ''
      const end = vapiEnd(reason, options.voicemail)
      noteEndReason('vapi', reason, end, options.log)
      const times = timesOf({ startedAt: message.startedAt ?? message.call?.startedAt, endedAt: message.endedAt ?? message.call?.endedAt })
      const result = resultOf({
        transcript: message.artifact?.transcript ?? message.transcript,
        recordingUrl: message.artifact?.recording?.mono?.combinedUrl ?? message.artifact?.recording?.stereoUrl ?? message.artifact?.recordingUrl ?? message.recordingUrl,
        summary: message.analysis?.summary ?? message.summary,
        analysis: message.analysis,
      })
      const report: FinalReport = { providerCallId: id, providerStatus: end.status, endReason: reason || null, ...times, ...(end.notPlaced ? { notPlaced: true } : {}), ...(result ? { result } : {}) }
      return { kind: 'final', report }
    },
  }
}

/** True, or why not. */
export function verifyVapiSignature(signature: string | undefined, timestamp: string | undefined, body: string, secret: string, nowMs: number): true | string {
  if (!signature || !timestamp) return 'missing x-signature or x-timestamp header'
  if (!/^\d{1,16}$/.test(timestamp)) return 'x-timestamp is not a number of seconds or milliseconds'
  const stamp = Number(timestamp)
  const ms = stamp > 1e12 ? stamp : stamp * 1000
  if (Math.abs(nowMs - ms) > WEBHOOK_TOLERANCE_MS) return `x-timestamp is more than ${WEBHOOK_TOLERANCE_MS / 60_000} minutes from now`
  const expected = createHmac('sha256', secret).update(`${timestamp}.${body}`).digest()
  const offered = /^[0-9a-f]{64}$/i.test(signature.trim()) ? Buffer.from(signature.trim(), 'hex') : null
  return offered && timingSafeEqual(offered, expected) ? true : 'no valid signature'
}

function sameText(a: string, b: string): boolean {
  const x = createHmac('sha256', 'compare').update(a).digest()
  const y = createHmac('sha256', 'compare').update(b).digest()
  return timingSafeEqual(x, y)
}
