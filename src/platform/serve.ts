import { serve, type ServerType } from '@hono/node-server'
import type { Hono } from 'hono'
import type { ServerResponse } from 'node:http'

/** What a close found open, and what it cut. */
export interface Closed {
  /** Responses already under way that would never end by themselves (event streams), cut at once. */
  eventStreams: number
  /** Requests still unanswered when the time ran out (a client that stopped sending, a slow handler), cut then. */
  cutAfterTimeout: number
}

export interface RunningServer {
  port: number
  /**
   * Stops accepting and ends idle connections. Event streams are cut at once; other requests
   * under way get `timeoutMs` to finish (0: none), then every connection is cut.
   */
  close(options?: { timeoutMs?: number }): Promise<Closed>
}

/** Listens; resolves once the port is bound. */
export function listen(app: Hono, options: { host: string; port: number }): Promise<RunningServer> {
  return new Promise((resolve, reject) => {
    let server: ServerType
    // Every response under way. A close must never wait on a client: the status page's event
    // streams never end by themselves, whatever the request's Accept header said, and a client
    // can stop sending a body halfway. A response whose headers went out but that has not
    // ended is a stream: it carries no work to finish, so it is cut at once (the app sees the
    // client leave; a browser's EventSource reconnects). The rest get the timeout.
    const open = new Set<ServerResponse>()
    server = serve({ fetch: app.fetch, hostname: options.host, port: options.port }, (info) => {
      let closing: Promise<Closed> | undefined
      resolve({
        port: info.port,
        close: ({ timeoutMs = 0 } = {}) =>
          (closing ??= new Promise<Closed>((done) => {
            const closed: Closed = { eventStreams: 0, cutAfterTimeout: 0 }
            let timer: NodeJS.Timeout | undefined
            server.close(() => {
              clearTimeout(timer)
              done(closed)
            })
            if ('closeIdleConnections' in server) server.closeIdleConnections()
            for (const res of open) {
              if (res.headersSent && !res.writableEnded) {
                closed.eventStreams++
                res.destroy()
              }
            }
            const cutAll = () => {
              closed.cutAfterTimeout = [...open].filter((res) => !res.writableEnded).length
              if ('closeAllConnections' in server) server.closeAllConnections()
            }
            if (timeoutMs <= 0) cutAll()
            else timer = setTimeout(cutAll, timeoutMs).unref()
          })),
      })
    })
    server.on('request', (_req, res: ServerResponse) => {
      open.add(res)
      res.once('close', () => open.delete(res))
    })
    server.once('error', reject)
  })
}
