import { randomUUID } from 'node:crypto'
import { Hono } from 'hono'
import * as v from 'valibot'
import { signPayload } from '../callbacks/signature.ts'
import type { Config } from '../config.ts'
import { listen, type RunningServer } from '../http/serve.ts'
import type { Logger } from '../log.ts'

// A fake AI-call provider implementing the dispatch issue's contract: 202 + callId, then a
// signed callback to the webhookUrl when the "call" ends. Faults can be switched on, and it
// records what it saw, so tests and benchmarks check our invariants from the provider's side.

export type DialDecision = 'accept' | 'server_error' | 'timeout' | 'rate_limited' | 'bad_request'

export interface SimulatorOptions {
  secret: string
  apiKey?: string | undefined
  minDurationMs: number
  maxDurationMs: number
  statusMix: Config['simulator']['statusMix']
  rates: Config['simulator']['rates']
  /** Delay before answering a dial, to widen the window in which a worker can die mid-request. */
  answerDelayMs?: number | undefined
  /** Overrides the random fault choice (tests script the provider with it). */
  decide?: ((dial: { to: string; idempotencyKey: string; n: number }) => DialDecision) | undefined
  random?: () => number
}

export interface DialRecord {
  idempotencyKey: string
  to: string
  scriptId: string
  decision: DialDecision
  at: number
  providerCallId?: string | undefined
  endedAt?: number | undefined
}

const DialBody = v.object({
  to: v.string(),
  scriptId: v.string(),
  metadata: v.optional(v.record(v.string(), v.unknown())),
  webhookUrl: v.pipe(v.string(), v.url()),
})

export class ProviderSimulator {
  readonly #o: SimulatorOptions
  readonly #log: Logger
  readonly #random: () => number
  readonly dials: DialRecord[] = []
  readonly #byKey = new Map<string, Promise<Response>>()
  /** Every dial request per Idempotency-Key, replays included. */
  readonly requestsPerKey = new Map<string, number>()
  readonly #inFlightByPhone = new Map<string, number>()
  readonly #timers = new Set<NodeJS.Timeout>()
  #inFlight = 0
  #maxInFlight = 0
  #maxPerPhone = 0
  #callbacksSent = 0
  #callbacksFailed = 0
  #server: RunningServer | undefined
  #stopped = false

  constructor(options: SimulatorOptions, log: Logger) {
    this.#o = options
    this.#log = log
    this.#random = options.random ?? Math.random
  }

  /** Where this process reaches it (loopback, whatever address it listens on). */
  get url(): string {
    if (!this.#server) throw new Error('simulator not started')
    return `http://127.0.0.1:${this.#server.port}`
  }

  async start(port = 0, host = '127.0.0.1'): Promise<void> {
    this.#server = await listen(this.app(), { host, port })
  }

  async stop(): Promise<void> {
    this.#stopped = true
    for (const timer of this.#timers) clearTimeout(timer)
    this.#timers.clear()
    await this.#server?.close(true)
  }

  stats() {
    const perKey = new Map<string, number>()
    for (const d of this.dials) if (d.providerCallId) perKey.set(d.idempotencyKey, (perKey.get(d.idempotencyKey) ?? 0) + 1)
    return {
      requests: [...this.requestsPerKey.values()].reduce((a, b) => a + b, 0),
      /** Requests that repeated a key the provider had already answered (answered the same way). */
      replays: [...this.requestsPerKey.values()].reduce((a, b) => a + b - 1, 0),
      accepted: this.dials.filter((d) => d.providerCallId).length,
      inFlight: this.#inFlight,
      maxInFlight: this.#maxInFlight,
      maxInFlightPerPhone: this.#maxPerPhone,
      /** How many keys were sent once, twice, …: {"1": 412, "2": 3}. */
      requestsPerKey: [...this.requestsPerKey.values()].reduce<Record<string, number>>((histogram, n) => {
        histogram[n] = (histogram[n] ?? 0) + 1
        return histogram
      }, {}),
      /** Idempotency keys the provider accepted as a new call more than once: must be 0. */
      keysAcceptedTwice: [...perKey.values()].filter((n) => n > 1).length,
      callbacksSent: this.#callbacksSent,
      callbacksFailed: this.#callbacksFailed,
    }
  }

  app(): Hono {
    const app = new Hono()
    app.get('/stats', (c) => c.json(this.stats()))
    app.post('/api/v1/calls', async (c) => {
      if (this.#o.apiKey && c.req.header('authorization') !== `Bearer ${this.#o.apiKey}`) {
        return c.json({ error: 'unauthorized' }, 401)
      }
      const key = c.req.header('idempotency-key')
      if (!key) return c.json({ error: 'Idempotency-Key header required' }, 400)
      this.requestsPerKey.set(key, (this.requestsPerKey.get(key) ?? 0) + 1)
      const parsed = v.safeParse(DialBody, await c.req.json().catch(() => undefined))
      if (!parsed.success) return c.json({ error: 'invalid body' }, 400)
      // A repeated key gets the first answer again, never a second call.
      const earlier = this.#byKey.get(key)
      if (earlier) return (await earlier).clone()
      const answer = this.#handleDial(key, parsed.output)
      this.#byKey.set(key, answer)
      const response = await answer
      if (response.status >= 500 || response.status === 429) this.#byKey.delete(key) // retryable: not remembered
      return response.clone()
    })
    return app
  }

  #pick(): DialDecision {
    const r = this.#random()
    const { serverError, timeout, rateLimited } = this.#o.rates
    if (r < serverError) return 'server_error'
    if (r < serverError + timeout) return 'timeout'
    if (r < serverError + timeout + rateLimited) return 'rate_limited'
    return 'accept'
  }

  async #handleDial(key: string, body: v.InferOutput<typeof DialBody>): Promise<Response> {
    const decision = this.#o.decide?.({ to: body.to, idempotencyKey: key, n: this.dials.length }) ?? this.#pick()
    const record: DialRecord = { idempotencyKey: key, to: body.to, scriptId: body.scriptId, decision, at: Date.now() }
    this.dials.push(record)
    if (this.#o.answerDelayMs) await this.#sleep(this.#o.answerDelayMs)
    switch (decision) {
      case 'server_error':
        return Response.json({ error: 'simulated outage' }, { status: 503 })
      case 'rate_limited':
        return Response.json({ error: 'slow down' }, { status: 429, headers: { 'Retry-After': '1' } })
      case 'bad_request':
        return Response.json({ error: 'simulated rejection: unsupported number' }, { status: 400 })
      case 'timeout':
        // Hang past any sane client timeout without starting a call.
        await this.#sleep(60_000)
        return Response.json({ error: 'too late' }, { status: 504 })
      case 'accept':
        break
    }
    const providerCallId = randomUUID()
    record.providerCallId = providerCallId
    this.#begin(body.to)
    const duration = this.#o.minDurationMs + this.#random() * (this.#o.maxDurationMs - this.#o.minDurationMs)
    const finish = async () => {
      this.#end(body.to, record)
      await this.#sendCallback(body.webhookUrl, providerCallId, duration)
    }
    if (this.#random() < this.#o.rates.earlyCallback) {
      // The call "ends" and the callback goes out before our 202 does.
      await finish()
    } else {
      this.#later(duration, finish)
    }
    return Response.json({ callId: providerCallId }, { status: 202 })
  }

  #begin(phone: string) {
    this.#inFlight++
    this.#maxInFlight = Math.max(this.#maxInFlight, this.#inFlight)
    const n = (this.#inFlightByPhone.get(phone) ?? 0) + 1
    this.#inFlightByPhone.set(phone, n)
    this.#maxPerPhone = Math.max(this.#maxPerPhone, n)
  }

  #end(phone: string, record: DialRecord) {
    if (record.endedAt) return
    record.endedAt = Date.now()
    this.#inFlight--
    this.#inFlightByPhone.set(phone, (this.#inFlightByPhone.get(phone) ?? 1) - 1)
  }

  #statusFor(): string {
    const total = this.#o.statusMix.reduce((sum, e) => sum + e.weight, 0)
    let r = this.#random() * total
    for (const e of this.#o.statusMix) if ((r -= e.weight) < 0) return e.status
    return this.#o.statusMix[0]!.status
  }

  async #sendCallback(webhookUrl: string, providerCallId: string, durationMs: number) {
    const body = JSON.stringify({
      callId: providerCallId,
      status: this.#statusFor(),
      durationSec: Math.round(durationMs / 1000),
      completedAt: new Date().toISOString(),
    })
    const webhookId = `msg_${randomUUID()}`
    await this.#deliver(webhookUrl, webhookId, body)
    if (this.#random() < this.#o.rates.duplicateCallback) await this.#deliver(webhookUrl, webhookId, body)
    if (this.#random() < this.#o.rates.lateCallback) {
      // The same event delivered again long after, as a retrying webhook sender does.
      this.#later(2_000 + this.#random() * 3_000, () => this.#deliver(webhookUrl, webhookId, body))
    }
  }

  async #deliver(url: string, webhookId: string, body: string) {
    for (let attempt = 1; attempt <= 5 && !this.#stopped; attempt++) {
      const timestamp = Math.floor(Date.now() / 1000)
      try {
        const response = await fetch(url, {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            'webhook-id': webhookId,
            'webhook-timestamp': String(timestamp),
            'webhook-signature': signPayload(this.#o.secret, webhookId, timestamp, body),
          },
          body,
          signal: AbortSignal.timeout(10_000),
        })
        await response.body?.cancel()
        if (response.ok) {
          this.#callbacksSent++
          return
        }
        this.#log.warn('simulator: callback refused', { status: response.status, webhookId })
        if (response.status < 500 && response.status !== 404) break
      } catch (err) {
        this.#log.warn('simulator: callback failed', { err, webhookId })
      }
      await this.#sleep(200 * 2 ** attempt)
    }
    this.#callbacksFailed++
  }

  #later(ms: number, fn: () => Promise<void>) {
    const timer = setTimeout(() => {
      this.#timers.delete(timer)
      void fn()
    }, ms)
    this.#timers.add(timer)
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#timers.delete(timer)
        resolve()
      }, ms)
      this.#timers.add(timer)
    })
  }
}
