import { createHmac } from 'node:crypto'

// The simulator as Vapi or Retell (SIMULATOR_FLAVOR), so that `npm start` shows either end to
// end: their create, look-up and list paths and bodies, no idempotency (a create sent twice
// places two calls, as theirs do, and the stats show it), and their webhooks, signed their way.
// The calls themselves (durations, faults, outcomes, what was live) are the simulator's own
// (./simulator.ts); this only translates. Written from VapiAI/docs and the Retell SDK, as the
// adapters in src/provider/ are.

export type Flavor = 'vapi' | 'retell'

/** A create, read the flavor's way: the dial as our ids name it, and the call to place. */
export interface FlavoredCreate {
  /** `{callId}:{dial}` from our ids in the body (what the simulator counts placements by). */
  key: string
  to: string
  scriptId: string
  metadata: Record<string, unknown>
  webhookUrl: string
  /** The ids we sent, given back in look-ups and lists. */
  ids: Record<string, unknown>
}

/** A placed call, as the flavor's resources are made of it. */
export interface FlavoredCall {
  providerCallId: string
  key: string
  to: string
  scriptId: string
  ids: Record<string, unknown>
  startedAt: number
  endedAt?: number | undefined
  /** Our four words; the flavor says them its way. */
  status?: string | undefined
}

const VAPI_REASONS: Record<string, string> = { COMPLETED: 'customer-ended-call', FAILED: 'pipeline-error-openai-llm-failed', BUSY: 'customer-busy', NO_ANSWER: 'customer-did-not-answer' }
const RETELL_REASONS: Record<string, string> = { COMPLETED: 'user_hangup', FAILED: 'error_unknown', BUSY: 'dial_busy', NO_ANSWER: 'dial_no_answer' }

const str = (v: unknown) => (typeof v === 'string' ? v : undefined)
const obj = (v: unknown) => (typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined)

export interface FlavorSpeech {
  createPath: string
  lookupPath: string
  readCreate(json: unknown): FlavoredCreate | undefined
  /** The 201 of a create. */
  created(call: FlavoredCall): unknown
  resource(call: FlavoredCall): unknown
  /** The webhook deliveries that tell the call's end, signed. */
  endDeliveries(call: FlavoredCall, keys: { secret: string; apiKey: string }): Array<{ headers: Record<string, string>; body: string }>
}

export const vapi: FlavorSpeech = {
  createPath: '/call',
  lookupPath: '/call/:id',
  readCreate(json) {
    const body = obj(json)
    const overrides = obj(body?.assistantOverrides)
    const to = str(obj(body?.customer)?.number)
    const webhookUrl = str(obj(overrides?.server)?.url)
    if (!body || !to || !webhookUrl) return undefined
    const ids = obj(overrides?.metadata) ?? {}
    return { key: str(body.name) ?? `${String(ids.orchestratorCallId)}:${String(ids.orchestratorDial)}`, to, scriptId: str(body.assistantId) ?? '', metadata: obj(overrides?.variableValues) ?? {}, webhookUrl, ids }
  },
  created: (call) => vapi.resource(call),
  resource(call) {
    return {
      id: call.providerCallId,
      orgId: 'simulated',
      type: 'outboundPhoneCall',
      name: call.key,
      assistantId: call.scriptId,
      customer: { number: call.to },
      assistantOverrides: { metadata: call.ids },
      status: call.endedAt ? 'ended' : 'in-progress',
      createdAt: new Date(call.startedAt).toISOString(),
      startedAt: new Date(call.startedAt).toISOString(),
      ...(call.endedAt ? { endedAt: new Date(call.endedAt).toISOString(), endedReason: VAPI_REASONS[call.status ?? 'FAILED'] } : {}),
    }
  },
  endDeliveries(call, keys) {
    const body = JSON.stringify({
      message: {
        type: 'end-of-call-report',
        endedReason: VAPI_REASONS[call.status ?? 'FAILED'],
        startedAt: new Date(call.startedAt).toISOString(),
        endedAt: new Date(call.endedAt ?? Date.now()).toISOString(),
        artifact: { transcript: `AI: Hello, this is ${call.scriptId}.\nUser: Hi.` },
        analysis: { summary: `A simulated call that ended ${call.status}.` },
        call: vapi.resource(call),
      },
    })
    const timestamp = String(Math.floor(Date.now() / 1000))
    return [{ headers: { 'x-timestamp': timestamp, 'x-signature': createHmac('sha256', keys.secret).update(`${timestamp}.${body}`).digest('hex') }, body }]
  },
}

export const retell: FlavorSpeech = {
  createPath: '/v2/create-phone-call',
  lookupPath: '/v2/get-call/:id',
  readCreate(json) {
    const body = obj(json)
    const to = str(body?.to_number)
    const webhookUrl = str(obj(obj(body?.agent_override)?.agent)?.webhook_url)
    if (!body || !to || !webhookUrl) return undefined
    const ids = obj(body.metadata) ?? {}
    return { key: `${String(ids.orchestrator_call_id)}:${String(ids.orchestrator_dial)}`, to, scriptId: str(body.override_agent_id) ?? '', metadata: obj(body.retell_llm_dynamic_variables) ?? {}, webhookUrl, ids }
  },
  created: (call) => ({ ...(retell.resource(call) as object), call_status: 'registered' }),
  resource(call) {
    const reason = RETELL_REASONS[call.status ?? 'FAILED']!
    const connected = call.status === 'COMPLETED' || call.status === 'FAILED'
    return {
      call_id: call.providerCallId,
      call_type: 'phone_call',
      direction: 'outbound',
      agent_id: call.scriptId,
      to_number: call.to,
      metadata: call.ids,
      call_status: call.endedAt ? (connected ? 'ended' : 'not_connected') : 'ongoing',
      start_timestamp: call.startedAt,
      ...(call.endedAt
        ? {
            end_timestamp: call.endedAt,
            duration_ms: call.endedAt - call.startedAt,
            disconnection_reason: reason,
            transcript: `Agent: Hello, this is ${call.scriptId}.\nUser: Hi.`,
            call_analysis: { call_summary: `A simulated call that ended ${call.status}.`, call_successful: call.status === 'COMPLETED' },
          }
        : {}),
    }
  },
  endDeliveries(call, keys) {
    const { call_analysis: _later, ...ended } = retell.resource(call) as Record<string, unknown>
    return [
      { event: 'call_ended', call: ended },
      { event: 'call_analyzed', call: retell.resource(call) },
    ].map((delivery) => {
      const body = JSON.stringify(delivery)
      const at = Date.now()
      return { headers: { 'x-retell-signature': `v=${at},d=${createHmac('sha256', keys.apiKey).update(body + at).digest('hex')}` }, body }
    })
  },
}

export const FLAVORS: Record<Flavor, FlavorSpeech> = { vapi, retell }
