import { createHmac } from 'node:crypto'
import { FakeVoiceAi, type CreateFacts, type FakeCall, type FakeOptions, type Json } from './fake-voice-ai.ts'

// A fake of Vapi's API, written from VapiAI/docs (fern/apis/api/openapi.json, and
// fern/server-url/server-authentication.mdx for the HMAC credential): POST /call creates a call,
// GET /call/{id} and GET /call?createdAtGe=&limit= read them (a plain array, newest first), and
// each call's end goes to its assistantOverrides.server.url as a status-update "ended" (when
// asked for) and an end-of-call-report, signed the HMAC credential's default way.

export type { CreateFault } from './fake-voice-ai.ts'

export interface CreateBody {
  assistantId?: string
  phoneNumberId?: string
  name?: string
  customer?: { number?: string }
  assistantOverrides?: { variableValues?: Record<string, unknown>; metadata?: Record<string, unknown>; server?: { url?: string } }
}

export class FakeVapi extends FakeVoiceAi<CreateBody> {
  readonly #secret: string
  readonly #statusUpdate: boolean
  protected readonly defaultEndReason = 'customer-ended-call'

  /** `secret` signs the server messages (VAPI_WEBHOOK_SECRET); `statusUpdate`: send a status-update "ended" before the report. */
  constructor(options: FakeOptions<CreateBody> & { secret: string; statusUpdate?: boolean }) {
    super(options)
    this.#secret = options.secret
    this.#statusUpdate = options.statusUpdate ?? false
  }

  protected facts(body: CreateBody): CreateFacts {
    return { dial: body.name ?? '', phone: body.customer?.number ?? '', webhookUrl: body.assistantOverrides?.server?.url }
  }

  protected isCreate(_method: string, url: URL): boolean {
    return url.pathname === '/call'
  }

  protected concurrencyRefusal(json: Json): void {
    json(400, { message: 'Over Concurrency Limit', error: 'Bad Request', statusCode: 400 })
  }

  protected created(call: FakeCall<CreateBody>): unknown {
    return this.#resource(call)
  }

  protected route(method: string, url: URL, _body: string, json: Json): boolean {
    if (method !== 'GET') return false
    const one = /^\/call\/([^/]+)$/.exec(url.pathname)
    if (one) {
      const call = this.calls.get(decodeURIComponent(one[1]!))
      call ? json(200, this.#resource(call)) : json(404, { message: 'Not Found', statusCode: 404 })
      return true
    }
    if (url.pathname !== '/call') return false
    const since = url.searchParams.get('createdAtGe')
    const limit = Math.min(1000, Number(url.searchParams.get('limit') ?? 100))
    json(200, this.listed(since ? new Date(since) : undefined).slice(0, limit).map((c) => this.#resource(c)))
    return true
  }

  protected endDeliveries(call: FakeCall<CreateBody>): Array<{ headers: Record<string, string>; body: string }> {
    const resource = this.#resource(call)
    const messages: unknown[] = []
    if (this.#statusUpdate) messages.push({ message: { type: 'status-update', status: 'ended', endedReason: call.endReason, call: resource } })
    messages.push({
      message: {
        type: 'end-of-call-report',
        endedReason: call.endReason,
        startedAt: call.startedAt.toISOString(),
        endedAt: call.endedAt?.toISOString(),
        artifact: { transcript: 'AI: Hello.\nUser: Hi.', messages: [] },
        analysis: { summary: 'A short call.' },
        call: resource,
      },
    })
    return messages.map((message) => {
      const body = JSON.stringify(message)
      const timestamp = String(Math.floor(Date.now() / 1000))
      return { headers: { 'x-signature': vapiSignature(this.#secret, timestamp, body), 'x-timestamp': timestamp }, body }
    })
  }

  #resource(call: FakeCall<CreateBody>) {
    return {
      id: call.id,
      orgId: 'org-fake',
      type: 'outboundPhoneCall',
      status: call.status === 'live' ? 'in-progress' : 'ended',
      name: call.body.name,
      assistantId: call.body.assistantId,
      phoneNumberId: call.body.phoneNumberId,
      customer: call.body.customer,
      assistantOverrides: call.body.assistantOverrides,
      createdAt: call.createdAt.toISOString(),
      updatedAt: new Date().toISOString(),
      startedAt: call.startedAt.toISOString(),
      ...(call.endedAt ? { endedAt: call.endedAt.toISOString(), endedReason: call.endReason } : {}),
    }
  }
}

/** Signs a body as Vapi's HMAC credential does by default. */
export function vapiSignature(secret: string, timestamp: string, body: string): string {
  return createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')
}
