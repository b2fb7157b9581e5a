import { spawn, type ChildProcess } from 'node:child_process'
import { createServer } from 'node:net'
import { join } from 'node:path'

const binary = join(import.meta.dirname, '..', '..', 'bin', 'orchestrator')

export interface Proc {
  child: ChildProcess
  output: () => string
  exited: Promise<number | null>
}

/** Runs bin/orchestrator <mode> [args] with exactly `env` (plus PATH/HOME), collecting its output. */
export function runBinary(
  t: { teardown(fn: () => Promise<void> | void): void },
  mode: string,
  env: Record<string, string>,
  args: string[] = [],
): Proc {
  const child = spawn(binary, [mode, ...args], {
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', LOG_LEVEL: 'warn', METRICS_PORT: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  child.stdout!.on('data', (c) => (out += c))
  child.stderr!.on('data', (c) => (out += c))
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL')
      await exited
    }
  })
  return { child, output: () => out, exited }
}

export async function waitFor<T>(what: string, check: () => Promise<T | undefined | false>, timeoutMs = 120_000): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await check()
    if (value) return value
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

/**
 * A port that was free a moment ago, for a server in a child process that must be told its
 * port. Picked below Linux's ephemeral range (32768+): a port there can be taken by any
 * outgoing connection, of which the tests open many.
 */
export async function freePort(): Promise<number> {
  for (;;) {
    const port = 20_000 + Math.floor(Math.random() * 12_000)
    const server = createServer()
    const free = await new Promise<boolean>((resolve) => {
      server.once('error', () => resolve(false))
      server.listen(port, '127.0.0.1', () => resolve(true))
    })
    if (free) {
      await new Promise<void>((r) => server.close(() => r()))
      return port
    }
  }
}
