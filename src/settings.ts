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
