import type { Context } from 'hono'
import { MAX_METADATA_DEPTH, parseJson, TooDeep } from './input.ts'
import { HttpProblem } from './problem.ts'

// Request bodies, read whole and bounded. An oversized body is still read to its end (and
// thrown away) when it is at most 1 MiB over the limit, so the 413 is the answer to a
// complete request and a keep-alive client can send its next request on the same connection.
// Past that, reading on would let anyone make us swallow any amount, so the 413 says
// "Connection: close" and the socket closes once the answer has been written.

export const MAX_BODY_BYTES = 64 * 1024
const DRAIN_MARGIN_BYTES = 1024 * 1024

function tooLarge(max: number, close: boolean): HttpProblem {
  return new HttpProblem(413, 'body_too_large', `The body is larger than ${max} bytes.`, {}, close ? { Connection: 'close' } : {})
}

/** The body as text (UTF-8), at most `max` bytes (MAX_BODY_BYTES unless a route allows more); a 413 past that. */
export async function readBody(c: Context, max = MAX_BODY_BYTES): Promise<string> {
  const drainLimit = max + DRAIN_MARGIN_BYTES
  const declared = Number(c.req.header('content-length') ?? NaN)
  const stream = c.req.raw.body
  if (!stream) return ''
  if (declared > drainLimit) {
    await stream.cancel().catch(() => {})
    throw tooLarge(max, true)
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
    if (size > drainLimit) {
      await reader.cancel().catch(() => {})
      throw tooLarge(max, true)
    }
    if (size <= max) chunks.push(next.value)
  }
  if (size > max) throw tooLarge(max, false)
  return Buffer.concat(chunks).toString('utf8')
}

/**
 * A JSON body: read within `max` bytes, sent as JSON, parsed keeping every key and number
 * exact. With `optional`, no body at all reads as {}.
 */
export async function readJson(c: Context, max = MAX_BODY_BYTES, optional = false): Promise<unknown> {
  const text = await readBody(c, max)
  if (optional && text === '') return {}
  return parseJsonBody(c, text)
}

/** A body already read, as readJson parses it (the content type checked too). */
export function parseJsonBody(c: Context, text: string): unknown {
  const type = c.req.header('content-type') ?? ''
  if (!/^application\/(.+\+)?json\s*(;|$)/i.test(type)) {
    throw new HttpProblem(415, 'unsupported_media_type', 'Send the body as JSON with "Content-Type: application/json".')
  }
  try {
    // The body object is level 1, so metadata may reach level MAX_METADATA_DEPTH + 1.
    return parseJson(text, MAX_METADATA_DEPTH + 1)
  } catch (err) {
    if (err instanceof TooDeep) {
      const field = `body.${err.path.slice(0, 1).join('.')}`
      const message = field === 'body.metadata' ? `must be at most ${MAX_METADATA_DEPTH} levels deep` : 'is nested too deeply'
      throw new HttpProblem(400, 'validation_failed', `The request is not valid: ${field} ${message}.`, { errors: [{ path: field, message }] })
    }
    throw new HttpProblem(400, 'malformed_json', `The body is not valid JSON: ${(err as Error).message}.`)
  }
}
