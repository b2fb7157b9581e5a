import type { Context } from 'hono'
import type { ContentfulStatusCode } from 'hono/utils/http-status'
import { DomainError, type DomainErrorCode } from '../domain/errors.ts'

// The one error shape of the API: RFC 9457 problem details, with a stable `code` that clients
// can branch on. Every code the API answers with is listed here once, with its HTTP status and
// an example body: the answers take their status and title from this table, and the OpenAPI
// document takes its `code` enum and its examples from it. A domain error code missing here is
// a compile error (the `satisfies` below).

type Entry = readonly [status: ContentfulStatusCode, detail: string, extra?: Record<string, unknown>]

const CALL = '3f0e4c1a-7b2d-4e8f-9a61-0c5d2b7e8f10'

export const PROBLEMS = {

  validation_failed: [400, 'The request is not valid: body.to must be an E.164 phone number: "+", country code and number, 7 to 15 digits, e.g. +966501234567.', {
    errors: [{ path: 'body.to', message: 'must be an E.164 phone number: "+", country code and number, 7 to 15 digits, e.g. +966501234567' }],
  }],
  malformed_json: [400, 'The body is not valid JSON: Unexpected end of JSON input.'],
  body_incomplete: [400, 'The body ended before it was complete.'],
  invalid_cursor: [400, 'The cursor is not one this API issued; start again without it.'],
  unauthorized: [401, 'Send a valid API token as "Authorization: Bearer <token>".'],
  callbacks_not_configured: [401, 'Callback authentication is not configured (WEBHOOK_SECRET or WEBHOOK_API_KEY); every callback is refused.'],
  invalid_signature: [401, 'Callback signature rejected: no valid signature.'],
  invalid_api_key: [401, 'Callback API key missing or wrong.'],
  invalid_callback_url: [401, 'The callback URL is not one we issued for a call: use the webhookUrl sent with the dial, as it is.'],
  cross_origin: [403, 'A request from a page on another site is refused: send it from a client of your own, or from this server’s own page.'],
  read_only_token: [403, 'This token may read, not change anything: use one of API_TOKENS.'],
  host_not_allowed: [403, 'This API does not answer to that host name (ALLOWED_HOSTS).'],
  call_not_found: [404, 'No call has id 3f0e4c1a-7b2d-4e8f-9a61-0c5d2b7e8f10.', { callId: CALL }],
  batch_not_found: [404, 'No batch has id 3f0e4c1a-7b2d-4e8f-9a61-0c5d2b7e8f10.', { batchId: CALL }],
  suppression_not_found: [404, '+966501234567 is not on the do-not-call list.', { phone: '+966501234567' }],
  endpoint_not_found: [404, 'No event endpoint has id 3f0e4c1a-7b2d-4e8f-9a61-0c5d2b7e8f10.', { endpointId: CALL }],
  event_not_found: [404, 'No event has id msg_3f0e4c1a-7b2d-4e8f-9a61-0c5d2b7e8f10.', { eventId: 'msg_3f0e4c1a-7b2d-4e8f-9a61-0c5d2b7e8f10' }],
  route_not_found: [404, 'No route GET /docs/assets/nothing.js.'],
  method_not_allowed: [405, 'DELETE is not allowed on /calls; use GET, POST.'],
  call_not_pending: [409, 'Call 3f0e4c1a-7b2d-4e8f-9a61-0c5d2b7e8f10 is COMPLETED; only a PENDING call can be cancelled.', { callId: CALL, callStatus: 'COMPLETED' }],
  call_not_retryable: [409, 'Call 3f0e4c1a-7b2d-4e8f-9a61-0c5d2b7e8f10 is COMPLETED; only a FAILED or EXPIRED call can be retried.', { callId: CALL, callStatus: 'COMPLETED' }],
  callback_not_bound: [409, 'This callback does not belong to the call\'s current dial: it names dial 1 of 2; nothing was changed.', { callId: CALL }],
  provider_call_id_conflict: [409, 'Provider callId prov-8c1d already belongs to another call; nothing was changed.'],
  body_too_large: [413, 'The body is larger than 65536 bytes.'],
  unsupported_media_type: [415, 'Send the body as JSON with "Content-Type: application/json".'],
  idempotency_key_reused: [422, 'This Idempotency-Key was used with another body.'],
  too_many_attempts: [429, 'Too many sign-ins that failed from here; try again in 42 s.'],
  phone_suppressed: [422, '+966501234567 is on the do-not-call list; no call to it is made.', { phone: '+966501234567' }],
  schedule_impossible: [422, 'notBefore 2030-01-02T00:00:00.000Z is not before the call\'s deadline 2030-01-01T00:00:00.000Z: it would expire without being dialed. Give an earlier notBefore or a later expiresAt.', { notBefore: '2030-01-02T00:00:00.000Z', expiresAt: '2030-01-01T00:00:00.000Z' }],
  calling_window_never_opens: [422, 'The calling window never opens before the call expires.'],
  time_zone_unknown: [422, 'No time zone is known for +88212345678; give callingWindow.timezone.'],
  expiry_passed: [422, 'expiresAt 2030-01-01T00:00:00.000Z is not in the future; give a later one, or leave it out.', { callId: CALL }],
  endpoint_not_allowed: [422, 'The url must use https.', { url: 'http://example.com/hooks' }],
  too_many_streams: [503, 'This server already has 50 status pages open; try again shortly.'],
  not_ready: [503, 'migrations pending: 0042_events.sql'],
  database_unavailable: [503, 'The database is unavailable for a moment; nothing was changed. Try again shortly.'],
  internal_error: [500, 'Something went wrong on our side; it has been logged.'],
} as const satisfies Record<string, Entry> & Record<DomainErrorCode, Entry>

export type ProblemCode = keyof typeof PROBLEMS
export const PROBLEM_CODES = Object.keys(PROBLEMS) as ProblemCode[]

/** The HTTP reason phrases, the problems' titles. */
export const TITLES: Record<number, string> = {
  400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 405: 'Method Not Allowed', 409: 'Conflict', 413: 'Content Too Large',
  415: 'Unsupported Media Type', 422: 'Unprocessable Content', 429: 'Too Many Requests', 500: 'Internal Server Error', 503: 'Service Unavailable',
}

export class HttpProblem extends Error {
  readonly status: ContentfulStatusCode
  readonly code: ProblemCode
  readonly extra: Record<string, unknown>
  readonly headers: Record<string, string>
  constructor(
    status: ContentfulStatusCode,
    code: ProblemCode,
    detail: string,
    extra: Record<string, unknown> = {},
    headers: Record<string, string> = {},
  ) {
    super(detail)
    this.status = status
    this.code = code
    this.extra = extra
    this.headers = headers
  }
}

export function toProblem(err: unknown): HttpProblem | undefined {
  if (err instanceof HttpProblem) return err
  if (err instanceof DomainError) return new HttpProblem(PROBLEMS[err.code][0], err.code, err.message, err.details)
  return undefined
}

/** The body of a problem answer, as problemResponse writes it. */
export function problemBody(code: ProblemCode, status: number, detail: string, instance: string, extra: Record<string, unknown> = {}) {
  // Extension members first, so none can overwrite a standard member.
  return { ...extra, type: `urn:call-orchestrator:problem:${code}`, title: TITLES[status] ?? 'Error', status, detail, code, instance }
}

export function problemResponse(c: Context, problem: HttpProblem): Response {
  return c.body(JSON.stringify(problemBody(problem.code, problem.status, problem.message, c.req.path, problem.extra)), problem.status, {
    'Content-Type': 'application/problem+json',
    ...problem.headers,
  })
}

/** An example answer for each code, for the OpenAPI document. */
export const problemExamples = Object.fromEntries(
  Object.entries(PROBLEMS).map(([code, [status, detail, extra]]: [string, Entry]) => [code, problemBody(code as ProblemCode, status, detail, '/calls', extra)]),
) as Record<string, Record<string, unknown>>
