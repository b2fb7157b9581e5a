// Calling windows in the recipient's local time: "mon-fri 09:00-20:00" means those hours on
// those days on the called party's own clock, wherever they are, daylight saving included.
// When a number may be in several zones (a prefix that spans them), only instants inside the
// window in every one of them count. Everything here is pure: given an instant, a window and
// zones, the next instant the window is open.

export const WEEKDAYS = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'] as const
export type Weekday = (typeof WEEKDAYS)[number]

export interface CallingWindow {
  days: Weekday[]
  /** Local wall-clock time, "HH:MM" or "HH:MM:SS"; `end` at or before `start` means it ends the next day. */
  start: string
  end: string
  /** An IANA zone that overrides the zones of the number. */
  timezone?: string | undefined
}

const TIME = /^([01]\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?$/

/** Seconds since local midnight of "HH:MM[:SS]", or undefined when it is not such a time. */
export function secondsOfDay(time: string): number | undefined {
  const m = TIME.exec(time)
  return m ? Number(m[1]) * 3600 + Number(m[2]) * 60 + Number(m[3] ?? 0) : undefined
}

const knownZones = new Map<string, boolean>()

/** Whether `zone` is an IANA time zone this runtime knows. */
export function isTimeZone(zone: string): boolean {
  let known = knownZones.get(zone)
  if (known === undefined) {
    try {
      new Intl.DateTimeFormat('en-US', { timeZone: zone })
      known = true
    } catch {
      known = false
    }
    if (knownZones.size < 1_000) knownZones.set(zone, known) // client input passes through here too
  }
  return known
}

/**
 * "mon-fri 09:00-20:00", "sat,sun 10:00-14:00", "mon-sun 20:00-02:00" (through midnight):
 * the form CALLING_WINDOW takes. Throws a message saying what is wrong.
 */
export function parseWindowSpec(spec: string): CallingWindow {
  const m = /^\s*([a-z,\-]+)\s+(\S+)-(\S+)\s*$/i.exec(spec)
  if (!m) throw new Error('must look like "mon-fri 09:00-20:00"')
  const days = new Set<Weekday>()
  for (const part of m[1]!.toLowerCase().split(',')) {
    const [from, to] = part.split('-') as [string, string | undefined]
    const a = WEEKDAYS.indexOf(from as Weekday)
    const b = to === undefined ? a : WEEKDAYS.indexOf(to as Weekday)
    if (a < 0 || b < 0) throw new Error(`"${part}" is not a day or range of days (sun, mon, … sat)`)
    for (let i = a; ; i = (i + 1) % 7) {
      days.add(WEEKDAYS[i]!)
      if (i === b) break
    }
  }
  const window = { days: WEEKDAYS.filter((d) => days.has(d)), start: m[2]!, end: m[3]! }
  const problem = windowProblem(window)
  if (problem) throw new Error(problem)
  return window
}

/** What is wrong with a window, if anything. */
export function windowProblem(window: CallingWindow): string | undefined {
  if (window.days.length === 0) return 'names no day'
  if (secondsOfDay(window.start) === undefined) return `start "${window.start}" is not a time of day (HH:MM)`
  if (secondsOfDay(window.end) === undefined) return `end "${window.end}" is not a time of day (HH:MM)`
  if (window.start === window.end) return 'starts and ends at the same time'
  if (window.timezone !== undefined && !isTimeZone(window.timezone)) return `"${window.timezone}" is not an IANA time zone`
  return undefined
}

// ---- local time in a zone -------------------------------------------------------------------

const formatters = new Map<string, Intl.DateTimeFormat>()
function formatter(zone: string): Intl.DateTimeFormat {
  let f = formatters.get(zone)
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone: zone,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
    })
    formatters.set(zone, f)
  }
  return f
}

/** The wall clock in `zone` at `ms`, as if it were UTC (so offsets are differences of the two). */
function wallClock(ms: number, zone: string): number {
  const parts = Object.fromEntries(formatter(zone).formatToParts(new Date(ms)).map((p) => [p.type, p.value]))
  return Date.UTC(Number(parts.year), Number(parts.month) - 1, Number(parts.day), Number(parts.hour), Number(parts.minute), Number(parts.second))
}

const offsetAt = (ms: number, zone: string) => wallClock(ms, zone) - Math.floor(ms / 1000) * 1000

/**
 * The first instant whose wall clock in `zone` reads `wall` (a UTC-style ms of the wall time)
 * or later: in a fall-back hour that happens twice it is the first; in a spring-forward gap,
 * where it never happens, it is the moment the clocks jump past it.
 */
export function instantOfWallTime(wall: number, zone: string): number {
  const a = wall - offsetAt(wall, zone)
  const b = wall - offsetAt(a, zone)
  const exact = [a, b].filter((t) => wallClock(t, zone) === wall)
  if (exact.length) return Math.min(...exact)
  // A gap: find the jump between the earlier candidate (before it) and the later one (after it).
  let lo = Math.min(a, b)
  let hi = Math.max(a, b)
  while (hi - lo > 1000) {
    const mid = Math.floor((lo + hi) / 2000) * 1000
    if (wallClock(mid, zone) >= wall) hi = mid
    else lo = mid
  }
  return hi
}

// ---- the next opening ----------------------------------------------------------------------

type Interval = [number, number]

/** Where the window is open in one zone, from the local day before `from` for `days` days. */
function openIntervals(window: CallingWindow, zone: string, from: number, days: number): Interval[] {
  const start = secondsOfDay(window.start)! * 1000
  const end = secondsOfDay(window.end)! * 1000
  const localNow = wallClock(from, zone)
  const firstDay = Math.floor(localNow / 86_400_000) * 86_400_000 - 86_400_000
  const intervals: Interval[] = []
  for (let day = firstDay; day < firstDay + (days + 1) * 86_400_000; day += 86_400_000) {
    if (!window.days.includes(WEEKDAYS[new Date(day).getUTCDay()]!)) continue
    const endWall = end > start ? day + end : day + 86_400_000 + end
    intervals.push([instantOfWallTime(day + start, zone), instantOfWallTime(endWall, zone)])
  }
  return intervals
}

function intersect(a: Interval[], b: Interval[]): Interval[] {
  const out: Interval[] = []
  let i = 0
  let j = 0
  while (i < a.length && j < b.length) {
    const lo = Math.max(a[i]![0], b[j]![0])
    const hi = Math.min(a[i]![1], b[j]![1])
    if (lo < hi) out.push([lo, hi])
    if (a[i]![1] < b[j]![1]) i++
    else j++
  }
  return out
}

/** How far ahead to look: every weekday comes round twice, whatever the zones' offsets. */
const HORIZON_DAYS = 15

/**
 * The first instant at or after `from` at which `window` is open in every zone in `zones`
 * (the window's own timezone, when it has one, replaces them); `from` itself if it is open now.
 * Null when that never happens within two weeks (zones whose windows never overlap).
 */
export function nextOpening(window: CallingWindow, zones: readonly string[], from: Date): Date | null {
  const within = window.timezone ? [window.timezone] : zones
  if (within.length === 0) throw new Error('a calling window needs at least one time zone')
  const t = from.getTime()
  let open: Interval[] | undefined
  for (const zone of within) {
    const intervals = openIntervals(window, zone, t, HORIZON_DAYS)
    open = open ? intersect(open, intervals) : intervals
  }
  const next = open!.find(([, end]) => end > t)
  return next ? new Date(Math.max(next[0], t)) : null
}

/** Whether `window` is open in every zone at `at`. */
export function isOpen(window: CallingWindow, zones: readonly string[], at: Date): boolean {
  return nextOpening(window, zones, at)?.getTime() === at.getTime()
}
