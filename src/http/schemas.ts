import * as v from 'valibot'
import { CALL_STATUSES, MAX_WAIT_SECONDS } from '../calls/model.ts'
import { HttpProblem } from './problem.ts'

// Every shape the API accepts, in one place. Objects are strict: an unknown field is an error,
// not something silently dropped, so a client's typo never goes unnoticed.

export const MAX_METADATA_BYTES = 16 * 1024
export const MAX_BODY_BYTES = 64 * 1024

const e164 = v.pipe(
  v.string('must be a string'),
  v.regex(/^\+[1-9]\d{6,14}$/, 'must be an E.164 phone number: "+", country code and number, 7 to 15 digits, e.g. +966501234567'),
)

const scriptId = v.pipe(
  v.string('must be a string'),
  v.minLength(1, 'must not be empty'),
  v.maxLength(200, 'must be at most 200 characters'),
  v.regex(/^\S(.*\S)?$/, 'must not start or end with white space'),
)

const metadata = v.pipe(
  // v.record accepts an array (and would turn [1] into {"0": 1}): refuse it first.
  v.custom<unknown>((value) => !Array.isArray(value), 'must be a JSON object'),
  v.record(v.string(), v.unknown(), 'must be a JSON object'),
  v.check(
    (value) => Buffer.byteLength(JSON.stringify(value)) <= MAX_METADATA_BYTES,
    `must be at most ${MAX_METADATA_BYTES} bytes as JSON`,
  ),
)

/**
 * An ISO 8601 timestamp naming a real calendar day: valibot's isoTimestamp accepts
 * 2024-02-30, which Date would quietly turn into 1 March.
 */
export const timestamp = v.pipe(
  v.string('must be a string'),
  v.isoTimestamp('must be an ISO 8601 timestamp with a time zone, e.g. 2030-01-01T12:00:00Z'),
  v.check((s) => {
    const [y, m, d] = s.slice(0, 10).split('-').map(Number) as [number, number, number]
    const day = new Date(Date.UTC(y, m - 1, d))
    return day.getUTCMonth() === m - 1 && day.getUTCDate() === d && new Date(s).getUTCFullYear() >= 1
  }, 'must be a real date, in year 1 or later'),
)

const futureTimestamp = v.pipe(
  timestamp,
  v.transform((s) => new Date(s)),
  v.check((d) => d.getTime() > Date.now(), 'must be in the future'),
  v.check(
    (d) => d.getTime() <= Date.now() + MAX_WAIT_SECONDS * 1000,
    `must be at most ${MAX_WAIT_SECONDS / 86_400} days from now (a call cannot wait longer to be dialed)`,
  ),
)

export const CreateCallBody = v.strictObject({
  to: e164,
  scriptId,
  metadata: v.optional(metadata),
  expiresAt: v.optional(futureTimestamp),
})

export const UpdateCallBody = v.pipe(
  v.strictObject({ to: v.optional(e164), scriptId: v.optional(scriptId), metadata: v.optional(metadata) }),
  v.check(
    (body) => body.to !== undefined || body.scriptId !== undefined || body.metadata !== undefined,
    'give at least one of "to", "scriptId", "metadata"',
  ),
)

export const CallId = v.pipe(v.string(), v.uuid('must be a UUID'))

export const ListQuery = v.strictObject({
  status: v.optional(v.picklist(CALL_STATUSES, `must be one of ${CALL_STATUSES.join(', ')}`)),
  limit: v.optional(
    v.pipe(v.string(), v.regex(/^\d+$/, 'must be a whole number'), v.transform(Number), v.minValue(1, 'must be at least 1'), v.maxValue(100, 'must be at most 100')),
    '20',
  ),
  cursor: v.optional(v.string()),
})

export const IdempotencyKey = v.pipe(
  v.string(),
  v.minLength(1, 'must not be empty'),
  v.maxLength(255, 'must be at most 255 characters'),
  v.regex(/^[\x21-\x7e]+$/, 'must be printable ASCII without spaces'),
)

/** Parses or throws a 400 problem listing every issue with its path. */
export function parse<S extends v.GenericSchema>(schema: S, input: unknown, where: string): v.InferOutput<S> {
  const result = v.safeParse(schema, input)
  if (result.success) return result.output
  const errors = result.issues.map((issue) => {
    const path = v.getDotPath(issue)
    const unknownKey = issue.kind === 'schema' && issue.type === 'strict_object' && path
    return {
      path: path ? `${where}.${path}` : where,
      message: unknownKey ? 'is not a known field' : issue.message,
    }
  })
  const summary = errors.map((e) => `${e.path} ${e.message}`).join('; ')
  throw new HttpProblem(400, 'validation_failed', `The request is not valid: ${summary}.`, { errors })
}

/** Cursors are opaque to clients: the id of the last call of a page, base64url-encoded. */
export const encodeCursor = (id: string) => Buffer.from(id).toString('base64url')

export function decodeCursor(cursor: string): string {
  const id = Buffer.from(cursor, 'base64url').toString()
  if (!v.is(CallId, id)) throw new HttpProblem(400, 'invalid_cursor', 'The cursor is not one this API issued; start again without it.')
  return id
}
