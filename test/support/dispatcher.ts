import { Dispatcher, type DispatcherOptions } from '../../src/worker/dispatcher.ts'
import { createProviderClient, type ProviderClient } from '../../src/provider/client.ts'
import { silentLogger } from '../../src/platform/log.ts'
import { WEBHOOK_SECRET, type Harness } from './harness.ts'

/** A worker's options for tests: slow polls and sweeps unless a test asks otherwise. */
export const TEST_DISPATCH: DispatcherOptions = {
  maxConcurrentCalls: 30,
  maxAttempts: 3,
  retryBaseSeconds: 1,
  retryMaxSeconds: 1,
  callTimeoutSeconds: 600,
  pollMs: 60_000,
  shutdownTimeoutMs: 5_000,
  leaseMs: 10_000,
  reconcileAfterSeconds: 120,
  reconcileRatePerSecond: 5,
}

/**
 * A worker in the test's own process, on the harness's database, dialing `providerUrl`;
 * started, and stopped at the test's end.
 */
export async function startDispatcher(
  t: { teardown(fn: () => Promise<void> | void): void },
  h: Pick<Harness, 'sql' | 'url' | 'queue'>,
  providerUrl: string,
  options: Partial<DispatcherOptions> & { publicBaseUrl?: string; providerTimeoutMs?: number; provider?: ProviderClient } = {},
): Promise<Dispatcher> {
  const { publicBaseUrl = 'http://127.0.0.1:9', providerTimeoutMs = 5_000, provider, ...dispatch } = options
  const dispatcher = new Dispatcher({
    sql: h.sql,
    listenUrl: h.url,
    queue: h.queue,
    provider: provider ?? createProviderClient({ baseUrl: providerUrl, timeoutMs: providerTimeoutMs, publicBaseUrl, callbackSecret: WEBHOOK_SECRET }),
    options: { ...TEST_DISPATCH, ...dispatch },
    log: silentLogger,
  })
  await dispatcher.start()
  t.teardown(() => dispatcher.stop())
  return dispatcher
}
