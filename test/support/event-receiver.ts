import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { Webhook } from 'standardwebhooks'

// A client's event receiver: a real HTTP server that verifies every request with the
// `standardwebhooks` library (never with our own signing code), answers as the test says, and
// records what it saw, so tests can count duplicates, check the order of one call's events and
// see how many deliveries were under way at once.

export interface ReceivedEvent {
  webhookId: string
  type: string
  callId: string | null
  batchId: string | null
  payload: { type: string; timestamp: string; data: any }
  /** Whether it was answered 2xx (a delivery the receiver accepted). */
  accepted: boolean
}

export type Verdict = 'accept' | 'fail' | 'drop' | 'hang'

export interface EventReceiver {
  url: string
  /** The secrets the receiver verifies with (set once the endpoint is registered). */
  secrets: string[]
  /** Every request that verified, accepted or not, in arrival order. */
  received: ReceivedEvent[]
  /** Requests whose signature did not verify (answered 401). */
  rejected: number
  /** The most requests it had under way at once. */
  maxInFlight: number
  /** Webhook ids accepted, in acceptance order. */
  accepted(): ReceivedEvent[]
  /** Webhook ids accepted more than once. */
  duplicates(): string[]
}

export async function startEventReceiver(
  t: { teardown(fn: () => Promise<void> | void): void },
  options: {
    /** What to do with each verified request; accept by default. */
    verdict?: (event: ReceivedEvent, n: number) => Verdict
    /** Time before answering (ms). */
    delayMs?: number
  } = {},
): Promise<EventReceiver> {
  let inFlight = 0
  let n = 0
  const receiver: EventReceiver = {
    url: '',
    secrets: [],
    received: [],
    rejected: 0,
    maxInFlight: 0,
    accepted: () => receiver.received.filter((e) => e.accepted),
    duplicates() {
      const seen = new Map<string, number>()
      for (const e of receiver.accepted()) seen.set(e.webhookId, (seen.get(e.webhookId) ?? 0) + 1)
      return [...seen].filter(([, count]) => count > 1).map(([id]) => id)
    },
  }
  const server = createServer((req, res) => {
    inFlight++
    receiver.maxInFlight = Math.max(receiver.maxInFlight, inFlight)
    let raw = ''
    req.setEncoding('utf8')
    req.on('data', (chunk) => (raw += chunk))
    req.on('end', () => {
      const headers = {
        'webhook-id': String(req.headers['webhook-id'] ?? ''),
        'webhook-timestamp': String(req.headers['webhook-timestamp'] ?? ''),
        'webhook-signature': String(req.headers['webhook-signature'] ?? ''),
      }
      let payload: ReceivedEvent['payload'] | undefined
      for (const secret of receiver.secrets) {
        try {
          payload = new Webhook(secret).verify(raw, headers) as ReceivedEvent['payload']
          break
        } catch {}
      }
      const finish = (status: number) =>
        setTimeout(() => {
          inFlight--
          if (!res.destroyed) res.writeHead(status).end()
        }, options.delayMs ?? 0)
      if (!payload) {
        receiver.rejected++
        return finish(401)
      }
      const data = payload.data ?? {}
      const event: ReceivedEvent = {
        webhookId: headers['webhook-id'],
        type: payload.type,
        callId: payload.type.startsWith('call.') ? data.id : null,
        batchId: payload.type.startsWith('batch.') ? data.id : (data.batchId ?? null),
        payload,
        accepted: false,
      }
      receiver.received.push(event)
      const verdict = options.verdict?.(event, ++n) ?? 'accept'
      if (verdict === 'drop') {
        inFlight--
        return req.socket.destroy()
      }
      if (verdict === 'hang') {
        res.on('close', () => inFlight--)
        return
      }
      event.accepted = verdict === 'accept'
      finish(verdict === 'accept' ? 204 : 503)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  receiver.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/events`
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  )
  return receiver
}
