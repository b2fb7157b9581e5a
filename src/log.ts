import type { LogLevel } from './config.ts'

// One JSON object per line on stdout: easy to grep by hand, easy to ship to any collector.
// Callers pass scope (callId, attempt, worker), never secrets or whole payloads.

const rank: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 }

export type Fields = Record<string, unknown>

export interface Logger {
  debug(msg: string, fields?: Fields): void
  info(msg: string, fields?: Fields): void
  warn(msg: string, fields?: Fields): void
  error(msg: string, fields?: Fields): void
  child(scope: Fields): Logger
}

export function createLogger(
  level: LogLevel,
  scope: Fields = {},
  write: (line: string) => void = (line) => process.stdout.write(line + '\n'),
): Logger {
  const emit = (at: LogLevel, msg: string, fields?: Fields) => {
    if (rank[at] < rank[level]) return
    const entry: Fields = { time: new Date().toISOString(), level: at, msg, ...scope, ...fields }
    if (entry.err instanceof Error) {
      const err = entry.err as Error & { code?: string }
      entry.err = { message: err.message, code: err.code, stack: at === 'error' ? err.stack : undefined }
    }
    write(JSON.stringify(entry))
  }
  return {
    debug: (msg, fields) => emit('debug', msg, fields),
    info: (msg, fields) => emit('info', msg, fields),
    warn: (msg, fields) => emit('warn', msg, fields),
    error: (msg, fields) => emit('error', msg, fields),
    child: (more) => createLogger(level, { ...scope, ...more }, write),
  }
}

export const silentLogger: Logger = createLogger('error', {}, () => {})

/**
 * A logger for events that can come in floods (every request during a database outage, every
 * forged callback): at most one line per `intervalMs` per message, saying how many were left
 * out since the last line.
 */
export function throttled(log: Logger, intervalMs: number): Pick<Logger, 'warn' | 'error'> {
  const last = new Map<string, { at: number; skipped: number }>()
  const emit = (level: 'warn' | 'error') => (msg: string, fields?: Fields) => {
    const now = Date.now()
    const seen = last.get(msg)
    if (seen && now - seen.at < intervalMs) {
      seen.skipped++
      return
    }
    log[level](msg, { ...fields, ...(seen?.skipped ? { suppressed: seen.skipped } : {}) })
    last.set(msg, { at: now, skipped: 0 })
  }
  return { warn: emit('warn'), error: emit('error') }
}
