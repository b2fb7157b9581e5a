import { createHmac } from 'node:crypto'
import { FakeVoiceAi, type CreateFacts, type FakeCall, type FakeOptions, type Json } from './fake-voice-ai.ts'

// A fake of Retell's API, written from its TypeScript SDK (RetellAI/retell-typescript-sdk: the
// call resource, the concurrency resource, and the webhook verification): POST
// /v2/create-phone-call (201, no idempotency), GET /v2/get-call/{call_id}, POST /v3/list-calls
// with filter_criteria.metadata ({key, type: 'string', op: 'eq', value}), GET /get-concurrency,
// and each call's end sent to agent_override.agent.webhook_url as call_ended and then
// call_analyzed, signed x-retell-signature: v=<ms>,d=<hex HMAC-SHA256(api key, body + ms)>.

export interface RetellCreateBody {
  from_number?: string
  to_number?: string
  override_agent_id?: string
  retell_llm_dynamic_variables?: Record<string, string>
  metadata?: { orchestrator_call_id?: string; orchestrator_dial?: string }
  agent_override?: { agent?: { webhook_url?: string } }
}

export class FakeRetell extends FakeVoiceAi<RetellCreateBody> {
  protected readonly defaultEndReason = 'agent_hangup'
  readonly #concurrencyLimit: number
  /** The list-calls filters received. */
  readonly listFilters: unknown[] = []

  constructor(options: FakeOptions<RetellCreateBody> & { concurrencyLimit?: number }) {
    super(options)
    this.#concurrencyLimit = options.concurrencyLimit ?? 20
  }

  protected facts(body: RetellCreateBody): CreateFacts {
    return {
      dial: `${body.metadata?.orchestrator_call_id}:${body.metadata?.orchestrator_dial}`,
      phone: body.to_number ?? '',
      webhookUrl: body.agent_override?.agent?.webhook_url,
    }
  }

  protected isCreate(_method: string, url: URL): boolean {
    return url.pathname === '/v2/create-phone-call'
  }

  protected concurrencyRefusal(json: Json): void {
    json(429, { status: 'error', message: 'Account rate limited, please throttle your requests.' })
  }

  protected created(call: FakeCall<RetellCreateBody>): unknown {
    return { ...this.#resource(call), call_status: 'registered' }
  }

  protected route(method: string, url: URL, body: string, json: Json): boolean {
    const one = /^\/v2\/get-call\/([^/]+)$/.exec(url.pathname)
    if (method === 'GET' && one) {
      const call = this.calls.get(decodeURIComponent(one[1]!))
      call ? json(200, this.#resource(call)) : json(422, { status: 'error', message: 'Cannot find requested asset under given api key.' })
      return true
    }
    if (method === 'GET' && url.pathname === '/get-concurrency') {
      json(200, { current_concurrency: [...this.calls.values()].filter((c) => c.status === 'live').length, concurrency_limit: this.#concurrencyLimit, reserved_inbound_concurrency: 0 })
      return true
    }
    if (method === 'POST' && url.pathname === '/v3/list-calls') {
      const request = JSON.parse(body || '{}') as { filter_criteria?: { metadata?: Array<{ key: string; op: string; type: string; value: string }> }; limit?: number }
      this.listFilters.push(request.filter_criteria)
      const filters = request.filter_criteria?.metadata ?? []
      const items = this.listed()
        .reverse()
        .filter((c) => filters.every((f) => f.op === 'eq' && (c.body.metadata as Record<string, unknown> | undefined)?.[f.key] === f.value))
        .slice(0, request.limit ?? 50)
        .map((c) => {
          const { transcript: _omitted, ...rest } = this.#resource(c)
          return rest
        })
      json(200, { items, has_more: false })
      return true
    }
    return false
  }

  protected endDeliveries(call: FakeCall<RetellCreateBody>): Array<{ headers: Record<string, string>; body: string }> {
    const resource = this.#resource(call)
    const { call_analysis: _later, ...ended } = resource
    return [
      { event: 'call_ended', call: ended },
      { event: 'call_analyzed', call: resource },
    ].map((delivery) => {
      const body = JSON.stringify(delivery)
      return { headers: { 'x-retell-signature': retellSignature(this.options.apiKey, body, Date.now()) }, body }
    })
  }

  #resource(call: FakeCall<RetellCreateBody>) {
    const ended = call.status === 'ended'
    const connected = !['dial_busy', 'dial_no_answer', 'dial_failed', 'invalid_destination'].includes(call.endReason ?? '')
    return {
      call_id: call.id,
      call_type: 'phone_call',
      agent_id: call.body.override_agent_id,
      agent_version: 1,
      direction: 'outbound',
      from_number: call.body.from_number,
      to_number: call.body.to_number,
      metadata: call.body.metadata,
      retell_llm_dynamic_variables: call.body.retell_llm_dynamic_variables,
      call_status: ended ? (connected ? 'ended' : 'not_connected') : 'ongoing',
      start_timestamp: call.startedAt.getTime(),
      ...(ended
        ? {
            end_timestamp: call.endedAt!.getTime(),
            duration_ms: call.endedAt!.getTime() - call.startedAt.getTime(),
            disconnection_reason: call.endReason,
            transcript: 'Agent: Hello.\nUser: Hi.',
            recording_url: `https://recordings.example/${call.id}.wav`,
            call_analysis: { call_summary: 'A short call.', call_successful: true, user_sentiment: 'Positive', in_voicemail: false },
          }
        : {}),
    }
  }
}

/** x-retell-signature for a body, as Retell's SDK makes it. */
export function retellSignature(apiKey: string, body: string, timestampMs: number): string {
  return `v=${timestampMs},d=${createHmac('sha256', apiKey).update(body + timestampMs).digest('hex')}`
}
