import { createHmac, timingSafeEqual } from 'node:crypto'

// The webhook URL we hand the provider for one dial carries a token only we can make:
//
//   key   = HMAC-SHA256(secret, "call-orchestrator callback URL")
//   token = base64url(HMAC-SHA256(key, "{callId}:{dial}"))
//
// where `secret` is CALLBACK_URL_SECRET (its UTF-8 bytes) when set, else the first configured
// WEBHOOK_SECRET (its base64 part, decoded): a key that never travels with a request. Never
// WEBHOOK_API_KEY, which every API-key callback carries. A callback is accepted only at the URL
// of its own call and dial, so one captured callback cannot be replayed at another call's URL.
// Every configured secret is tried on the way in, so rotating WEBHOOK_SECRET keeps URLs already
// handed out valid for as long as the previous secret stays configured.

function secretBytes(secret: string): Buffer {
  return secret.startsWith('whsec_') ? Buffer.from(secret.slice('whsec_'.length), 'base64') : Buffer.from(secret, 'utf8')
}

function tokenFor(secret: string, callId: string, dial: number): Buffer {
  const key = createHmac('sha256', secretBytes(secret)).update('call-orchestrator callback URL').digest()
  return createHmac('sha256', key).update(`${callId}:${dial}`).digest()
}

/** The keys URL tokens are made and checked with: CALLBACK_URL_SECRET, else every WEBHOOK_SECRET; never the API key. */
export function urlTokenSecrets(webhook: { secrets: readonly string[]; urlSecret?: string | undefined }): string[] {
  return webhook.urlSecret ? [webhook.urlSecret] : [...webhook.secrets]
}

export function callbackToken(secret: string, callId: string, dial: number): string {
  return tokenFor(secret, callId, dial).toString('base64url')
}

/** True when `token` is the one some configured secret makes for this call and dial (constant time). */
export function verifyCallbackToken(token: string, callId: string, dial: number, secrets: readonly string[]): boolean {
  const offered = Buffer.from(token, 'base64url')
  let found = false
  for (const secret of secrets) {
    const expected = tokenFor(secret, callId, dial)
    found = (offered.length === expected.length && timingSafeEqual(offered, expected)) || found
  }
  return found
}
