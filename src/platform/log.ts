import { pino, stdTimeFunctions, type DestinationStream } from 'pino'
import pretty from 'pino-pretty'
import type { LogFormat, LogLevel } from '../config.ts'

// pino: one JSON object per line on stdout, for any collector; pino-pretty when a person reads a
// terminal. Callers pass scope (callId, attempt, worker), never whole payloads; as a second line
// of defence, secrets and call metadata are censored by key wherever they appear, and phones are
// masked to their last digits.

export type Fields = Record<string, unknown>

export interface Logger {
  debug(msg: string, fields?: Fields): void
  info(msg: string, fields?: Fields): void
  warn(msg: string, fields?: Fields): void
  error(msg: string, fields?: Fields): void
  child(scope: Fields): Logger
}

/** Digits left readable at the end of a logged phone number: enough to tell calls apart. */
const VISIBLE_DIGITS = 4

/** "+14155550123" → "+*******0123". Non-strings pass through (a bug elsewhere, but not a leak). */
export function maskPhone(phone: unknown): unknown {
  if (typeof phone !== 'string') return phone
  const keep = Math.min(VISIBLE_DIGITS, Math.max(0, phone.length - 2))
  return phone.slice(0, phone.startsWith('+') ? 1 : 0).padEnd(phone.length - keep, '*') + phone.slice(phone.length - keep)
}

/**
 * An error's type, message, code and stack, and its cause's: never its other properties, which
 * can hold a whole database client (pg's errors carry one) or a failing row's values (detail).
 */
export function serializeError(err: unknown): unknown {
  if (!(err instanceof Error)) return err
  const { code } = err as Error & { code?: unknown }
  return {
    type: err.constructor?.name ?? 'Error',
    message: err.message,
    ...(typeof code === 'string' || typeof code === 'number' ? { code } : {}),
    stack: err.stack,
    ...(err.cause !== undefined ? { cause: serializeError(err.cause) } : {}),
  }
}

/** Keys censored at any of the first two levels of a line (pino's redaction paths). */
const SECRET_KEYS = ['apiKey', 'secret', 'secrets', 'token', 'password', 'authorization', 'signature', 'metadata', 'body', 'headers', 'url']
const redactPaths = SECRET_KEYS.flatMap((key) => [key, `*.${key}`])

export function createLogger(level: LogLevel, scope: Fields = {}, options: { format?: LogFormat; destination?: DestinationStream } = {}): Logger {
  const format = options.format ?? 'auto'
  const prettyOut = !options.destination && (format === 'pretty' || (format === 'auto' && process.stdout.isTTY === true))
  const destination =
    options.destination ?? (prettyOut ? pretty({ colorize: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname', sync: true }) : undefined)
  const base = pino(
    {
      level,
      base: { pid: process.pid },
      timestamp: stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      serializers: { err: serializeError, phone: maskPhone, phones: (list: unknown) => (Array.isArray(list) ? list.map(maskPhone) : list) },
      redact: { paths: redactPaths, censor: '[redacted]' },
    },
    destination ?? pino.destination({ dest: 1, sync: true }),
  )
  return wrap(scope && Object.keys(scope).length ? base.child(scope) : base)
}

function wrap(p: pino.Logger): Logger {
  return {
    debug: (msg, fields) => p.debug(fields ?? {}, msg),
    info: (msg, fields) => p.info(fields ?? {}, msg),
    warn: (msg, fields) => p.warn(fields ?? {}, msg),
    error: (msg, fields) => p.error(fields ?? {}, msg),
    child: (more) => wrap(p.child(more)),
  }
}

export const silentLogger: Logger = wrap(pino({ level: 'silent' }))

/**
 * A logger for events that can come in floods (every request during a database outage, every
 * forged callback): at most one line per `intervalMs` per message and cause (the `err` field's
 * code and message), saying how many were left out since the last line. A cause not seen within
 * the interval is logged at once: a refused connection turning into a pooler's failing logins is
 * news to whoever reads the log.
 */
export function throttled(log: Logger, intervalMs: number): Pick<Logger, 'warn' | 'error'> {
  const last = new Map<string, { at: number; skipped: number }>()
  const emit = (level: 'warn' | 'error') => (msg: string, fields?: Fields) => {
    const now = Date.now()
    const key = fields?.err === undefined ? msg : `${msg}\0${causeOf(fields.err)}`
    const seen = last.get(key)
    if (seen && now - seen.at < intervalMs) {
      seen.skipped++
      return
    }
    if (!seen && last.size >= MAX_THROTTLED_KEYS) {
      for (const [k, v] of last) if (now - v.at >= intervalMs) last.delete(k)
    }
    log[level](msg, { ...fields, ...(seen?.skipped ? { suppressed: seen.skipped } : {}) })
    last.set(key, { at: now, skipped: 0 })
  }
  return { warn: emit('warn'), error: emit('error') }
}

/** Keys a throttle remembers before it forgets those whose interval has passed. */
const MAX_THROTTLED_KEYS = 256

/** What tells one failure's cause from another's in a log: its code (SQLSTATE, errno name) and message. */
function causeOf(err: unknown): string {
  if (!(err instanceof Error)) return String(err).slice(0, 200)
  const code = (err as { code?: unknown }).code
  return `${typeof code === 'string' ? code : err.name} ${err.message.slice(0, 200)}`
}

/**
 * Which failures of a retry loop are worth a line: the first of a streak, every `every`-th after
 * it, and each whose cause differs from the failure before it (a loop that met refused
 * connections and now meets a pooler's failing logins says so at once, not 50 failures later).
 */
export function failureStreak(every: number): { readonly count: number; failed(err: unknown): boolean; reset(): void } {
  let count = 0
  let lastCause: string | undefined
  return {
    get count() {
      return count
    },
    failed(err) {
      count++
      const cause = causeOf(err)
      const tell = count === 1 || count % every === 0 || cause !== lastCause
      lastCause = cause
      return tell
    },
    reset() {
      count = 0
      lastCause = undefined
    },
  }
}

/**
 * Requests refused before they proved who sent them (forged callbacks, wrong tokens) are logged
 * at debug level only, so a flood of them writes nothing an attacker chose at info; this sums
 * them up instead: one warning per window, with the count by reason, once the window ends.
 */
export function refusalTally(log: Logger, message: string, windowMs = 60_000): { count(reason: string): void } {
  let byReason = new Map<string, number>()
  let timer: NodeJS.Timeout | undefined
  const flush = () => {
    timer = undefined
    const counts = Object.fromEntries(byReason)
    byReason = new Map()
    const total = Object.values(counts).reduce((a, b) => a + b, 0)
    if (total > 0) log.warn(message, { refused: total, seconds: Math.round(windowMs / 1000), byReason: counts })
  }
  return {
    count(reason) {
      byReason.set(reason, (byReason.get(reason) ?? 0) + 1)
      timer ??= setTimeout(flush, windowMs).unref()
    },
  }
}
