import type { Context } from 'hono'
import { createHash, createHmac, timingSafeEqual } from 'node:crypto'

/**
 * True when `presented` equals one of `accepted`, compared in constant time. Both sides are
 * hashed first so the comparison does not leak the tokens' lengths either.
 */
export function matchesSecret(presented: string | undefined, accepted: readonly string[]): boolean {
  if (!presented) return false
  const digest = (s: string) => createHash('sha256').update(s).digest()
  const given = digest(presented)
  let found = false
  for (const token of accepted) found = timingSafeEqual(given, digest(token)) || found
  return found
}

export function bearerToken(header: string | undefined): string | undefined {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '')
  return match?.[1]
}

// The status page's session: a browser cannot send a Bearer header when it navigates, so
// POST /login takes the token once and answers with a cookie. The cookie never holds the token:
// it holds an expiry and an HMAC of it keyed by the token, so it reveals nothing a stolen
// cookie could be turned back into, needs no server-side store (any API process can check it),
// and stops working when its token is removed from API_TOKENS. Only the status page's read-only
// paths accept it; everything else still wants the Bearer header.

export const SESSION_COOKIE = 'orchestrator_status'
export const SESSION_SECONDS = 7 * 24 * 3600

const sessionMac = (token: string, expires: number) =>
  createHmac('sha256', token).update(`status-page-session:${expires}`).digest('base64url')

/** A cookie value for a session opened with `token`, valid until `expires` (ms since epoch). */
export function sessionValue(token: string, expires: number): string {
  return `${expires}.${sessionMac(token, expires)}`
}

/** When the session in `value` ends (ms since epoch), if one of `tokens` made it and it has not ended. */
export function sessionExpiry(value: string | undefined, tokens: readonly string[], now = Date.now()): number | undefined {
  const match = /^(\d{1,15})\.([A-Za-z0-9_-]{43})$/.exec(value ?? '')
  if (!match) return undefined
  const expires = Number(match[1])
  if (expires <= now) return undefined
  const given = Buffer.from(match[2]!)
  let found = false
  for (const token of tokens) found = timingSafeEqual(given, Buffer.from(sessionMac(token, expires))) || found
  return found ? expires : undefined
}

/**
 * False when the request comes from a page on another origin: by Sec-Fetch-Site where the
 * browser sends it (every current one does), else by the Origin header. A client that sends
 * neither (curl, a server) is not a browser that a page could have made send it.
 */
export function sameOrigin(c: Context): boolean {
  const site = c.req.header('sec-fetch-site')
  if (site) return site === 'same-origin' || site === 'none'
  const origin = c.req.header('origin')
  if (!origin) return true // older browsers omit it on same-origin form posts; SameSite covers the rest
  try {
    return new URL(origin).host === c.req.header('host')
  } catch {
    return false // "null" (a sandboxed or privacy-sensitive context) and anything malformed
  }
}

/** The host name a Host header names, lower case, without its port (IPv6 without its brackets). */
export function hostName(header: string | undefined): string {
  const host = (header ?? '').trim().toLowerCase()
  const bracketed = /^\[([^\]]+)\](?::\d+)?$/.exec(host)
  if (bracketed) return bracketed[1]!
  return host.replace(/:\d+$/, '')
}
