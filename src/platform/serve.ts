import { serve, type ServerType } from '@hono/node-server'
import type { Hono } from 'hono'
import type { IncomingMessage, ServerResponse } from 'node:http'

export interface RunningServer {
  port: number
  /** Stops accepting; `force` also cuts requests still under way (the simulator's hung ones). */
  close(force?: boolean): Promise<void>
}

/** Listens; resolves once the port is bound. close() stops accepting and ends idle sockets. */
export function listen(app: Hono, options: { host: string; port: number }): Promise<RunningServer> {
  return new Promise((resolve, reject) => {
    let server: ServerType
    // Event streams (the status page's) never end by themselves, and server.close() waits for
    // every open response: one page left open would hold a graceful shutdown forever. They
    // carry no work to finish, so close() cuts them, which the app sees as the client leaving
    // (its stream loop stops) and the browser as a dropped connection (EventSource retries).
    const eventStreams = new Set<ServerResponse>()
    server = serve({ fetch: app.fetch, hostname: options.host, port: options.port }, (info) => {
      let closing: Promise<void> | undefined
      resolve({
        port: info.port,
        close: (force = false) =>
          (closing ??= new Promise<void>((done) => {
            server.close(() => done())
            if ('closeIdleConnections' in server) server.closeIdleConnections()
            if (force && 'closeAllConnections' in server) server.closeAllConnections()
            for (const res of eventStreams) res.destroy()
          })),
      })
    })
    server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      if (!/text\/event-stream/i.test(req.headers.accept ?? '')) return
      eventStreams.add(res)
      res.once('close', () => eventStreams.delete(res))
    })
    server.once('error', reject)
  })
}
