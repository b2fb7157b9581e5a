import { createHmac, randomUUID } from 'node:crypto'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'

// A fake of Vapi's API, written from VapiAI/docs (fern/apis/api/openapi.json, and
// fern/server-url/server-authentication.mdx for the HMAC credential): POST /call creates a call
// with no idempotency of any kind, GET /call/{id} and GET /call?createdAtGe=&limit= read them,
// and each call's end is sent to its assistantOverrides.server.url as a status-update "ended"
// and an end-of-call-report, signed the HMAC credential's default way. It keeps what the
// provider saw: every create, the calls live at once, per phone, and any dial placed twice.

/** What happens to one create: placed or not, and what the client gets back. */
export type CreateFault =
  | 'none'
  /** Placed; the answer comes after the client has given up. */
  | 'late'
  /** Placed; answered 502. */
  | '502-after'
  /** Placed; the connection is dropped without an answer. */
  | 'drop-after'
  /** Not placed; answered 502 (the client cannot tell it from 502-after). */
  | '502-before'
  /** Not placed; answered 400 naming the concurrency limit. */
  | 'concurrency'

export interface FakeVapiOptions {
  apiKey: string
  /** Signs the server messages (VAPI_WEBHOOK_SECRET). */
  secret: string
  /** The fault for the n-th create (from 1). */
  fault?: (n: number, body: CreateBody) => CreateFault
  /** How long a placed call lasts before it ends. */
  durationMs?: number
  /** Its endedReason, by the call's create body. */
  endedReason?: (body: CreateBody) => string
  /** A placed call shows in GET /call only this long after its create. */
  listDelayMs?: number
  /** How long a "late" create answers after. */
  lateMs?: number
  /** Send a status-update "ended" before the end-of-call-report. */
  statusUpdate?: boolean
}

export interface CreateBody {
  assistantId?: string
  phoneNumberId?: string
  name?: string
  customer?: { number?: string }
  assistantOverrides?: { variableValues?: Record<string, unknown>; metadata?: Record<string, unknown>; server?: { url?: string } }
}

interface FakeCall {
  id: string
  body: CreateBody
  createdAt: Date
  status: 'queued' | 'in-progress' | 'ended'
  endedReason?: string
  startedAt?: Date
  endedAt?: Date
}

export class FakeVapi {
  readonly creates: Array<{ body: CreateBody; authorization: string | undefined; fault: CreateFault }> = []
  readonly calls = new Map<string, FakeCall>()
  readonly webhookAnswers: number[] = []
  maxLive = 0
  phoneOverlaps = 0
  #live = 0
  readonly #livePhones = new Set<string>()
  readonly #timers = new Set<NodeJS.Timeout>()
  readonly #server = createServer((req, res) => void this.#handle(req, res))
  readonly #options: FakeVapiOptions
  url = ''

  constructor(options: FakeVapiOptions) {
    this.#options = options
  }

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.#server.listen(0, '127.0.0.1', resolve))
    this.url = `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`
  }

  async stop(): Promise<void> {
    for (const timer of this.#timers) clearTimeout(timer)
    this.#server.closeAllConnections()
    await new Promise<void>((resolve) => this.#server.close(() => resolve()))
  }

  /** Dials (our `{callId}:{dial}` names) Vapi placed more than once. */
  placedTwice(): string[] {
    const count = new Map<string, number>()
    for (const call of this.calls.values()) count.set(call.body.name ?? '', (count.get(call.body.name ?? '') ?? 0) + 1)
    return [...count].filter(([, n]) => n > 1).map(([name]) => name)
  }

  get live(): number {
    return this.#live
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = []
    for await (const chunk of req) chunks.push(chunk as Buffer)
    const json = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' })
      res.end(JSON.stringify(body))
    }
    if (req.headers.authorization !== `Bearer ${this.#options.apiKey}`) return json(401, { message: 'Invalid API key', statusCode: 401 })
    const url = new URL(req.url ?? '/', 'http://fake')
    if (req.method === 'POST' && url.pathname === '/call') return this.#create(JSON.parse(Buffer.concat(chunks).toString()) as CreateBody, req, res, json)
    const one = /^\/call\/([^/]+)$/.exec(url.pathname)
    if (req.method === 'GET' && one) {
      const call = this.calls.get(decodeURIComponent(one[1]!))
      return call ? json(200, this.#resource(call)) : json(404, { message: 'Not Found', statusCode: 404 })
    }
    if (req.method === 'GET' && url.pathname === '/call') {
      const since = url.searchParams.get('createdAtGe')
      const limit = Math.min(1000, Number(url.searchParams.get('limit') ?? 100))
      const visibleBefore = Date.now() - (this.#options.listDelayMs ?? 0)
      const calls = [...this.calls.values()]
        .filter((c) => (!since || c.createdAt >= new Date(since)) && c.createdAt.getTime() <= visibleBefore)
        .sort((a, b) => b.createdAt.getTime() - a.createdAt.getTime())
        .slice(0, limit)
      return json(200, calls.map((c) => this.#resource(c)))
    }
    json(404, { message: `Cannot ${req.method} ${url.pathname}`, statusCode: 404 })
  }

  #create(body: CreateBody, req: IncomingMessage, res: ServerResponse, json: (status: number, body: unknown) => void): void {
    const fault = this.#options.fault?.(this.creates.length + 1, body) ?? 'none'
    this.creates.push({ body, authorization: req.headers.authorization, fault })
    if (fault === '502-before') return json(502, { message: 'Bad Gateway' })
    if (fault === 'concurrency') return json(400, { message: 'Over Concurrency Limit', error: 'Bad Request', statusCode: 400 })
    const call = this.#place(body)
    const answer = this.#resource(call)
    if (fault === '502-after') return json(502, { message: 'Bad Gateway' })
    if (fault === 'drop-after') return void res.socket?.destroy()
    if (fault === 'late') return void this.#later(this.#options.lateMs ?? 3_000, () => json(201, answer))
    json(201, answer)
  }

  #place(body: CreateBody): FakeCall {
    const call: FakeCall = { id: randomUUID(), body, createdAt: new Date(), status: 'queued' }
    this.calls.set(call.id, call)
    const phone = body.customer?.number ?? ''
    if (this.#livePhones.has(phone)) this.phoneOverlaps++
    this.#livePhones.add(phone)
    this.maxLive = Math.max(this.maxLive, ++this.#live)
    call.status = 'in-progress'
    call.startedAt = new Date()
    this.#later(this.#options.durationMs ?? 20, () => void this.#end(call))
    return call
  }

  async #end(call: FakeCall): Promise<void> {
    call.status = 'ended'
    call.endedAt = new Date()
    call.endedReason = this.#options.endedReason?.(call.body) ?? 'customer-ended-call'
    this.#live--
    this.#livePhones.delete(call.body.customer?.number ?? '')
    const url = call.body.assistantOverrides?.server?.url
    if (!url) return
    const resource = this.#resource(call)
    if (this.#options.statusUpdate) await this.#send(url, { message: { type: 'status-update', status: 'ended', endedReason: call.endedReason, call: resource } })
    await this.#send(url, {
      message: {
        type: 'end-of-call-report',
        endedReason: call.endedReason,
        startedAt: call.startedAt?.toISOString(),
        endedAt: call.endedAt.toISOString(),
        artifact: { transcript: 'AI: Hello.\nUser: Hi.', messages: [] },
        analysis: { summary: 'A short call.' },
        call: resource,
      },
    })
  }

  async #send(url: string, message: unknown): Promise<void> {
    const body = JSON.stringify(message)
    const timestamp = String(Math.floor(Date.now() / 1000))
    const signature = createHmac('sha256', this.#options.secret).update(`${timestamp}.${body}`).digest('hex')
    try {
      const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', 'x-signature': signature, 'x-timestamp': timestamp }, body })
      this.webhookAnswers.push(res.status)
      await res.arrayBuffer()
    } catch {
      this.webhookAnswers.push(0)
    }
  }

  #resource(call: FakeCall) {
    return {
      id: call.id,
      orgId: 'org-fake',
      type: 'outboundPhoneCall',
      status: call.status,
      name: call.body.name,
      assistantId: call.body.assistantId,
      phoneNumberId: call.body.phoneNumberId,
      customer: call.body.customer,
      assistantOverrides: call.body.assistantOverrides,
      createdAt: call.createdAt.toISOString(),
      updatedAt: new Date().toISOString(),
      ...(call.startedAt ? { startedAt: call.startedAt.toISOString() } : {}),
      ...(call.endedAt ? { endedAt: call.endedAt.toISOString(), endedReason: call.endedReason } : {}),
    }
  }

  #later(ms: number, fn: () => void): void {
    const timer = setTimeout(() => {
      this.#timers.delete(timer)
      fn()
    }, ms)
    this.#timers.add(timer)
  }
}

/** Signs a body as Vapi's HMAC credential does by default. */
export function vapiSignature(secret: string, timestamp: string, body: string): string {
  return createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')
}
