/**
 * Delay before attempt `attempt + 1`, after `attempt` failed: exponential from `baseSeconds`,
 * capped at `maxSeconds`, with "equal jitter" (half fixed, half random) so retries of calls that
 * failed together spread out but never come back sooner than half the nominal delay.
 */
export function retryDelayMs(
  attempt: number,
  policy: { baseSeconds: number; maxSeconds: number },
  random: () => number = Math.random,
): number {
  const nominal = Math.min(policy.maxSeconds, policy.baseSeconds * 2 ** Math.max(0, attempt - 1)) * 1000
  return Math.round(nominal / 2 + (random() * nominal) / 2)
}

/** Retry-After is either delta-seconds or an HTTP date (RFC 9110 §10.2.3). */
export function parseRetryAfterMs(value: string | null, now = Date.now()): number | undefined {
  if (!value) return undefined
  const trimmed = value.trim()
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000
  const at = Date.parse(trimmed)
  return Number.isNaN(at) ? undefined : Math.max(0, at - now)
}
