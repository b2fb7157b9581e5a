import type { Context } from 'hono'
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import { endSession, findSession, openSession } from '../store/sessions.ts'
import type { Sql } from '../store/sql.ts'

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
// POST /login takes the token once and answers with a cookie. The cookie is a random key and
// nothing else: it tells nothing about the token, so a stolen one cannot be turned into
// guesses of it. The server keeps the key's hash, the hash of the token the session was opened
// with (the session ends when that token is removed from the configuration) and an expiry it
// sets itself (sql/014_status_sessions.sql); logging out deletes it. Only the status page's
// read-only paths accept it; everything else still wants the Bearer header.

export const SESSION_COOKIE = 'orchestrator_status'
export const SESSION_SECONDS = 7 * 24 * 3600

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex')

export interface SessionStore {
  /** A new session for a token already checked; its cookie key and when it ends. */
  open(token: string): Promise<{ key: string; expires: Date }>
  /** When the session with this cookie key ends (ms since epoch), if it lasts and its token is still one of `tokens`. */
  until(key: string | undefined, tokens: readonly string[]): Promise<number | undefined>
  end(key: string | undefined): Promise<void>
}

export function sessionStore(sql: Sql): SessionStore {
  return {
    async open(token) {
      const key = randomBytes(32).toString('base64url')
      return { key, expires: await openSession(sql, sha256(key), sha256(token), SESSION_SECONDS) }
    },
    async until(key, tokens) {
      if (!key || !/^[A-Za-z0-9_-]{43}$/.test(key)) return undefined
      const session = await findSession(sql, sha256(key))
      if (!session || !tokens.some((token) => sha256(token) === session.token_hash)) return undefined
      return session.expires_at.getTime()
    },
    async end(key) {
      if (key) await endSession(sql, sha256(key))
    },
  }
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
