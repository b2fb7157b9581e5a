import t from 'tap'
import { parseRetryAfterMs, retryDelayMs } from '../src/domain/backoff.ts'

t.test('backoff doubles from the base, is capped, and keeps half of it fixed', async (t) => {
  const policy = { baseSeconds: 5, maxSeconds: 300 }
  t.equal(retryDelayMs(1, policy, () => 0), 2_500, 'attempt 1, least jitter: half the base')
  t.equal(retryDelayMs(1, policy, () => 1), 5_000, 'attempt 1, most jitter: the base')
  t.equal(retryDelayMs(2, policy, () => 1), 10_000)
  t.equal(retryDelayMs(3, policy, () => 1), 20_000)
  t.equal(retryDelayMs(20, policy, () => 1), 300_000, 'capped')
  t.equal(retryDelayMs(20, policy, () => 0), 150_000)
  const spread = new Set(Array.from({ length: 50 }, () => retryDelayMs(2, policy)))
  t.ok(spread.size > 10, 'jitter spreads retries of calls that failed together')
})

t.test('Retry-After: seconds or an HTTP date', async (t) => {
  const now = Date.parse('2026-01-01T00:00:00Z')
  t.equal(parseRetryAfterMs('120', now), 120_000)
  t.equal(parseRetryAfterMs('Thu, 01 Jan 2026 00:00:30 GMT', now), 30_000)
  t.equal(parseRetryAfterMs('Wed, 31 Dec 2025 23:00:00 GMT', now), 0, 'a date in the past means now')
  t.equal(parseRetryAfterMs('soon', now), undefined)
  t.equal(parseRetryAfterMs(null, now), undefined)
})
