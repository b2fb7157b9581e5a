import { randomUUID } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import { Hono, type Context } from 'hono'
import { FLAVORS, type Flavor, type FlavoredCall, type FlavorSpeech } from './flavors.ts'
import * as v from 'valibot'
import { signPayload } from '../domain/signature.ts'
import type { Config } from '../config.ts'
import { listen, type RunningServer } from '../platform/serve.ts'
import type { SimulatedCall } from '../store/simulator-calls.ts'
import type { Logger } from '../platform/log.ts'

// A fake AI-call provider implementing the README's provider contract: 202 + callId, Idempotency-Key
// honoured (a repeat gets the first answer; a repeat while the first is still being processed
// gets 409), a signed callback to the webhookUrl when the call ends, and GET /api/v1/calls/{id}
// for its status. It misbehaves on request the way real providers do on a bad day, and records
// what it did, so tests check our guarantees from the provider's side: how many calls it placed
// per call request, how many were live at once, and for which phone.

export type DialDecision =
  | 'accept'
  | 'server_error' // 503, not placed
  | 'timeout' // hangs, not placed, then 504
  | 'rate_limited' // 429 with Retry-After, not placed
  | 'bad_request' // 400, not placed
  | 'slow_accept' // placed, the 202 comes after `slowAcceptMs`
  | 'server_error_after_placing' // placed, then a proxy's 502
  | 'drop_after_placing' // placed, then the connection drops without an answer

/** Every fault off. */
export const NO_FAULTS: Config['simulator']['rates'] = {
  serverError: 0,
  timeout: 0,
  rateLimited: 0,
  duplicateCallback: 0,
  earlyCallback: 0,
  lateCallback: 0,
  slowAccept: 0,
  serverErrorAfterPlacing: 0,
  dropAfterPlacing: 0,
  lostCallback: 0,
}

const PLACING: ReadonlySet<DialDecision> = new Set(['accept', 'slow_accept', 'server_error_after_placing', 'drop_after_placing'])

export interface SimulatorOptions {
  secret: string
  apiKey?: string | undefined
  minDurationMs: number
  maxDurationMs: number
  statusMix: Config['simulator']['statusMix']
  rates: Config['simulator']['rates']
  /** How late a `slow_accept` 202 comes. */
  slowAcceptMs?: number | undefined
  /** Serve GET /api/v1/calls/{id}; off, it answers 404 like a provider without the endpoint. */
  statusLookup?: boolean | undefined
  /** Delay before answering a dial, to widen the window in which a worker can die mid-request. */
  answerDelayMs?: number | undefined
  /** Overrides the random fault choice (tests script the provider with it). */
  decide?: ((dial: { to: string; idempotencyKey: string; n: number }) => DialDecision) | undefined
  random?: () => number
  /** Where placed calls are kept across restarts; in memory only when absent. */
  store?: SimulatorStore | undefined
  /**
   * Forget a call request this long after its last dial ended (or its last request was
   * answered), keeping only its counts in the stats: a long-running simulator's memory stays
   * level. The store (when there is one) still answers look-ups and repeated keys for it;
   * without one, keep this longer than any caller may repeat a key or look a call up. Unset:
   * every record is kept (tests and the soak read them after the run).
   */
  forgetAfterMs?: number | undefined
  /** Speak Vapi's or Retell's API instead of the generic contract (./flavors.ts); `apiKey` then also signs Retell's webhooks. */
  flavor?: Flavor | undefined
}

/**
 * Where the simulator keeps the calls it placed, so a restart forgets none of them: a look-up
 * answers the truth, a repeated Idempotency-Key gets its first answer, and a call live at the
 * restart still ends, with its callback, on time (src/store/simulator-calls.ts, in "all" mode).
 */
export interface SimulatorStore {
  placed(call: SimulatedCall): Promise<void>
  byKey(key: string): Promise<SimulatedCall | undefined>
  byId(providerCallId: string): Promise<SimulatedCall | undefined>
  live(): Promise<SimulatedCall[]>
}

/** One call the provider placed, or one dial request it refused. */
export interface DialRecord {
  idempotencyKey: string
  to: string
  scriptId: string
  decision: DialDecision
  at: number
  providerCallId?: string | undefined
  /** The call's final status, decided when it is placed and told when it ends. */
  status?: string | undefined
  endedAt?: number | undefined
  /** The fault dropped it: no callback was ever sent. */
  callbackLost?: boolean | undefined
  /** The receiver acknowledged the callback (2xx) at least once. */
  callbackDelivered?: boolean | undefined
  /** Calls live at the provider once this one was placed, itself included. */
  liveAtPlacement?: number | undefined
  /** As Vapi or Retell: the ids the create carried, given back in look-ups and lists. */
  ids?: Record<string, unknown> | undefined
}

const DialBody = v.object({
  to: v.string(),
  scriptId: v.string(),
  metadata: v.optional(v.record(v.string(), v.unknown())),
  webhookUrl: v.pipe(v.string(), v.url()),
})

type KeyState = { state: 'processing' } | { state: 'done'; status: number; body: unknown }

/** What a placed call's key is answered with, every time it is sent. */
const accepted = (providerCallId: string): KeyState => ({ state: 'done', status: 202, body: { callId: providerCallId } })

/** A call kept by an earlier run (SimulatorStore), as this run's record of it. */
const recordOf = (call: SimulatedCall): DialRecord => ({
  idempotencyKey: call.idempotencyKey,
  to: call.to,
  scriptId: '',
  decision: 'accept',
  at: call.startedAt.getTime(),
  providerCallId: call.providerCallId,
  status: call.status,
})

/** A record as the flavors' resources are made of it. */
const flavoredCall = (record: DialRecord): FlavoredCall => ({
  providerCallId: record.providerCallId ?? '',
  key: record.idempotencyKey,
  to: record.to,
  scriptId: record.scriptId,
  ids: record.ids ?? {},
  startedAt: record.at,
  endedAt: record.endedAt,
  status: record.status,
})

/** The call request an Idempotency-Key belongs to: the orchestrator sends "{callId}:{dial}". */
export const callOfKey = (key: string) => key.replace(/:[^:]*$/, '')

export class ProviderSimulator {
  readonly #o: SimulatorOptions
  readonly #log: Logger
  readonly #random: () => number
  readonly dials: DialRecord[] = []
  readonly #byKey = new Map<string, KeyState>()
  readonly #byProviderId = new Map<string, DialRecord>()
  /** Every dial request per Idempotency-Key, replays included. */
  readonly requestsPerKey = new Map<string, number>()
  /** What each request for a key was answered, in order: "202", "202 late", "502", "dropped", "409", … */
  readonly answersPerKey = new Map<string, string[]>()
  /** Webhook-ids the receiver acknowledged with a 2xx: each must be on record there. */
  readonly deliveredWebhookIds = new Set<string>()
  readonly #inFlightByPhone = new Map<string, number>()
  readonly #timers = new Set<NodeJS.Timeout>()
  /** With forgetAfterMs: when each key was last requested. */
  readonly #touched = new Map<string, number>()
  /** What forgotten call requests add to the stats. */
  readonly #forgotten = { dials: 0, requests: 0, replays: 0, accepted: 0, keysAcceptedTwice: 0, callsPlacedTwice: 0, requestsPerKey: {} as Record<string, number>, placedPerCall: {} as Record<string, number> }
  #sweeper: NodeJS.Timeout | undefined
  #inFlight = 0
  #maxInFlight = 0
  #maxPerPhone = 0
  #phoneOverlaps = 0
  #conflicts = 0
  #lookups = 0
  #callbacksSent = 0
  #callbacksFailed = 0
  #callbacksLost = 0
  #server: RunningServer | undefined
  #stopped = false
  /** Callbacks under way when stopCallbacks() came, whose request then failed. */
  #dropped = 0

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
    await this.#resume()
    const forget = this.#o.forgetAfterMs
    if (forget !== undefined) this.#sweeper = setInterval(() => this.forget(), Math.min(forget, 60_000)).unref()
  }

  /** The calls a previous run placed that are still live: each ends, with its callback, when it was to. */
  async #resume(): Promise<void> {
    const live = (await this.#o.store?.live()) ?? []
    for (const call of live) {
      const record = recordOf(call)
      this.#byProviderId.set(call.providerCallId, record)
      this.#byKey.set(call.idempotencyKey, accepted(call.providerCallId))
      record.liveAtPlacement = this.#begin(call.to)
      this.#later(Math.max(0, call.endsAt.getTime() - Date.now()), async () => {
        this.#end(call.to, record)
        if (!call.lost) await this.#sendCallback(call.webhookUrl, record)
      })
    }
    if (live.length) this.#log.info('simulator: calls from before the restart resumed', { live: live.length })
  }

  /**
   * Stops sending callbacks: the orchestrator it reports to is stopping, and would refuse them.
   * What was still to be sent is dropped, and said once. Its HTTP server goes on answering (a
   * worker finishing its requests) until stop().
   */
  stopCallbacks(): void {
    if (this.#stopped) return
    this.#stopped = true
    const scheduled = this.#timers.size
    for (const timer of this.#timers) clearTimeout(timer)
    this.#timers.clear()
    // Let deliveries under way end first: each counts itself dropped when its request fails.
    setImmediate(() => {
      const dropped = scheduled + this.#dropped
      if (dropped > 0) this.#log.info('simulator: stopped sending callbacks', { notSent: dropped })
    })
  }

  async stop(): Promise<void> {
    clearInterval(this.#sweeper)
    this.stopCallbacks()
    await this.#server?.close()
  }

  /** Calls placed, per call request (the Idempotency-Key without its dial). */
  placedPerCall(): Map<string, DialRecord[]> {
    const perCall = new Map<string, DialRecord[]>()
    for (const d of this.dials) {
      if (!d.providerCallId) continue
      const call = callOfKey(d.idempotencyKey)
      perCall.set(call, [...(perCall.get(call) ?? []), d])
    }
    return perCall
  }

  stats() {
    const perKey = new Map<string, number>()
    for (const d of this.dials) if (d.providerCallId) perKey.set(d.idempotencyKey, (perKey.get(d.idempotencyKey) ?? 0) + 1)
    const histogram = (counts: Iterable<number>) =>
      [...counts].reduce<Record<string, number>>((h, n) => {
        h[n] = (h[n] ?? 0) + 1
        return h
      }, {})
    const perCall = this.placedPerCall()
    const f = this.#forgotten
    const merged = (a: Record<string, number>, b: Record<string, number>) => {
      const sum = { ...a }
      for (const [k, n] of Object.entries(b)) sum[k] = (sum[k] ?? 0) + n
      return sum
    }
    return {
      requests: f.requests + [...this.requestsPerKey.values()].reduce((a, b) => a + b, 0),
      /** Requests that repeated a key the provider had already seen. */
      replays: f.replays + [...this.requestsPerKey.values()].reduce((a, b) => a + b - 1, 0),
      /** Repeats that came while the key's first request was still being processed (answered 409). */
      conflicts: this.#conflicts,
      /** Calls placed (whatever the dial request was answered). */
      accepted: f.accepted + this.dials.filter((d) => d.providerCallId).length,
      inFlight: this.#inFlight,
      maxInFlight: this.#maxInFlight,
      maxInFlightPerPhone: this.#maxPerPhone,
      /** Calls placed while their phone already had one live: must be 0. */
      phoneOverlaps: this.#phoneOverlaps,
      /** How many keys were sent once, twice, …: {"1": 412, "2": 3}. */
      requestsPerKey: merged(f.requestsPerKey, histogram(this.requestsPerKey.values())),
      /** Idempotency keys the provider placed as a new call more than once: must be 0. */
      keysAcceptedTwice: f.keysAcceptedTwice + [...perKey.values()].filter((n) => n > 1).length,
      /** How many call requests got 1, 2, … placed calls: {"1": 300}. */
      placedPerCall: merged(f.placedPerCall, histogram([...perCall.values()].map((calls) => calls.length))),
      /**
       * Call requests the provider placed more than once: must be 0 unless retries start new
       * dials. With forgetAfterMs, dials of one call further apart than that count apart.
       */
      callsPlacedTwice: f.callsPlacedTwice + [...perCall.values()].filter((calls) => calls.length > 1).length,
      lookups: this.#lookups,
      callbacksSent: this.#callbacksSent,
      callbacksFailed: this.#callbacksFailed,
      /** Callbacks deliberately never sent (the lost-callback fault). */
      callbacksLost: this.#callbacksLost,
    }
  }

  app(): Hono {
    const app = new Hono()
    app.get('/stats', (c) => c.json(this.stats()))
    app.get('/memory', (c) => c.json(this.memory()))
    app.get('/api/v1/calls/:id', async (c) => {
      if (this.#o.apiKey && c.req.header('authorization') !== `Bearer ${this.#o.apiKey}`) return c.json({ error: 'unauthorized' }, 401)
      const record = this.#o.statusLookup === false ? undefined : (this.#byProviderId.get(c.req.param('id')) ?? (await this.#stored(c.req.param('id'))))
      if (!record) return c.json({ error: 'no such call' }, 404)
      this.#lookups++
      if (!record.endedAt) return c.json({ callId: record.providerCallId, status: 'IN_PROGRESS' })
      return c.json({
        callId: record.providerCallId,
        status: record.status,
        durationSec: Math.round((record.endedAt - record.at) / 1000),
        completedAt: new Date(record.endedAt).toISOString(),
      })
    })
    app.post('/api/v1/calls', async (c) => {
      if (this.#o.apiKey && c.req.header('authorization') !== `Bearer ${this.#o.apiKey}`) {
        return c.json({ error: 'unauthorized' }, 401)
      }
      const key = c.req.header('idempotency-key')
      if (!key) return c.json({ error: 'Idempotency-Key header required' }, 400)
      this.requestsPerKey.set(key, (this.requestsPerKey.get(key) ?? 0) + 1)
      if (this.#o.forgetAfterMs !== undefined) this.#touched.set(key, Date.now())
      const parsed = v.safeParse(DialBody, await c.req.json().catch(() => undefined))
      if (!parsed.success) return c.json({ error: 'invalid body' }, 400)
      const stored = this.#byKey.has(key) ? undefined : await this.#o.store?.byKey(key)
      if (stored) this.#byKey.set(key, accepted(stored.providerCallId))
      const earlier = this.#byKey.get(key)
      if (earlier?.state === 'processing') {
        this.#conflicts++
        this.#answered(key, '409')
        return c.json({ error: 'a request with this Idempotency-Key is still being processed' }, 409)
      }
      // A repeated key gets the first answer again, never a second call.
      if (earlier) {
        this.#answered(key, `${earlier.status} replay`)
        return c.json(earlier.body as object, earlier.status as 202)
      }
      this.#byKey.set(key, { state: 'processing' })
      const socket = (c.env as { incoming?: IncomingMessage } | undefined)?.incoming?.socket
      const response = await this.#handleDial(key, parsed.output, socket)
      this.#answered(key, this.#labels.get(response) ?? String(response.status))
      return response
    })
    if (this.#o.flavor) this.#flavored(app, FLAVORS[this.#o.flavor])
    return app
  }

  /**
   * Vapi's or Retell's paths: a create always places a new call (they have no idempotency key),
   * counted under the dial our ids name, so two placements of one dial show in the stats.
   */
  #flavored(app: Hono, speech: FlavorSpeech): void {
    const authorized = (c: Context) => !this.#o.apiKey || c.req.header('authorization') === `Bearer ${this.#o.apiKey}`
    app.post(speech.createPath, async (c) => {
      if (!authorized(c)) return c.json({ message: 'Invalid API key' }, 401)
      const create = speech.readCreate(await c.req.json().catch(() => undefined))
      if (!create) return c.json({ message: 'invalid body' }, 400)
      this.requestsPerKey.set(create.key, (this.requestsPerKey.get(create.key) ?? 0) + 1)
      if (this.#o.forgetAfterMs !== undefined) this.#touched.set(create.key, Date.now())
      const socket = (c.env as { incoming?: IncomingMessage } | undefined)?.incoming?.socket
      const response = await this.#handleDial(create.key, create, socket, create.ids, (record) => Response.json(speech.created(flavoredCall(record)), { status: 201 }))
      this.#answered(create.key, this.#labels.get(response) ?? String(response.status))
      return response
    })
    app.get(speech.lookupPath, (c) => {
      if (!authorized(c)) return c.json({ message: 'Invalid API key' }, 401)
      const record = this.#byProviderId.get(c.req.param('id') ?? '')
      if (!record) return c.json({ message: 'Not Found' }, 404)
      this.#lookups++
      return c.json(speech.resource(flavoredCall(record)) as object)
    })
    const placed = () => [...this.#byProviderId.values()].sort((a, b) => a.at - b.at)
    if (speech === FLAVORS.vapi) {
      app.get('/call', (c) => {
        if (!authorized(c)) return c.json({ message: 'Invalid API key' }, 401)
        const since = Date.parse(c.req.query('createdAtGe') ?? '') || 0
        const limit = Math.min(1000, Number(c.req.query('limit') ?? 100))
        return c.json(placed().filter((r) => r.at >= since).reverse().slice(0, limit).map((r) => speech.resource(flavoredCall(r))))
      })
    } else {
      app.post('/v3/list-calls', async (c) => {
        if (!authorized(c)) return c.json({ message: 'Invalid API key' }, 401)
        const request = (await c.req.json().catch(() => ({}))) as { filter_criteria?: { metadata?: Array<{ key?: string; op?: string; value?: unknown }> }; limit?: number }
        const filters = request.filter_criteria?.metadata ?? []
        const items = placed()
          .filter((r) => filters.every((f) => f.op === 'eq' && f.key !== undefined && r.ids?.[f.key] === f.value))
          .slice(0, request.limit ?? 50)
          .map((r) => speech.resource(flavoredCall(r)))
        return c.json({ items, has_more: false })
      })
      app.get('/get-concurrency', (c) => c.json({ current_concurrency: this.#inFlight, concurrency_limit: 1000, reserved_inbound_concurrency: 0 }))
    }
  }

  /** A call a previous run placed (and ended, or it would have been resumed), as a look-up sees it. */
  async #stored(providerCallId: string): Promise<DialRecord | undefined> {
    const call = await this.#o.store?.byId(providerCallId)
    if (!call) return undefined
    return { ...recordOf(call), ...(call.endsAt.getTime() <= Date.now() ? { endedAt: call.endsAt.getTime() } : {}) }
  }

  readonly #labels = new WeakMap<Response, string>()

  #label(response: Response, label: string): Response {
    this.#labels.set(response, label)
    return response
  }

  #answered(key: string, answer: string) {
    this.answersPerKey.set(key, [...(this.answersPerKey.get(key) ?? []), answer])
  }

  #pick(): DialDecision {
    const r = this.#random()
    const rates = this.#o.rates
    let edge = 0
    for (const [decision, rate] of [
      ['server_error', rates.serverError],
      ['timeout', rates.timeout],
      ['rate_limited', rates.rateLimited],
      ['slow_accept', rates.slowAccept],
      ['server_error_after_placing', rates.serverErrorAfterPlacing],
      ['drop_after_placing', rates.dropAfterPlacing],
    ] as const) {
      edge += rate
      if (r < edge) return decision
    }
    return 'accept'
  }

  async #handleDial(
    key: string,
    body: v.InferOutput<typeof DialBody>,
    socket: IncomingMessage['socket'] | undefined,
    ids?: Record<string, unknown>,
    acceptance: (record: DialRecord) => Response = (record) => Response.json({ callId: record.providerCallId }, { status: 202 }),
  ): Promise<Response> {
    const decision = this.#o.decide?.({ to: body.to, idempotencyKey: key, n: this.#forgotten.dials + this.dials.length }) ?? this.#pick()
    const record: DialRecord = { idempotencyKey: key, to: body.to, scriptId: body.scriptId, decision, at: Date.now(), ...(ids ? { ids } : {}) }
    this.dials.push(record)
    if (this.#o.answerDelayMs) await this.#sleep(this.#o.answerDelayMs)
    // Refusals are not remembered: the same key may be sent again and succeed.
    const refuse = (status: number, error: string, headers: Record<string, string> = {}) => {
      this.#byKey.delete(key)
      return Response.json({ error }, { status, headers })
    }
    switch (decision) {
      case 'server_error':
        return refuse(503, 'simulated outage')
      case 'rate_limited':
        return refuse(429, 'slow down', { 'Retry-After': '1' })
      case 'bad_request':
        return refuse(400, 'simulated rejection: unsupported number')
      case 'timeout':
        // Hang past any sane client timeout without starting a call.
        await this.#sleep(60_000)
        return refuse(504, 'too late')
      default:
        break
    }
    if (!PLACING.has(decision)) throw new Error(`unhandled decision ${decision}`)
    const { providerCallId, early, kept } = this.#place(record, body)
    // Kept before it is answered, as a provider does: a repeat of the key after a restart gets this call.
    await kept
    // An early callback goes out, and is answered, before our answer does.
    await early
    this.#byKey.set(key, accepted(providerCallId))
    switch (decision) {
      case 'slow_accept':
        await this.#sleep(this.#o.slowAcceptMs ?? 15_000)
        return this.#label(acceptance(record), `${acceptance(record).status} late`)
      case 'server_error_after_placing':
        return Response.json({ error: 'bad gateway' }, { status: 502 })
      case 'drop_after_placing':
        if (socket) {
          socket.destroy()
          return this.#label(new Response(null, { status: 499 }), 'dropped')
        }
        return Response.json({ error: 'bad gateway' }, { status: 502 })
    }
    return acceptance(record)
  }

  /** Places the call: it is live until its duration passes, then its callback goes out. */
  #place(record: DialRecord, body: v.InferOutput<typeof DialBody>): { providerCallId: string; early?: Promise<void>; kept: Promise<void> } {
    const providerCallId = randomUUID()
    record.providerCallId = providerCallId
    record.status = this.#statusFor()
    this.#byProviderId.set(providerCallId, record)
    record.liveAtPlacement = this.#begin(body.to)
    const duration = this.#o.minDurationMs + this.#random() * (this.#o.maxDurationMs - this.#o.minDurationMs)
    const lost = this.#random() < this.#o.rates.lostCallback
    const kept = (this.#o.store?.placed({
      providerCallId,
      idempotencyKey: record.idempotencyKey,
      to: body.to,
      status: record.status,
      startedAt: new Date(record.at),
      endsAt: new Date(Date.now() + duration),
      webhookUrl: body.webhookUrl,
      lost,
    }) ?? Promise.resolve()).catch((err: unknown) => this.#log.warn('simulator: could not keep a call', { err: (err as Error).message }))
    const end = async () => {
      this.#end(body.to, record)
      if (lost) {
        record.callbackLost = true
        this.#callbacksLost++
        return
      }
      await this.#sendCallback(body.webhookUrl, record)
    }
    // An early callback goes out before the 202; the 202 waits for its first delivery, but not
    // for the retries of a receiver that is down.
    if (this.#random() < this.#o.rates.earlyCallback) return { providerCallId, early: Promise.race([end(), this.#sleep(500)]), kept }
    this.#later(duration, end)
    return { providerCallId, kept }
  }

  /** Counts a placed call as live; returns how many are live now. */
  #begin(phone: string): number {
    this.#inFlight++
    this.#maxInFlight = Math.max(this.#maxInFlight, this.#inFlight)
    const n = (this.#inFlightByPhone.get(phone) ?? 0) + 1
    if (n > 1) this.#phoneOverlaps++
    this.#inFlightByPhone.set(phone, n)
    this.#maxPerPhone = Math.max(this.#maxPerPhone, n)
    return this.#inFlight
  }

  #end(phone: string, record: DialRecord) {
    if (record.endedAt) return
    record.endedAt = Date.now()
    this.#inFlight--
    const left = (this.#inFlightByPhone.get(phone) ?? 1) - 1
    if (left > 0) this.#inFlightByPhone.set(phone, left)
    else this.#inFlightByPhone.delete(phone)
  }

  /** How many entries its memory holds: level over time with forgetAfterMs. */
  memory() {
    return {
      dials: this.dials.length,
      keys: this.requestsPerKey.size,
      answers: this.answersPerKey.size,
      byKey: this.#byKey.size,
      byProviderId: this.#byProviderId.size,
      phones: this.#inFlightByPhone.size,
      webhookIds: this.deliveredWebhookIds.size,
      timers: this.#timers.size,
    }
  }

  /**
   * Forgets the call requests (every key of one call, "{callId}:{dial}") whose last request
   * and last dial ended more than forgetAfterMs before `now`, folding their counts into the
   * stats. Runs on a timer; a no-op without forgetAfterMs.
   */
  forget(now = Date.now()): void {
    const after = this.#o.forgetAfterMs
    if (after === undefined) return
    const cutoff = now - after
    const keysOf = new Map<string, string[]>()
    for (const key of this.requestsPerKey.keys()) {
      const call = callOfKey(key)
      keysOf.set(call, [...(keysOf.get(call) ?? []), key])
    }
    const dialsOf = new Map<string, DialRecord[]>()
    for (const d of this.dials) {
      const call = callOfKey(d.idempotencyKey)
      dialsOf.set(call, [...(dialsOf.get(call) ?? []), d])
    }
    const f = this.#forgotten
    const count = (h: Record<string, number>, n: number) => (h[n] = (h[n] ?? 0) + 1)
    const forgottenDials = new Set<DialRecord>()
    for (const [call, keys] of keysOf) {
      const dials = dialsOf.get(call) ?? []
      const settled =
        keys.every((k) => (this.#touched.get(k) ?? 0) < cutoff && this.#byKey.get(k)?.state !== 'processing') &&
        dials.every((d) => (d.providerCallId ? d.endedAt !== undefined && d.endedAt < cutoff : d.at < cutoff))
      if (!settled) continue
      let placed = 0
      for (const key of keys) {
        const requests = this.requestsPerKey.get(key) ?? 0
        const placedForKey = dials.filter((d) => d.idempotencyKey === key && d.providerCallId).length
        f.requests += requests
        f.replays += Math.max(0, requests - 1)
        count(f.requestsPerKey, requests)
        if (placedForKey > 1) f.keysAcceptedTwice++
        placed += placedForKey
        this.requestsPerKey.delete(key)
        this.answersPerKey.delete(key)
        this.#touched.delete(key)
        this.#byKey.delete(key)
      }
      f.accepted += placed
      if (placed > 0) count(f.placedPerCall, placed)
      if (placed > 1) f.callsPlacedTwice++
      for (const d of dials) {
        forgottenDials.add(d)
        if (d.providerCallId) this.#byProviderId.delete(d.providerCallId)
      }
    }
    if (forgottenDials.size > 0) {
      f.dials += forgottenDials.size
      const kept = this.dials.filter((d) => !forgottenDials.has(d))
      this.dials.length = 0
      for (const d of kept) this.dials.push(d)
    }
    // Calls resumed from before a restart were never requested of this run.
    for (const [id, record] of this.#byProviderId) {
      if (record.endedAt !== undefined && record.endedAt < cutoff && !this.requestsPerKey.has(record.idempotencyKey)) {
        this.#byProviderId.delete(id)
        if (this.#byKey.get(record.idempotencyKey)?.state === 'done') this.#byKey.delete(record.idempotencyKey)
      }
    }
  }

  #statusFor(): string {
    const total = this.#o.statusMix.reduce((sum, e) => sum + e.weight, 0)
    let r = this.#random() * total
    for (const e of this.#o.statusMix) if ((r -= e.weight) < 0) return e.status
    return this.#o.statusMix[0]!.status
  }

  async #sendCallback(webhookUrl: string, record: DialRecord) {
    if (this.#o.flavor) {
      // Vapi's and Retell's webhooks carry no delivery id: a repeat is the same body again.
      const deliveries = FLAVORS[this.#o.flavor].endDeliveries(flavoredCall(record), { secret: this.#o.secret, apiKey: this.#o.apiKey ?? '' })
      // In order: Retell's call_analyzed follows its call_ended.
      const again = async () => {
        let any = false
        for (const d of deliveries) any = (await this.#deliver(webhookUrl, d.body, () => d.headers)) || any
        return any
      }
      if (await again()) record.callbackDelivered = true
      if (this.#random() < this.#o.rates.duplicateCallback) await again()
      return
    }
    const body = JSON.stringify({
      callId: record.providerCallId,
      status: record.status,
      durationSec: Math.round(((record.endedAt ?? Date.now()) - record.at) / 1000),
      completedAt: new Date(record.endedAt ?? Date.now()).toISOString(),
    })
    const webhookId = `msg_${randomUUID()}`
    const delivered = (ok: boolean) => {
      if (ok) record.callbackDelivered = true
    }
    const headers = () => {
      const timestamp = Math.floor(Date.now() / 1000)
      return { 'webhook-id': webhookId, 'webhook-timestamp': String(timestamp), 'webhook-signature': signPayload(this.#o.secret, webhookId, timestamp, body) }
    }
    delivered(await this.#deliver(webhookUrl, body, headers, webhookId))
    if (this.#random() < this.#o.rates.duplicateCallback) delivered(await this.#deliver(webhookUrl, body, headers, webhookId))
    if (this.#random() < this.#o.rates.lateCallback) {
      // The same event delivered again long after, as a retrying webhook sender does.
      this.#later(2_000 + this.#random() * 3_000, async () => delivered(await this.#deliver(webhookUrl, body, headers, webhookId)))
    }
  }

  /** True once the receiver acknowledged it; false after five tries (or a refusal) without. `headers` signs each try anew. */
  async #deliver(url: string, body: string, headers: () => Record<string, string>, webhookId?: string): Promise<boolean> {
    for (let attempt = 1; attempt <= 5 && !this.#stopped; attempt++) {
      try {
        const response = await fetch(url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...headers() },
          body,
          signal: AbortSignal.timeout(10_000),
        })
        await response.body?.cancel()
        if (response.ok) {
          this.#callbacksSent++
          if (this.#o.forgetAfterMs === undefined && webhookId) this.deliveredWebhookIds.add(webhookId)
          return true
        }
        this.#log.warn('simulator: callback refused', { status: response.status, webhookId })
        if (response.status < 500 && response.status !== 404) break
      } catch (err) {
        if (this.#stopped) {
          this.#dropped++
          return false
        }
        this.#log.warn('simulator: callback failed', { err: (err as Error).message, webhookId })
      }
      await this.#sleep(200 * 2 ** attempt)
    }
    this.#callbacksFailed++
    return false
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
