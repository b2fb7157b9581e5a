import type { Context } from 'hono'
import { HttpProblem } from './problem.ts'

// Request bodies, read whole and bounded. An oversized body is still read to its end (and
// thrown away) when it is no larger than DRAIN_LIMIT_BYTES, so the 413 is the answer to a
// complete request and a keep-alive client can send its next request on the same connection.
// Past that, reading on would let anyone make us swallow any amount, so the 413 says
// "Connection: close" and the socket closes once the answer has been written.

export const MAX_BODY_BYTES = 64 * 1024
const DRAIN_LIMIT_BYTES = 1024 * 1024

function tooLarge(close: boolean): HttpProblem {
  return new HttpProblem(413, 'body_too_large', `The body is larger than ${MAX_BODY_BYTES} bytes.`, {}, close ? { Connection: 'close' } : {})
}

/** The body as text (UTF-8), at most MAX_BODY_BYTES; throws a 413 problem past that. */
export async function readBody(c: Context): Promise<string> {
  const declared = Number(c.req.header('content-length') ?? NaN)
  const stream = c.req.raw.body
  if (!stream) return ''
  if (declared > DRAIN_LIMIT_BYTES) {
    await stream.cancel().catch(() => {})
    throw tooLarge(true)
  }
  const reader = stream.getReader()
  const chunks: Uint8Array[] = []
  let size = 0
  for (;;) {
    let next: Awaited<ReturnType<typeof reader.read>>
    try {
      next = await reader.read()
    } catch {
      // The client went away mid-body; there is nobody to answer.
      throw new HttpProblem(400, 'body_incomplete', 'The body ended before it was complete.', {}, { Connection: 'close' })
    }
    if (next.done) break
    size += next.value.byteLength
    if (size > DRAIN_LIMIT_BYTES) {
      await reader.cancel().catch(() => {})
      throw tooLarge(true)
    }
    if (size <= MAX_BODY_BYTES) chunks.push(next.value)
  }
  if (size > MAX_BODY_BYTES) throw tooLarge(false)
  return Buffer.concat(chunks).toString('utf8')
}
