import { createHash, timingSafeEqual } from 'node:crypto'

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
