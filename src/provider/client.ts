import { ofetch } from 'ofetch'
import { callbackToken } from '../domain/callback-token.ts'
import { parseRetryAfterMs } from '../domain/backoff.ts'
import type { Logger } from '../platform/log.ts'
import type { CallResult } from '../domain/call.ts'

// The AI-call provider's API, as docs/dispatch.md, "The provider contract" describes it: POST a dial
// with an Idempotency-Key, GET a call's status by the provider's id.
//
// What a dial's answer proves decides everything downstream, so it is classified here once:
//   accepted    a 2xx naming the provider's call id: the call is placed.
//   not_placed  a refusal (4xx), or a connection that never got as far as sending. 408, 409,
//               425, 429 and unreachable are worth sending again (`retry`); the rest are final.
//   unknown     anything after the request may have reached the provider without an answer
//               for it: a timeout, a dropped connection, a 5xx, a 2xx without a call id. The
//               call may have been placed; only the provider's answer for the same key can tell.

export type DialResult =
  | { kind: 'accepted'; providerCallId: string }
  | { kind: 'not_placed'; retry: boolean; error: string; retryAfterMs?: number | undefined }
  | { kind: 'unknown'; error: string; retryAfterMs?: number | undefined }

export interface DialRequest {
  callId: string
  dial: number
  to: string
  scriptId: string
  metadata: Record<string, unknown>
}

export const PROVIDER_STATUSES = ['QUEUED', 'RINGING', 'IN_PROGRESS', 'COMPLETED', 'FAILED', 'BUSY', 'NO_ANSWER'] as const
export const FINAL_PROVIDER_STATUSES = ['COMPLETED', 'FAILED', 'BUSY', 'NO_ANSWER'] as const
export type FinalProviderStatus = (typeof FINAL_PROVIDER_STATUSES)[number]

export type LookupResult =
  | {
      kind: 'final'
      status: FinalProviderStatus
      providerCallId: string
      durationSec: number | null
      completedAt: Date | null
      notPlaced?: boolean
      /** The provider's own word for the end, and what else it tells (Vapi, Retell). */
      endReason?: string | null
      result?: Omit<CallResult, 'endReason'>
    }
  | { kind: 'live'; status: string }
  /** The provider has no status endpoint (404, 405, 501): fall back to CALL_TIMEOUT_SECONDS. */
  | { kind: 'unsupported'; error: string }
  | { kind: 'error'; error: string; retryAfterMs?: number | undefined }

/** What a look for the calls placed for one dial found (src/worker/dispatcher.ts, after an unknown outcome). */
export type FoundDial = { kind: 'found'; providerCallId: string } | { kind: 'none' } | { kind: 'error'; error: string }

export type ProviderName = 'generic' | 'vapi' | 'retell'

interface ProviderBase {
  readonly name: ProviderName
  dial(request: DialRequest, signal?: AbortSignal): Promise<DialResult>
  lookup(providerCallId: string, signal?: AbortSignal): Promise<LookupResult>
  /** At a worker's start: says (logs) whether the account can have MAX_CONCURRENT_CALLS in flight, where the provider tells. */
  checkLimit?(maxConcurrentCalls: number, log: Logger): Promise<void>
}

/**
 * One provider's API. `idempotent`: a create sent again for the same dial is answered with the
 * first one's answer (an idempotency key, as the generic contract has), so an unknown outcome is
 * settled by sending again. Without one (Vapi, Retell), sending again may ring the person
 * twice: the calls placed for the dial are looked for first (`findDialed`, by the ids we put in
 * the call's metadata, among those created since `since`).
 */
export type ProviderClient = ProviderBase &
  (
    | { readonly idempotent: true }
    | { readonly idempotent: false; findDialed(dial: { callId: string; dial: number; since: Date }, signal?: AbortSignal): Promise<FoundDial> }
  )

/** The key every request for one provider call carries; the provider answers a repeat with its first answer. */
export const idempotencyKey = (callId: string, dial: number) => `${callId}:${dial}`

/** Where the provider sends the call's final status: it names the call and the dial, with a token only we can make. */
export const webhookUrl = (publicBaseUrl: string, callId: string, dial: number, tokenSecret: string) =>
  `${publicBaseUrl}/callbacks/call-status?callId=${encodeURIComponent(callId)}&dial=${dial}&token=${callbackToken(tokenSecret, callId, dial)}`

// Socket errors that happen before a request is written: the provider cannot have seen it.
const NOT_SENT_CODES = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ENETUNREACH',
  'EHOSTUNREACH',
  'UND_ERR_CONNECT_TIMEOUT',
  'CERT_HAS_EXPIRED',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'ERR_TLS_CERT_ALTNAME_INVALID',
])

// Refusals that say "not now" rather than "never": the same request may succeed later.
const TRANSIENT_REFUSALS = new Set([408, 409, 425, 429])

function causes(err: unknown): Array<{ name?: string; message?: string; code?: string }> {
  const chain = []
  for (let e = err as { cause?: unknown } | undefined, depth = 0; e && depth < 5; e = e.cause as typeof e, depth++) {
    chain.push(e as { name?: string; message?: string; code?: string })
  }
  return chain
}

const excerpt = (text: string) => {
  const flat = text.replace(/\s+/g, ' ').trim()
  return flat.length > 200 ? `${flat.slice(0, 200)}…` : flat
}

interface RawAnswer {
  status: number
  body: string
  retryAfterMs: number | undefined
}

export type Exchange = (
  url: string,
  init: { method: string; body?: Record<string, unknown>; headers?: Record<string, string> },
  signal?: AbortSignal,
) => Promise<RawAnswer>

/**
 * One HTTP exchange with the provider, never retried by the library (a create sent twice may
 * ring the person twice), bounded by `timeoutMs`. A thrown error carries `sent`: whether the
 * request can have reached the provider.
 */
export function httpExchange(options: { timeoutMs: number; headers: Record<string, string> }): Exchange {
  return async (url, init, signal) => {
    // ofetch ignores its own `timeout` when a signal is passed, so build one signal for both.
    const deadline = AbortSignal.timeout(options.timeoutMs)
    try {
      const response = await ofetch.raw(url, {
        ...init,
        headers: { ...options.headers, ...init.headers },
        signal: signal ? AbortSignal.any([signal, deadline]) : deadline,
        retry: 0,
        ignoreResponseError: true,
        responseType: 'text',
      })
      return {
        status: response.status,
        body: String((response as Response & { _data?: unknown })._data ?? ''),
        retryAfterMs: parseRetryAfterMs(response.headers.get('retry-after')),
      } satisfies RawAnswer
    } catch (err) {
      // fetch hides the socket error (ECONNREFUSED, UND_ERR_SOCKET…) a few causes deep.
      const code = causes(err).find((e) => e.code)?.code
      const sent = !(code && NOT_SENT_CODES.has(code)) || deadline.aborted
      const reason = deadline.aborted ? `no answer within ${options.timeoutMs} ms` : (code ?? (err as Error).message)
      throw Object.assign(new Error(`provider unreachable: ${reason}`), { sent })
    }
  }
}

/**
 * A create's answer as a DialResult. `id.of` finds the provider's call id in a 2xx body;
 * `refusal` may say whether a 4xx is worth sending again (a concurrency limit) where the status
 * alone does not.
 */
function classifyCreate(
  answer: RawAnswer,
  id: { name: string; of: (json: unknown) => unknown },
  refusal?: (status: number, body: string) => boolean | undefined,
): DialResult {
  const { status, body, retryAfterMs } = answer
  if (status >= 200 && status < 300) {
    let providerCallId: unknown
    try {
      providerCallId = id.of(JSON.parse(body))
    } catch {
      providerCallId = undefined
    }
    if (typeof providerCallId === 'string' && providerCallId !== '') return { kind: 'accepted', providerCallId }
    return { kind: 'unknown', error: `provider answered ${status} without a ${id.name}: ${excerpt(body)}` }
  }
  const error = `provider answered ${status}: ${excerpt(body)}`
  if (status >= 500) return { kind: 'unknown', error, retryAfterMs }
  const retry = refusal?.(status, body) ?? TRANSIENT_REFUSALS.has(status)
  return retry ? { kind: 'not_placed', retry: true, error, retryAfterMs } : { kind: 'not_placed', retry: false, error }
}

/**
 * POSTs a create (with `headers` besides its JSON type) and classifies its answer
 * (classifyCreate); a request that threw is classified by whether it can have been sent.
 */
export async function sendCreate(
  exchange: Exchange,
  url: string,
  create: { body: Record<string, unknown>; headers?: Record<string, string>; id: Parameters<typeof classifyCreate>[1]; refusal?: Parameters<typeof classifyCreate>[2] },
  signal: AbortSignal | undefined,
): Promise<DialResult> {
  let answer: RawAnswer
  try {
    answer = await exchange(url, { method: 'POST', headers: { 'Content-Type': 'application/json', ...create.headers }, body: create.body }, signal)
  } catch (err) {
    return unsent(err)
  }
  return classifyCreate(answer, create.id, create.refusal)
}

/** A read's JSON (`what` names it in errors): a failed exchange, a non-2xx answer and a body that is not JSON are returned as errors. */
export async function fetchJson<T>(
  exchange: Exchange,
  url: string,
  init: { method: string; body?: Record<string, unknown> },
  what: string,
  signal: AbortSignal | undefined,
): Promise<{ ok: true; value: T } | { ok: false; error: string; retryAfterMs?: number | undefined }> {
  let answer: RawAnswer
  try {
    answer = await exchange(url, { ...init, ...(init.body ? { headers: { 'Content-Type': 'application/json' } } : {}) }, signal)
  } catch (err) {
    return { ok: false, error: (err as Error).message }
  }
  if (answer.status < 200 || answer.status >= 300) return { ok: false, error: `${what} answered ${answer.status}: ${excerpt(answer.body)}`, retryAfterMs: answer.retryAfterMs }
  try {
    return { ok: true, value: JSON.parse(answer.body) as T }
  } catch {
    return { ok: false, error: `${what} answered with a body that is not JSON: ${excerpt(answer.body)}` }
  }
}

/** A request that threw: unknown if it can have reached the provider, else not placed (worth sending again). */
function unsent(err: unknown): DialResult {
  const { message, sent } = err as Error & { sent?: boolean }
  return sent === false ? { kind: 'not_placed', retry: true, error: message } : { kind: 'unknown', error: message }
}

export function createProviderClient(options: {
  baseUrl: string
  apiKey?: string | undefined
  timeoutMs: number
  publicBaseUrl: string
  /** The secret callback URL tokens are made with (src/domain/callback-token.ts). */
  callbackSecret: string
}): ProviderClient {
  const endpoint = `${options.baseUrl}/api/v1/calls`
  const exchange = httpExchange({ timeoutMs: options.timeoutMs, headers: options.apiKey ? { Authorization: `Bearer ${options.apiKey}` } : {} })

  return {
    name: 'generic',
    idempotent: true,
    async dial(request, signal) {
      const body = {
        to: request.to,
        scriptId: request.scriptId,
        metadata: request.metadata,
        webhookUrl: webhookUrl(options.publicBaseUrl, request.callId, request.dial, options.callbackSecret),
      }
      const headers = { 'Idempotency-Key': idempotencyKey(request.callId, request.dial) }
      return sendCreate(exchange, endpoint, { body, headers, id: { name: 'callId', of: (json) => (json as { callId?: unknown } | null)?.callId } }, signal)
    },

    async lookup(providerCallId, signal) {
      let answer: RawAnswer
      try {
        answer = await exchange(`${endpoint}/${encodeURIComponent(providerCallId)}`, { method: 'GET' }, signal)
      } catch (err) {
        return { kind: 'error', error: (err as Error).message }
      }
      const { status, body, retryAfterMs } = answer
      if (status === 404 || status === 405 || status === 501) {
        return { kind: 'unsupported', error: `status look-up answered ${status}: ${excerpt(body)}` }
      }
      if (status < 200 || status >= 300) return { kind: 'error', error: `status look-up answered ${status}: ${excerpt(body)}`, retryAfterMs }
      return parseLookup(providerCallId, body)
    },
  }
}

function parseLookup(providerCallId: string, body: string): LookupResult {
  let json: { callId?: unknown; status?: unknown; durationSec?: unknown; completedAt?: unknown }
  try {
    json = JSON.parse(body) as typeof json
  } catch {
    return { kind: 'error', error: `status look-up answered with a body that is not JSON: ${excerpt(body)}` }
  }
  const status = json?.status
  if (typeof status !== 'string' || !(PROVIDER_STATUSES as readonly string[]).includes(status)) {
    return { kind: 'error', error: `status look-up answered an unknown status: ${excerpt(body)}` }
  }
  if (json.callId !== undefined && json.callId !== providerCallId) {
    return { kind: 'error', error: `status look-up for ${providerCallId} answered about ${String(json.callId)}` }
  }
  if (!(FINAL_PROVIDER_STATUSES as readonly string[]).includes(status)) return { kind: 'live', status }
  const duration = json.durationSec
  const completedAt = typeof json.completedAt === 'string' ? new Date(json.completedAt) : null
  return {
    kind: 'final',
    status: status as FinalProviderStatus,
    providerCallId,
    durationSec: typeof duration === 'number' && Number.isInteger(duration) && duration >= 0 && duration <= 2_147_483_647 ? duration : null,
    completedAt: completedAt && !Number.isNaN(completedAt.getTime()) && completedAt.getUTCFullYear() >= 1 ? completedAt : null,
  }
}
