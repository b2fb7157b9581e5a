import { createServer, type IncomingHttpHeaders } from 'node:http'
import type { AddressInfo } from 'node:net'

// A scripted provider: a real HTTP server whose answers the test decides, recording every
// request it receives.

export interface Received {
  method: string
  url: string
  headers: IncomingHttpHeaders
  body: any
  at: number
}

export interface Answer {
  status: number
  body?: unknown
  headers?: Record<string, string>
  delayMs?: number
}

export async function startFakeProvider(
  t: { teardown(fn: () => Promise<void> | void): void },
  answer: (req: Received, n: number) => Answer,
) {
  const received: Received[] = []
  const server = createServer((req, res) => {
    let raw = ''
    req.on('data', (c) => (raw += c))
    req.on('end', () => {
      let body: unknown = raw
      try {
        body = JSON.parse(raw)
      } catch {}
      const r: Received = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body, at: Date.now() }
      received.push(r)
      const a = answer(r, received.length)
      setTimeout(() => {
        if (res.destroyed) return
        res.writeHead(a.status, { 'content-type': 'application/json', ...a.headers })
        res.end(a.body === undefined ? '' : typeof a.body === 'string' ? a.body : JSON.stringify(a.body))
      }, a.delayMs ?? 0)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  )
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, received }
}
