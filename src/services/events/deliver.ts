import { request as httpRequest } from 'node:http'
import { request as httpsRequest } from 'node:https'
import { signPayload } from '../../domain/signature.ts'
import { isIP } from 'node:net'
import { getEndpoint, pendingDeliveries, recordAttempt, type EndpointRow, type EventRow } from '../../store/events.ts'
import { type Queues } from '../../store/queues.ts'
import { EVENTS_PER_JOB, type DeliveryJob, type DeliveryJobs } from '../../store/delivery-jobs.ts'
import { isDatabaseUnavailable, type Sql, type Tx } from '../../store/sql.ts'
import { EVENTS_CHANNEL } from '../../store/notify.ts'
import { WakeListener } from '../../store/listener.ts'
import { failureStreak, type Logger } from '../../platform/log.ts'
import { metrics } from '../../platform/metrics.ts'
import { isPublicAddress, publicOnlyLookup } from './destinations.ts'


// Workers deliver events. A delivery job names an endpoint and a call (or a batch); it POSTs
// that call's undelivered events to that endpoint one at a time in the order they were written
// (events.seq), each signed per Standard Webhooks with the endpoint's secrets, with a timeout.
// A 2xx is delivered; anything else stops the job, which pg-boss retries with backoff, under the
// same webhook-id, for about a day; then that event is given up (and logged) and the rest go on.
// The retry limit counts each event's own tries (event_deliveries.attempts since its last
// replay), not the job's: a job that spent its retries on earlier events of its call hands the
// call's events on to a fresh job.
// Every attempt is written to event_deliveries.
//
// Why a job sends a scope and not just its own event: pg-boss orders a key's jobs by the start of
// the transaction that wrote them, and a transaction that started first can commit second (a
// callback that waited for the call's row while the dial was being recorded). events.seq is taken
// under the call's row lock, so it is the order of the changes; sending by seq keeps
// `call.dialed` ahead of `call.completed` whichever job runs first. pg-boss's key_strict_fifo
// never runs two jobs of one key at once, so no event is sent twice at the same time, and its
// group concurrency keeps only a few jobs in flight per endpoint across every worker.

export interface DeliveryOptions {
  timeoutMs: number
  perEndpoint: number
  allowInsecureUrls: boolean
  /** How many deliveries one worker has under way at once. */
  concurrency?: number
  pollMs?: number
}

interface Answer {
  status: number | null
  error: string | null
}

/** One POST; never follows a redirect (a 3xx is a failed attempt), never takes longer than the timeout. */
function post(url: string, body: string, headers: Record<string, string>, options: DeliveryOptions): Promise<Answer> {
  return new Promise((resolve) => {
    const target = new URL(url)
    if (!options.allowInsecureUrls) {
      // Checked at registration too; checked again here because the lookup below does not run
      // for a host that is an address.
      const host = target.hostname.replace(/^\[|\]$/g, '')
      if (target.protocol !== 'https:') return resolve({ status: null, error: 'not an https:// URL' })
      if (isIP(host) && !isPublicAddress(host)) return resolve({ status: null, error: `${host} is not a public address` })
    }
    const request = target.protocol === 'https:' ? httpsRequest : httpRequest
    const req = request(
      target,
      {
        method: 'POST',
        headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) },
        ...(options.allowInsecureUrls ? {} : { lookup: publicOnlyLookup as never }),
      },
      (res) => {
        res.resume() // the answer's body is not ours to read
        res.on('end', () => done({ status: res.statusCode ?? null, error: null }))
        res.on('error', (err) => done({ status: res.statusCode ?? null, error: err.message }))
      },
    )
    // A whole-request deadline: a socket timeout alone lets a receiver that trickles bytes hold on.
    const timer = setTimeout(() => req.destroy(new Error(`no answer within ${options.timeoutMs} ms`)), options.timeoutMs)
    const done = (answer: Answer) => {
      clearTimeout(timer)
      resolve(answer)
    }
    req.on('error', (err) => done({ status: null, error: err.message }))
    req.end(body)
  })
}

/** The headers of one event's delivery: Standard Webhooks, signed with every current secret of the endpoint. */
export function webhookHeaders(endpoint: Pick<EndpointRow, 'secrets'>, event: Pick<EventRow, 'id'>, body: string, timestamp: number): Record<string, string> {
  return {
    'content-type': 'application/json',
    'user-agent': 'call-orchestrator',
    'webhook-id': event.id,
    'webhook-timestamp': String(timestamp),
    // A receiver mid-rotation verifies with either secret.
    'webhook-signature': endpoint.secrets.map((secret) => signPayload(secret, event.id, timestamp, body)).join(' '),
  }
}


export class EventDelivery {
  readonly #sql: Sql
  readonly #deliveries: DeliveryJobs
  readonly #options: DeliveryOptions
  readonly #log: Logger
  readonly #listener: WakeListener | undefined
  #running = false
  #loop: Promise<void> | undefined
  #wake: (() => void) | undefined
  #wakeRequested = false

  /** With `listenUrl` (a session of its own), new events wake the loop (LISTEN); without, it finds them at the next poll. */
  constructor(deps: { sql: Sql; deliveries: DeliveryJobs; options: DeliveryOptions; log: Logger; listenUrl?: string }) {
    this.#sql = deps.sql
    this.#deliveries = deps.deliveries
    this.#options = deps.options
    this.#log = deps.log
    if (deps.listenUrl) this.#listener = new WakeListener(deps.listenUrl, () => this.wake(), deps.log, EVENTS_CHANNEL)
  }

  async start(): Promise<void> {
    if (this.#running) return
    this.#running = true
    await this.#listener?.start()
    this.#loop = this.#run()
  }

  /** Looks for deliveries now rather than at the next poll. */
  wake(): void {
    this.#wakeRequested = true
    this.#wake?.()
  }

  /** Stops fetching and lets the deliveries under way finish. */
  async stop(): Promise<void> {
    this.#running = false
    this.#wake?.()
    await this.#loop
    await this.#listener?.stop()
  }

  async #run(): Promise<void> {
    const concurrency = this.#options.concurrency ?? 8
    const active = new Set<Promise<void>>()
    const failures = failureStreak(50)
    while (this.#running) {
      let jobs: DeliveryJob[] = []
      const room = concurrency - active.size
      this.#wakeRequested = false
      if (room > 0) {
        try {
          jobs = await this.#deliveries.fetch(this.#sql, room, this.#options.perEndpoint)
          failures.reset()
        } catch (err) {
          if (failures.failed(err)) this.#log.warn('could not fetch event deliveries; retrying', { err, failures: failures.count })
        }
      }
      for (const job of jobs) {
        const run: Promise<void> = sendDeliveryJob({ sql: this.#sql, deliveries: this.#deliveries, options: this.#options, log: this.#log }, job)
          .catch((err) => this.#log.warn('event delivery not settled; pg-boss will expire and retry it', { err, jobId: job.jobId }))
          .finally(() => {
            active.delete(run)
            this.wake()
          })
        active.add(run)
      }
      if ((jobs.length === room && room > 0) || this.#wakeRequested || !this.#running) continue
      // Nothing more to fetch (or no room): wait for new events, a job's end, or the next poll
      // (retries come due by time alone).
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(5_000, (this.#options.pollMs ?? 1_000) * 2 ** Math.min(failures.count, 4)))
        this.#wake = () => (clearTimeout(timer), resolve())
      })
      this.#wake = undefined
    }
    await Promise.all(active)
  }
}

/**
 * One delivery job: the scope's undelivered events, in order, until one fails. Each attempt is
 * written down as it ends, and the one that ends the job (its last event, or a failure) in the
 * same transaction that settles the job with pg-boss: completed, retried later, or given up
 * with a fresh job for the events behind it.
 */
export async function sendDeliveryJob(deps: { sql: Sql; deliveries: DeliveryJobs; options: DeliveryOptions; log: Logger }, job: DeliveryJob): Promise<void> {
  const { sql, deliveries } = deps
  const log = deps.log.child({ jobId: job.jobId, endpointId: job.endpointId, callId: job.callId, batchId: job.batchId })
  const endpoint = await getEndpoint(sql, job.endpointId)
  // A removed endpoint's pending deliveries were marked failed when it was removed.
  const events = endpoint && !endpoint.disabled_at ? await pendingDeliveries(sql, job, EVENTS_PER_JOB) : []
  const settle = async <T>(eventId: string | null, write: (tx: Tx) => Promise<T>): Promise<T> => {
    try {
      return await sql.begin(write)
    } catch (err) {
      // Unwritten, the event stays pending and the job expires and is tried again: at least once.
      if (isDatabaseUnavailable(err)) log.warn('database unavailable while recording an event delivery; it will be sent again', { err, eventId })
      throw err
    }
  }
  for (const [i, event] of events.entries()) {
    const body = JSON.stringify(event.payload)
    const answer = await post(endpoint!.url, body, webhookHeaders(endpoint!, event, body, Math.floor(Date.now() / 1000)), deps.options)
    const ok = answer.status !== null && answer.status >= 200 && answer.status < 300
    const delivery = { eventId: event.id, endpointId: job.endpointId, statusCode: answer.status }
    if (ok) {
      const delivered = { ...delivery, status: 'delivered' as const, error: null, nextAttemptAt: null }
      if (i < events.length - 1) await settle(event.id, (tx) => recordAttempt(tx, delivered))
      else {
        await settle(event.id, async (tx) => {
          // A full page sent: there may be more behind it.
          if (events.length === EVENTS_PER_JOB) await deliveries.enqueue(tx, [job])
          await deliveries.complete(tx, job)
          await recordAttempt(tx, delivered)
        })
      }
      metrics.eventDeliveries.inc({ result: 'delivered' })
      continue
    }
    const error = answer.error ?? `answered ${answer.status}`
    // The event's own tries since it was written (or replayed), this one included: its retries
    // are its own, whatever the earlier events of its scope used of the job's.
    const tries = event.tries + 1
    if (tries > job.retryLimit) {
      // Given up on this event; the scope's later events go on in a fresh job with fresh retries.
      log.warn('event delivery given up', { eventId: event.id, error, attempts: event.attempts + 1 })
      await settle(event.id, async (tx) => {
        await deliveries.enqueue(tx, [job])
        await deliveries.complete(tx, job)
        await recordAttempt(tx, { ...delivery, status: 'failed', error, nextAttemptAt: null })
      })
      metrics.eventDeliveries.inc({ result: 'given_up' })
      return
    }
    const next = await settle(event.id, async (tx) => {
      const next = job.retryCount < job.retryLimit ? await deliveries.retry(tx, job, error) : await deliveries.retryInFreshJob(tx, job, tries)
      await recordAttempt(tx, { ...delivery, status: 'pending', error, nextAttemptAt: next })
      return next
    })
    metrics.eventDeliveries.inc({ result: 'failed' })
    log.info('event delivery failed; retried later', { eventId: event.id, error, nextAttemptAt: next?.toISOString() })
    return
  }
  // Nothing was pending (sent by an earlier attempt, or the endpoint was removed).
  if (events.length === 0) await settle(null, (tx) => deliveries.complete(tx, job))
}
