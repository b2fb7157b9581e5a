import { spawn, type ChildProcess } from 'node:child_process'
import { createWriteStream } from 'node:fs'
import { join } from 'node:path'

// What both soak runs (soak.ts, retention.ts) do with the processes they start.

const binary = join(import.meta.dirname, '..', '..', 'bin', 'orchestrator')

export interface LoggedProc {
  name: string
  child: ChildProcess
  exited: Promise<number | null>
}

/** bin/orchestrator <mode> with exactly `env`, its output in <dir>/<name>.log. */
export function runLogged(mode: string, name: string, env: Record<string, string>, dir: string): LoggedProc {
  const log = createWriteStream(join(dir, `${name}.log`))
  const child = spawn(binary, [mode], { env, stdio: ['ignore', 'pipe', 'pipe'] })
  child.stdout!.pipe(log)
  child.stderr!.pipe(log)
  return { name, child, exited: new Promise((resolve) => child.on('exit', (code) => resolve(code))) }
}

/** Waits until `check` says yes (a check that throws says no), for at most `timeoutMs`. */
export async function until(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 200))
  }
}
