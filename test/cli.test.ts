import t from 'tap'
import { runBinary } from './support/processes.ts'

// bin/orchestrator's exit codes: 78 (EX_CONFIG) for every configuration error, in every mode,
// with a message naming the variable and no stack trace; 2 for bad usage.

const cases: Array<[string, Record<string, string>, RegExp]> = [
  ['worker', { DATABASE_URL: 'postgres://nobody@127.0.0.1:1/x', WEBHOOK_SECRET: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw' }, /PROVIDER_BASE_URL/],
  ['worker', { DATABASE_URL: 'postgres://nobody@127.0.0.1:1/x', PROVIDER_BASE_URL: 'http://127.0.0.1:9' }, /WEBHOOK_SECRET/],
  ['all', { DATABASE_URL: 'postgres://nobody@127.0.0.1:1/x', PROVIDER_BASE_URL: 'http://127.0.0.1:9' }, /WEBHOOK_SECRET/],
  ['simulator', {}, /WEBHOOK_SECRET/],
  ['api', { PORT: 'http' }, /PORT/],
  ['migrate', { DATABASE_URL: 'mysql://x' }, /DATABASE_URL/],
  ['worker', { CALL_TTL_SECONDS: '0' }, /CALL_TTL_SECONDS/],
  // The webhook URLs' tokens are never made with the API key every API-key callback carries.
  ['api', { DATABASE_URL: 'postgres://nobody@127.0.0.1:1/x', WEBHOOK_API_KEY: 'k' }, /CALLBACK_URL_SECRET/],
  ['worker', { DATABASE_URL: 'postgres://nobody@127.0.0.1:1/x', PROVIDER_BASE_URL: 'http://127.0.0.1:9', WEBHOOK_API_KEY: 'k' }, /CALLBACK_URL_SECRET/],
  ['api', { CALLBACK_URL_SECRET: 'too short' }, /CALLBACK_URL_SECRET/],
  // A token is all it takes to place calls: at least 32 characters, unless said otherwise.
  ['api', { API_TOKENS: 'short-token' }, /API_TOKENS: every token needs at least 32 characters/],
  ['all', { API_TOKENS: 'x'.repeat(32), API_READ_TOKENS: 'short' }, /API_READ_TOKENS/],
  ['api', { API_READ_TOKENS: 'r'.repeat(32) }, /API_READ_TOKENS: read-only tokens need API_TOKENS/],
]

for (const [mode, env, variable] of cases) {
  t.test(`${mode} with ${JSON.stringify(env)}: exit 78 naming the variable`, async (t) => {
    const proc = runBinary(t, mode, env)
    t.equal(await proc.exited, 78)
    t.match(proc.output(), variable)
    t.notMatch(proc.output(), /\n\s+at /, 'no stack trace')
  })
}

t.test('an unknown mode is bad usage: exit 2', async (t) => {
  const proc = runBinary(t, 'dance', {})
  t.equal(await proc.exited, 2)
  t.match(proc.output(), /unknown mode/)
})
