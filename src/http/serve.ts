import { serve, type ServerType } from '@hono/node-server'
import type { Hono } from 'hono'

export interface RunningServer {
  port: number
  /** Stops accepting; `force` also cuts requests still under way (the simulator's hung ones). */
  close(force?: boolean): Promise<void>
}

/** Listens; resolves once the port is bound. close() stops accepting and ends idle sockets. */
export function listen(app: Hono, options: { host: string; port: number }): Promise<RunningServer> {
  return new Promise((resolve, reject) => {
    let server: ServerType
    server = serve({ fetch: app.fetch, hostname: options.host, port: options.port }, (info) => {
      let closing: Promise<void> | undefined
      resolve({
        port: info.port,
        close: (force = false) =>
          (closing ??= new Promise<void>((done) => {
            server.close(() => done())
            if ('closeIdleConnections' in server) server.closeIdleConnections()
            if (force && 'closeAllConnections' in server) server.closeAllConnections()
          })),
      })
    })
    server.once('error', reject)
  })
}
