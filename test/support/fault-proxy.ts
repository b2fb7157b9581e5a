import { createServer, connect, type Server, type Socket } from 'node:net'
import { freePort } from './processes.ts'

// A TCP proxy in front of a database endpoint that can make every connection fail the way
// networks do: `pass` forwards, `reset` answers each connection (new and open) with a TCP RST,
// `refuse` stops listening (ECONNREFUSED) and cuts what is open, `blackhole` accepts and never
// answers. The processes under test connect to it as to their database.

export type FaultMode = 'pass' | 'reset' | 'refuse' | 'blackhole'

export interface FaultProxy {
  port: number
  mode: FaultMode
  set(mode: FaultMode): Promise<void>
  close(): Promise<void>
}

export async function startFaultProxy(t: { teardown(fn: () => Promise<void> | void): void }, target: { host: string; port: number }): Promise<FaultProxy> {
  const port = await freePort()
  const open = new Set<Socket>()
  let server: Server | undefined
  let mode: FaultMode = 'pass'

  const handle = (client: Socket) => {
    open.add(client)
    client.on('close', () => open.delete(client))
    client.on('error', () => {})
    if (mode === 'reset') return void client.resetAndDestroy()
    if (mode === 'blackhole') return
    const upstream = connect(target.port, target.host)
    open.add(upstream)
    upstream.on('close', () => {
      open.delete(upstream)
      client.destroy()
    })
    upstream.on('error', () => client.destroy())
    client.on('close', () => upstream.destroy())
    client.pipe(upstream)
    upstream.pipe(client)
  }
  const listen = () =>
    new Promise<void>((resolve, reject) => {
      server = createServer(handle)
      server.once('error', reject)
      server.listen(port, '127.0.0.1', () => resolve())
    })
  const stopListening = () => new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()))
  await listen()

  const proxy: FaultProxy = {
    port,
    get mode() {
      return mode
    },
    async set(next) {
      if (next === 'refuse' && mode !== 'refuse') await Promise.all([stopListening(), ...[...open].map((s) => s.destroy())])
      if (next !== 'refuse' && mode === 'refuse') await listen()
      if (next === 'reset') for (const s of open) s.resetAndDestroy()
      mode = next
    },
    async close() {
      for (const s of open) s.destroy()
      await stopListening()
    },
  }
  t.teardown(() => proxy.close())
  return proxy
}
