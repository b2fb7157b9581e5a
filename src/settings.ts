import { createHash } from 'node:crypto'
import { ConfigError, listItems, loadConfig, type Config } from './config.ts'
import { MAX_WAIT_SECONDS } from './domain/call.ts'
import { EVENT_TYPES } from './domain/events.ts'
import type { CallingPolicy } from './domain/policy.ts'
import { parseWindowSpec } from './domain/window.ts'

// The configuration as the domain sees it: src/config.ts reads the environment's syntax, and
// this adds what only the domain can judge. Every process loads its settings here, once, at
// start-up, and stops with a ConfigError naming the variable when one is wrong.

export interface Settings extends Config {
  /** The calling policy every call keeps unless it brings its own window. */
  policy: CallingPolicy
}

export function loadSettings(env: Record<string, string | undefined>): Settings {
  const config = loadConfig(env)
  if (config.dispatch.callTtlSeconds > MAX_WAIT_SECONDS) {
    throw new ConfigError(`CALL_TTL_SECONDS: at most ${MAX_WAIT_SECONDS} (365 days): a call cannot wait longer than its queued job is kept`)
  }
  const unknown = listItems(env.EVENT_TYPES ?? '').filter((t) => !(EVENT_TYPES as readonly string[]).includes(t))
  if (unknown.length) throw new ConfigError(`EVENT_TYPES: ${unknown.join(', ')} is not an event type; use some of ${EVENT_TYPES.join(', ')}`)
  return { ...config, policy: callingPolicy(config.calling) }
}

function callingPolicy(calling: Config['calling']): CallingPolicy {
  let window = null
  if (calling.window) {
    try {
      window = parseWindowSpec(calling.window)
    } catch (err) {
      throw new ConfigError(`CALLING_WINDOW: ${(err as Error).message} (got ${JSON.stringify(calling.window)})`)
    }
  }
  for (const [outcome, retry] of Object.entries(calling.retries)) {
    if (retry.delaySeconds > MAX_WAIT_SECONDS) throw new ConfigError(`RETRY_${outcome}: the delay is at most 365 days`)
  }
  return { window, caps: calling.caps, retries: calling.retries }
}

/**
 * What this process's environment says about the settings that act for every process: the
 * limits, the calling policy, and the endpoint EVENT_WEBHOOK_URL configures. Each is recorded
 * (sql/016_shared_settings.sql); one that differs from what another process recorded is a
 * warning naming the variables, both values and the other process. Secrets are named by a
 * fingerprint, never themselves.
 */
export function sharedSettings(settings: Settings): Record<string, Record<string, unknown>> {
  const d = settings.dispatch
  const c = settings.calling
  const shared: Record<string, Record<string, unknown>> = {
    limits: {
      MAX_CONCURRENT_CALLS: d.maxConcurrentCalls,
      MAX_ATTEMPTS: d.maxAttempts,
      RETRY_BASE_SECONDS: d.retryBaseSeconds,
      RETRY_MAX_SECONDS: d.retryMaxSeconds,
      CALL_TIMEOUT_SECONDS: d.callTimeoutSeconds,
      CALL_TTL_SECONDS: d.callTtlSeconds,
    },
    calling_policy: {
      CALLING_WINDOW: c.window,
      CAP_PER_PHONE_24H: c.caps.perDay,
      CAP_PER_PHONE_7D: c.caps.perWeek,
      RETRY_BUSY: c.retries.BUSY ?? null,
      RETRY_NO_ANSWER: c.retries.NO_ANSWER ?? null,
      RETRY_FAILED: c.retries.FAILED ?? null,
    },
  }
  const endpoint = settings.events.endpoint
  if (endpoint) {
    shared.event_endpoint = {
      EVENT_WEBHOOK_URL: endpoint.url,
      EVENT_TYPES: endpoint.eventTypes,
      EVENT_WEBHOOK_SECRET: endpoint.secrets.map((s) => `sha256:${createHash('sha256').update(s).digest('hex').slice(0, 12)}`),
    }
  }
  return shared
}

/** JSON with object keys in order, so two views compare whatever order jsonb gave them back in. */
const stable = (value: unknown): string =>
  JSON.stringify(value, (_, v: unknown) =>
    v && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => a.localeCompare(b))) : v,
  )

/** The variables whose values differ between two views of one shared setting, each with both values. */
export function differences(ours: Record<string, unknown>, theirs: unknown): Record<string, { ours: unknown; theirs: unknown }> {
  const other = (theirs && typeof theirs === 'object' ? theirs : {}) as Record<string, unknown>
  const out: Record<string, { ours: unknown; theirs: unknown }> = {}
  for (const key of new Set([...Object.keys(ours), ...Object.keys(other)])) {
    if (stable(ours[key] ?? null) !== stable(other[key] ?? null)) out[key] = { ours: ours[key] ?? null, theirs: other[key] ?? null }
  }
  return out
}
