import { randomUUID } from 'node:crypto'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'

// What the fakes of Vapi's and Retell's APIs share (test/support/fake-vapi.ts,
// fake-retell.ts): an HTTP server whose creates place calls with no idempotency of any kind,
// faults on a create (placed or not, answered or not), each call's end sent to the webhook URL
// it was created with, and what the provider saw: every create, the calls live at once, per
// phone, and any dial placed twice. Each flavor speaks its provider's paths and bodies.

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
  /** Not placed; answered as the provider refuses a create over the account's concurrency limit. */
  | 'concurrency'

export interface FakeOptions<Body> {
  apiKey: string
  /** The fault for the n-th create (from 1). */
  fault?: (n: number, body: Body) => CreateFault
  /** How long a placed call lasts before it ends. */
  durationMs?: number
  /** Its end reason (the provider's own word), by the create's body. */
  endReason?: (body: Body) => string
  /** A placed call shows in the provider's list only this long after its create. */
  listDelayMs?: number
  /** How long a "late" create answers after. */
  lateMs?: number
}

export interface FakeCall<Body> {
  id: string
  body: Body
  createdAt: Date
  status: 'live' | 'ended'
  startedAt: Date
  endedAt?: Date
  endReason?: string
}

/** What a flavor tells the core about a create's body. */
export interface CreateFacts {
  /** The dial it is for, as our ids name it (`{callId}:{dial}`). */
  dial: string
  phone: string
  webhookUrl: string | undefined
}

export type Json = (status: number, body: unknown) => void

export abstract class FakeVoiceAi<Body> {
  readonly creates: Array<{ body: Body; authorization: string | undefined; fault: CreateFault }> = []
  readonly calls = new Map<string, FakeCall<Body>>()
  readonly webhookAnswers: number[] = []
  maxLive = 0
  phoneOverlaps = 0
  url = ''
  #live = 0
  readonly #livePhones = new Set<string>()
  readonly #timers = new Set<NodeJS.Timeout>()
  readonly #server = createServer((req, res) => void this.#handle(req, res))
  protected readonly options: FakeOptions<Body>

  constructor(options: FakeOptions<Body>) {
    this.options = options
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

  /** Dials (`{callId}:{dial}`) the provider placed more than once. */
  placedTwice(): string[] {
    const count = new Map<string, number>()
    for (const call of this.calls.values()) {
      const dial = this.facts(call.body).dial
      count.set(dial, (count.get(dial) ?? 0) + 1)
    }
    return [...count].filter(([, n]) => n > 1).map(([dial]) => dial)
  }

  /** Calls created since `since` (or ever) that show in the provider's list by now, newest first. */
  protected listed(since?: Date): Array<FakeCall<Body>> {
    const visibleBefore = Date.now() - (this.options.listDelayMs ?? 0)
    return [...this.calls.values()]
      .filter((c) => (!since || c.createdAt >= since) && c.createdAt.getTime() <= visibleBefore)
      .sort((a, b) => b.createdAt.getTime() - a.createdAt.getTime())
  }

  protected abstract facts(body: Body): CreateFacts
  /** The provider's answer to anything but a create; false: not a route of its. */
  protected abstract route(method: string, url: URL, body: string, json: Json): boolean
  /** Whether the request is a create. */
  protected abstract isCreate(method: string, url: URL): boolean
  /** The provider's refusal of a create over its concurrency limit. */
  protected abstract concurrencyRefusal(json: Json): void
  /** The 201 of a create. */
  protected abstract created(call: FakeCall<Body>): unknown
  /** The webhook deliveries that tell a call's end, as the provider signs them. */
  protected abstract endDeliveries(call: FakeCall<Body>): Array<{ headers: Record<string, string>; body: string }>

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = []
    for await (const chunk of req) chunks.push(chunk as Buffer)
    const json: Json = (status, body) => {
      res.writeHead(status, { 'content-type': 'application/json' })
      res.end(JSON.stringify(body))
    }
    if (req.headers.authorization !== `Bearer ${this.options.apiKey}`) return json(401, { message: 'Invalid API key', statusCode: 401 })
    const url = new URL(req.url ?? '/', 'http://fake')
    const text = Buffer.concat(chunks).toString()
    if (req.method === 'POST' && this.isCreate(req.method, url)) return this.#create(JSON.parse(text) as Body, req, res, json)
    if (!this.route(req.method ?? 'GET', url, text, json)) json(404, { message: `Cannot ${req.method} ${url.pathname}`, statusCode: 404 })
  }

  #create(body: Body, req: IncomingMessage, res: ServerResponse, json: Json): void {
    const fault = this.options.fault?.(this.creates.length + 1, body) ?? 'none'
    this.creates.push({ body, authorization: req.headers.authorization, fault })
    if (fault === '502-before') return json(502, { message: 'Bad Gateway' })
    if (fault === 'concurrency') return this.concurrencyRefusal(json)
    const call = this.#place(body)
    const answer = this.created(call)
    if (fault === '502-after') return json(502, { message: 'Bad Gateway' })
    if (fault === 'drop-after') return void res.socket?.destroy()
    if (fault === 'late') return void this.#later(this.options.lateMs ?? 3_000, () => json(201, answer))
    json(201, answer)
  }

  #place(body: Body): FakeCall<Body> {
    const now = new Date()
    const call: FakeCall<Body> = { id: randomUUID(), body, createdAt: now, status: 'live', startedAt: now }
    this.calls.set(call.id, call)
    const { phone } = this.facts(body)
    if (this.#livePhones.has(phone)) this.phoneOverlaps++
    this.#livePhones.add(phone)
    this.maxLive = Math.max(this.maxLive, ++this.#live)
    this.#later(this.options.durationMs ?? 20, () => void this.#end(call))
    return call
  }

  async #end(call: FakeCall<Body>): Promise<void> {
    call.status = 'ended'
    call.endedAt = new Date()
    call.endReason = this.options.endReason?.(call.body) ?? this.defaultEndReason
    this.#live--
    this.#livePhones.delete(this.facts(call.body).phone)
    const url = this.facts(call.body).webhookUrl
    if (!url) return
    for (const delivery of this.endDeliveries(call)) {
      try {
        const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...delivery.headers }, body: delivery.body })
        this.webhookAnswers.push(res.status)
        await res.arrayBuffer()
      } catch {
        this.webhookAnswers.push(0)
      }
    }
  }

  protected abstract readonly defaultEndReason: string

  #later(ms: number, fn: () => void): void {
    const timer = setTimeout(() => {
      this.#timers.delete(timer)
      fn()
    }, ms)
    this.#timers.add(timer)
  }
}
