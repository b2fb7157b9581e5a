import * as v from 'valibot'
import { CALL_STATUSES, MAX_WAIT_SECONDS } from '../domain/call.ts'
import { MAX_BATCH } from '../services/calls/batches.ts'
import { isTimeZone, secondsOfDay, WEEKDAYS, type CallingWindow } from '../domain/window.ts'
import { EVENT_TYPES } from '../domain/events.ts'
import { isJsonObject, MAX_METADATA_BYTES, MAX_METADATA_DEPTH, MAX_METADATA_ENTRIES, metadataProblems, textFault } from './input.ts'
import { HttpProblem } from './problem.ts'

// Every shape the API accepts, in one place. Objects are strict: an unknown field is an error,
// not something silently dropped, so a client's typo never goes unnoticed.

export { MAX_METADATA_BYTES, MAX_METADATA_DEPTH, MAX_METADATA_ENTRIES } from './input.ts'

/** A string Postgres stores exactly as given: no NUL, no unpaired surrogate. */
const storable = v.rawCheck<string>(({ dataset, addIssue }) => {
  const fault = dataset.typed ? textFault(dataset.value) : undefined
  if (fault) addIssue({ message: `must not contain ${fault}` })
})

const e164 = v.pipe(
  v.string('must be a string'),
  v.regex(/^\+[1-9]\d{6,14}$/, 'must be an E.164 phone number: "+", country code and number, 7 to 15 digits, e.g. +966501234567'),
)

// Characters are counted as Postgres's length() counts them: code points, not UTF-16 units.
const scriptId = v.pipe(
  v.string('must be a string'),
  v.check((s) => s !== '', 'must not be empty'),
  v.check((s) => [...s].length <= 200, 'must be at most 200 characters'),
  v.check((s) => s === '' || /^\S(.*\S)?$/su.test(s), 'must not start or end with white space'),
  storable,
)

/**
 * Kept as the very object the client sent (see parseJson), never rebuilt: rebuilding an object
 * key by key drops "__proto__". Its bounds and contents are checked in one walk.
 */
const metadata = v.pipe(
  v.unknown(),
  v.description(
    `A JSON object of your own, kept with the call and sent back as is: at most ${MAX_METADATA_BYTES} bytes as JSON, ` +
      `${MAX_METADATA_DEPTH} levels deep, ${MAX_METADATA_ENTRIES} keys and array items in all.`,
  ),
  v.rawCheck(({ dataset, addIssue }) => {
    for (const problem of metadataProblems(dataset.value)) {
      addIssue({
        message: problem.message,
        ...(problem.path.length
          ? {
              path: problem.path.map((key) => ({ type: 'unknown', origin: 'value', input: dataset.value, key, value: undefined })) as [
                v.IssuePathItem,
                ...v.IssuePathItem[],
              ],
            }
          : {}),
      })
    }
  }),
  v.transform((value) => value as Record<string, unknown>),
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

/** Not dialed before this: any time up to MAX_WAIT_SECONDS from now (a time past is no wait). */
const notBefore = v.pipe(
  timestamp,
  v.transform((s) => new Date(s)),
  v.check(
    (d) => d.getTime() <= Date.now() + MAX_WAIT_SECONDS * 1000,
    `must be at most ${MAX_WAIT_SECONDS / 86_400} days from now (a call cannot wait longer to be dialed)`,
  ),
)

/** A calling window of the call's own: {"days": ["mon", …], "start": "09:00", "end": "20:00", "timezone"?}. */
export const CallingWindowSchema = v.pipe(
  v.strictObject(
    {
      days: v.pipe(
        v.array(v.picklist(WEEKDAYS, `must be one of ${WEEKDAYS.join(', ')}`), 'must be an array of days'),
        v.minLength(1, 'must name at least one day'),
        v.check((days) => new Set(days).size === days.length, 'must not name a day twice'),
      ),
      start: v.pipe(v.string('must be a string'), v.check((s) => secondsOfDay(s) !== undefined, 'must be a time of day, HH:MM or HH:MM:SS')),
      end: v.pipe(v.string('must be a string'), v.check((s) => secondsOfDay(s) !== undefined, 'must be a time of day, HH:MM or HH:MM:SS')),
      timezone: v.optional(v.pipe(v.string('must be a string'), v.check(isTimeZone, 'must be an IANA time zone, e.g. America/New_York'))),
    },
    'must be an object: {"days", "start", "end", "timezone"?}',
  ),
  v.check((w) => w.start !== w.end, 'must not start and end at the same time'),
  v.transform((w): CallingWindow => ({ days: WEEKDAYS.filter((d) => w.days.includes(d)), start: w.start, end: w.end, ...(w.timezone ? { timezone: w.timezone } : {}) })),
)

export const CreateCallBody = v.strictObject({
  to: e164,
  scriptId,
  metadata: v.optional(metadata),
  expiresAt: v.optional(futureTimestamp),
  notBefore: v.optional(notBefore),
  callingWindow: v.optional(CallingWindowSchema),
})

export const UpdateCallBody = v.pipe(
  v.strictObject({
    to: v.optional(e164),
    scriptId: v.optional(scriptId),
    metadata: v.optional(metadata),
    notBefore: v.optional(v.nullable(notBefore)),
    callingWindow: v.optional(v.nullable(CallingWindowSchema)),
  }),
  v.check(
    (body) => Object.values(body).some((value) => value !== undefined),
    'give at least one of "to", "scriptId", "metadata", "notBefore", "callingWindow"',
  ),
)

export const Phone = e164

/** POST /calls/:id/retry: the body is optional; without expiresAt the call may wait as long as it first could. */
export const RetryCallBody = v.strictObject({
  expiresAt: v.optional(futureTimestamp),
})

/** One item of POST /calls/batch: a call, with an Idempotency-Key of its own if the client wants one. */
export const BatchItem = v.strictObject({
  ...CreateCallBody.entries,
  idempotencyKey: v.optional(
    v.pipe(
      v.string('must be a string'),
      v.minLength(1, 'must not be empty'),
      v.maxLength(255, 'must be at most 255 characters'),
      v.regex(/^[\x21-\x7e]+$/, 'must be printable ASCII without spaces'),
    ),
  ),
})

export const BatchBody = v.strictObject({
  calls: v.pipe(
    v.array(v.unknown(), 'must be an array of calls'),
    v.minLength(1, 'must not be empty'),
    v.maxLength(MAX_BATCH, `must have at most ${MAX_BATCH} calls`),
  ),
})

export const EndpointBody = v.strictObject({
  url: v.pipe(v.string('must be a string'), v.maxLength(2_000, 'must be at most 2000 characters'), v.url('must be a URL'), storable),
  eventTypes: v.optional(
    v.pipe(
      v.array(v.picklist(EVENT_TYPES, `must be one of ${EVENT_TYPES.join(', ')}`)),
      v.minLength(1, 'must name at least one type, or be left out for all'),
      v.check((types) => new Set(types).size === types.length, 'must not name a type twice'),
    ),
  ),
})

/**
 * ?limit= of a page: 1 to 100, 20 when left out. A query string is text, so it is parsed from
 * one; the description says what a client sends (an integer), which is what generated clients
 * type it as.
 */
const pageLimit = v.optional(
  v.pipe(
    v.string(),
    v.check((s) => /^\d{1,3}$/.test(s) && Number(s) >= 1 && Number(s) <= 100, 'must be a whole number from 1 to 100'),
    v.metadata({ type: 'integer', minimum: 1, maximum: 100 }),
    v.transform(Number),
  ),
  '20',
)

export const EventsQuery = v.strictObject({
  callId: v.optional(v.pipe(v.string(), v.uuid('must be a UUID'))),
  batchId: v.optional(v.pipe(v.string(), v.uuid('must be a UUID'))),
  type: v.optional(v.picklist(EVENT_TYPES, `must be one of ${EVENT_TYPES.join(', ')}`)),
  limit: pageLimit,
  cursor: v.optional(v.pipe(v.string(), v.regex(/^\d{1,18}$/, 'is not a cursor this API issued'))),
})

export const ReplayBody = v.strictObject({ endpointId: v.optional(v.pipe(v.string('must be a string'), v.uuid('must be a UUID'))) })

export const SuppressionBody = v.strictObject({
  reason: v.optional(v.pipe(v.string('must be a string'), v.maxLength(500, 'must be at most 500 characters'), storable)),
  source: v.optional(v.pipe(v.string('must be a string'), v.minLength(1, 'must not be empty'), v.maxLength(100, 'must be at most 100 characters'), storable)),
})

export const MAX_IMPORT = 5_000

/** One entry of an import, judged on its own (a bad one refuses itself, not the list). */
export const SuppressionEntry = v.strictObject({
  phone: e164,
  reason: v.optional(v.pipe(v.string('must be a string'), v.maxLength(500, 'must be at most 500 characters'), storable)),
})

export const SuppressionImport = v.strictObject({
  entries: v.pipe(
    v.array(v.unknown(), 'must be an array of {"phone", "reason"?}'),
    v.minLength(1, 'must not be empty'),
    v.maxLength(MAX_IMPORT, `must have at most ${MAX_IMPORT} entries`),
  ),
  source: v.optional(v.pipe(v.string('must be a string'), v.minLength(1, 'must not be empty'), v.maxLength(100, 'must be at most 100 characters'), storable)),
})

export const DispatchSettingsBody = v.strictObject({
  maxConcurrentCalls: v.nullable(
    v.pipe(v.number('must be a number or null'), v.integer('must be a whole number'), v.minValue(1, 'must be at least 1'), v.maxValue(10_000, 'must be at most 10000')),
  ),
})

export const PageQuery = v.strictObject({
  limit: pageLimit,
  cursor: v.optional(v.string()),
})

export const CallId = v.pipe(v.string(), v.uuid('must be a UUID'))
export const Uuid = CallId
export const EventId = v.pipe(v.string(), v.regex(/^msg_[0-9a-f-]{36}$/, 'is not an event id (msg_…)'))
/** A path that takes no query parameters. */
export const NoQuery = v.strictObject({})

export const ListQuery = v.strictObject({
  status: v.optional(v.picklist(CALL_STATUSES, `must be one of ${CALL_STATUSES.join(', ')}`)),
  limit: pageLimit,
  cursor: v.optional(v.string()),
})

/** The console's call list: every filter optional; an empty field (as a form sends it) is no filter. */
const blankIsNone = <T extends v.GenericSchema>(schema: T) => v.optional(v.union([v.literal(''), schema]))
export const ConsoleQuery = v.strictObject({
  status: blankIsNone(v.picklist(CALL_STATUSES, `must be one of ${CALL_STATUSES.join(', ')}`)),
  phone: blankIsNone(e164),
  batch: blankIsNone(v.pipe(v.string(), v.uuid('must be a UUID'))),
  from: blankIsNone(timestamp),
  to: blankIsNone(timestamp),
  cursor: v.optional(v.pipe(v.string(), v.uuid('is not a cursor this page issued'))),
})

/** ?format= of GET /metrics; other parameters are ignored. */
export const MetricsQuery = v.object({
  format: v.optional(v.picklist(['json', 'prometheus'], 'must be "json" or "prometheus"')),
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
  throw invalid(
    result.issues.map((issue) => {
      const path = v.getDotPath(issue)
      let message = issue.message
      // valibot words a missing key and an unknown key alike ("Invalid key: …"); say which.
      if (issue.kind === 'schema' && issue.type === 'strict_object' && path) {
        message = issue.expected === 'never' ? 'is not a known field' : 'is required'
      }
      return { path: path ? `${where}.${path}` : where, message }
    }),
  )
}

/** A request body: a JSON object first of all, then whatever `schema` says. */
export function parseBody<S extends v.GenericSchema>(schema: S, input: unknown): v.InferOutput<S> {
  if (!isJsonObject(input)) throw invalid([{ path: 'body', message: 'must be a JSON object' }])
  return parse(schema, input, 'body')
}

/**
 * One item of a list in a body, judged on its own (a batch's calls, an import's entries): its
 * value, or the 400 problem that refuses it alone, whose paths name it (`body.<list>.<index>`).
 */
export function parseItem<S extends v.GenericSchema>(
  schema: S,
  item: unknown,
  list: string,
  index: number,
  what: string,
): { value: v.InferOutput<S> } | { problem: { status: 400; code: 'validation_failed'; detail: string; errors: Array<{ path: string; message: string }> } } {
  try {
    return { value: parseBody(schema, item) }
  } catch (err) {
    const extra = (err as { extra?: { errors?: Array<{ path: string; message: string }> } }).extra
    if (!extra?.errors) throw err
    const errors = extra.errors.map((e) => ({ ...e, path: e.path.replace(/^body/, `body.${list}.${index}`) }))
    return { problem: { status: 400, code: 'validation_failed', detail: `The ${what} is not valid: ${errors.map((e) => `${e.path} ${e.message}`).join('; ')}.`, errors } }
  }
}

/**
 * The query string as one value per name. A name given twice (limit=1&limit=2) is refused
 * rather than half-read.
 */
export function singleQuery(queries: Record<string, string[]>): Record<string, string> {
  const repeated = Object.entries(queries).filter(([, values]) => values.length > 1)
  if (repeated.length) throw invalid(repeated.map(([name]) => ({ path: `query.${name}`, message: 'is given more than once' })))
  return Object.fromEntries(Object.entries(queries).map(([name, values]) => [name, values[0]!]))
}

function invalid(errors: Array<{ path: string; message: string }>): HttpProblem {
  const summary = errors.map((e) => `${e.path} ${e.message}`).join('; ')
  return new HttpProblem(400, 'validation_failed', `The request is not valid: ${summary}.`, { errors })
}

/** Cursors are opaque to clients: the id of the last call of a page, base64url-encoded. */
export const encodeCursor = (id: string) => Buffer.from(id).toString('base64url')

/** A cursor over the do-not-call list: the last phone of a page. */
export function decodePhoneCursor(cursor: string): string {
  const phone = Buffer.from(cursor, 'base64url').toString()
  if (!v.is(e164, phone)) throw new HttpProblem(400, 'invalid_cursor', 'The cursor is not one this API issued; start again without it.')
  return phone
}

export function decodeCursor(cursor: string): string {
  const id = Buffer.from(cursor, 'base64url').toString()
  if (!v.is(CallId, id)) throw new HttpProblem(400, 'invalid_cursor', 'The cursor is not one this API issued; start again without it.')
  return id
}
