import { createHmac, timingSafeEqual } from 'node:crypto'

// Standard Webhooks (standardwebhooks.com): HMAC-SHA256 over "{id}.{timestamp}.{body}" keyed
// with the base64 part of a "whsec_" secret, sent as space-separated "v1,<base64>" entries.

export const TOLERANCE_SECONDS = 5 * 60

function keyOf(secret: string): Buffer {
  return Buffer.from(secret.startsWith('whsec_') ? secret.slice('whsec_'.length) : secret, 'base64')
}

export function signPayload(secret: string, id: string, timestamp: number, body: string): string {
  return `v1,${createHmac('sha256', keyOf(secret)).update(`${id}.${timestamp}.${body}`).digest('base64')}`
}

export type Verification = { ok: true; webhookId: string } | { ok: false; reason: string }

export function verifyCallbackSignature(
  headers: { id?: string | undefined; timestamp?: string | undefined; signature?: string | undefined },
  body: string,
  secrets: readonly string[],
  nowSeconds = Math.floor(Date.now() / 1000),
): Verification {
  if (!headers.id || !headers.timestamp || !headers.signature) {
    return { ok: false, reason: 'missing webhook-id, webhook-timestamp or webhook-signature header' }
  }
  if (!/^\d{1,12}$/.test(headers.timestamp)) return { ok: false, reason: 'webhook-timestamp is not unix seconds' }
  const timestamp = Number(headers.timestamp)
  if (Math.abs(nowSeconds - timestamp) > TOLERANCE_SECONDS) {
    return { ok: false, reason: `webhook-timestamp is more than ${TOLERANCE_SECONDS} seconds from now` }
  }
  const offered = headers.signature
    .split(' ')
    .filter((entry) => entry.startsWith('v1,'))
    .map((entry) => Buffer.from(entry.slice(3), 'base64'))
  for (const secret of secrets) {
    const expected = Buffer.from(signPayload(secret, headers.id, timestamp, body).slice(3), 'base64')
    for (const candidate of offered) {
      if (candidate.length === expected.length && timingSafeEqual(candidate, expected)) {
        return { ok: true, webhookId: headers.id }
      }
    }
  }
  return { ok: false, reason: 'no valid signature' }
}
