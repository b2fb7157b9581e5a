import { createHash } from 'node:crypto'
import { nextOpening, type CallingWindow } from './window.ts'

// The calling policy: when a call may be dialed (its notBefore, its calling window in the
// called party's local time, per-person caps) and what follows a busy, unanswered or failed
// call. Configured globally (src/config.ts); the window is overridable per call. With nothing
// configured every call may go at once and every outcome is final, as the spec has it.

export type RetriedOutcome = 'BUSY' | 'NO_ANSWER' | 'FAILED'

export interface CallingPolicy {
  /** The window every call keeps unless it brings its own; null: any time. */
  window: CallingWindow | null
  /** Dials per phone in any 24 hours and any 7 days, across its calls; 0: no cap. */
  caps: { perDay: number; perWeek: number }
  /** A new dial after these outcomes, at most `limit` times each, `delaySeconds` after the last ended. */
  retries: Partial<Record<RetriedOutcome, { limit: number; delaySeconds: number }>>
}

export const NO_POLICY: CallingPolicy = { window: null, caps: { perDay: 0, perWeek: 0 }, retries: {} }

/** A fingerprint of what decides due times, so a worker can tell the policy changed. */
export function policyHash(policy: CallingPolicy): string {
  return createHash('sha256').update(JSON.stringify({ window: policy.window, caps: policy.caps })).digest('hex').slice(0, 16)
}

export type WaitingFor = 'not_before' | 'calling_window' | 'cap' | 'retry'

export interface CallTiming {
  phone: string
  not_before: Date | null
  calling_window: CallingWindow | null
  time_zones: string[]
}

/** The window a call keeps: its own, else the policy's. */
export const windowOf = (policy: CallingPolicy, call: Pick<CallTiming, 'calling_window'>): CallingWindow | null =>
  call.calling_window ?? policy.window

/**
 * The first moment at or after `now` (the database's), or after `from` (an outcome retry's
 * delay), at which the call may be dialed, and what it waits for until then; null when its
 * window never opens in every one of its zones. Rules push the time later in turn until none does.
 * `capAt`: when the phone's dial caps next allow a dial (src/services/calls/due.ts reads it).
 */
export function dueTimeGiven(
  policy: CallingPolicy,
  call: CallTiming,
  now: Date,
  capAt: Date | null,
  from: { at: Date; reason: WaitingFor } | undefined = undefined,
): { at: Date; waitingFor: WaitingFor | null } | null {
  let at = now
  let reason: WaitingFor | null = null
  const later = (candidate: Date | null, why: WaitingFor) => {
    if (candidate && candidate.getTime() > at.getTime()) {
      at = candidate
      reason = why
    }
  }
  later(from?.at ?? null, from?.reason ?? 'retry')
  later(call.not_before, 'not_before')
  const window = windowOf(policy, call)
  // Zones unknown (a window configured after the call was made, for a number the data cannot
  // place): the window cannot be judged, so it is treated as never open.
  if (window && !window.timezone && call.time_zones.length === 0) return null
  for (let round = 0; round < 10; round++) {
    const before = at.getTime()
    later(capAt, 'cap')
    if (window) {
      const open = nextOpening(window, call.time_zones, at)
      if (!open) return null
      later(open, 'calling_window')
    }
    if (at.getTime() === before) break
  }
  return { at, waitingFor: reason }
}

/** Whether any rule can make a call wait (so claims skip the checks when none can). */
export const policyRestricts = (policy: CallingPolicy, call: Pick<CallTiming, 'calling_window' | 'not_before'>) =>
  Boolean(windowOf(policy, call) || policy.caps.perDay > 0 || policy.caps.perWeek > 0 || call.not_before)
