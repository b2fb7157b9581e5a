import { ofetch } from 'ofetch'
import { parseRetryAfterMs } from './backoff.ts'

// The AI-call provider's dial endpoint, exactly as the dispatch issue specifies it.

export type DialResult =
  | { kind: 'accepted'; providerCallId: string }
  | { kind: 'retryable'; error: string; retryAfterMs?: number | undefined }
  | { kind: 'rejected'; error: string }

export interface DialRequest {
  callId: string
  attempt: number
  to: string
  scriptId: string
  metadata: Record<string, unknown>
}

export interface ProviderClient {
  dial(request: DialRequest, signal?: AbortSignal): Promise<DialResult>
}

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

export function createProviderClient(options: {
  baseUrl: string
  apiKey?: string | undefined
  timeoutMs: number
  publicBaseUrl: string
}): ProviderClient {
  const endpoint = `${options.baseUrl}/api/v1/calls`
  return {
    async dial(request, signal) {
      const webhookUrl = `${options.publicBaseUrl}/callbacks/call-status?callId=${encodeURIComponent(request.callId)}`
      // ofetch ignores its own `timeout` when a signal is passed, so build one signal for both.
      const deadline = AbortSignal.timeout(options.timeoutMs)
      let response: Response
      try {
        response = await ofetch.raw(endpoint, {
          method: 'POST',
          body: { to: request.to, scriptId: request.scriptId, metadata: request.metadata, webhookUrl },
          headers: {
            'Content-Type': 'application/json',
            'Idempotency-Key': `${request.callId}:${request.attempt}`,
            ...(options.apiKey ? { Authorization: `Bearer ${options.apiKey}` } : {}),
          },
          signal: signal ? AbortSignal.any([signal, deadline]) : deadline,
          retry: 0,
          ignoreResponseError: true,
          responseType: 'text',
        })
      } catch (err) {
        const timedOut = deadline.aborted
        // fetch hides the socket error (ECONNREFUSED, ENOTFOUND…) a few causes deep.
        const code = causes(err).find((e) => e.code)?.code
        const reason = timedOut ? `no answer within ${options.timeoutMs} ms` : (code ?? (err as Error).message)
        return { kind: 'retryable', error: `provider unreachable: ${reason}` }
      }
      const body = String((response as Response & { _data?: unknown })._data ?? '')
      const status = response.status
      if (status >= 200 && status < 300) {
        let providerCallId: unknown
        try {
          providerCallId = (JSON.parse(body) as { callId?: unknown }).callId
        } catch {
          providerCallId = undefined
        }
        if (typeof providerCallId === 'string' && providerCallId !== '') return { kind: 'accepted', providerCallId }
        return { kind: 'rejected', error: `provider answered ${status} without a callId: ${excerpt(body)}` }
      }
      if (status === 429) {
        return {
          kind: 'retryable',
          error: `provider answered 429 Too Many Requests: ${excerpt(body)}`,
          retryAfterMs: parseRetryAfterMs(response.headers.get('retry-after')),
        }
      }
      if (status >= 500) return { kind: 'retryable', error: `provider answered ${status}: ${excerpt(body)}` }
      return { kind: 'rejected', error: `provider answered ${status}: ${excerpt(body)}` }
    },
  }
}
