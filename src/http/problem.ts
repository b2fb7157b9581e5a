import type { Context } from 'hono'
import type { ContentfulStatusCode } from 'hono/utils/http-status'
import { DomainError } from '../domain/call.ts'

// The one error shape of the API: RFC 9457 problem details, with a stable `code` that clients
// can branch on. Domain codes map to HTTP statuses here and nowhere else.

export class HttpProblem extends Error {
  readonly status: ContentfulStatusCode
  readonly code: string
  readonly extra: Record<string, unknown>
  readonly headers: Record<string, string>
  constructor(
    status: ContentfulStatusCode,
    code: string,
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

const statusOfCode: Record<string, ContentfulStatusCode> = {
  call_not_found: 404,
  call_not_pending: 409,
  call_not_retryable: 409,
  expiry_passed: 422,
  idempotency_key_reused: 422,
  invalid_cursor: 400,
  phone_suppressed: 422,
  calling_window_never_opens: 422,
  time_zone_unknown: 422,
  suppression_not_found: 404,
  batch_not_found: 404,
  event_not_found: 404,
  endpoint_not_found: 404,
  endpoint_not_allowed: 422,
}

const titles: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  404: 'Not Found',
  405: 'Method Not Allowed',
  409: 'Conflict',
  413: 'Content Too Large',
  415: 'Unsupported Media Type',
  422: 'Unprocessable Content',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
}

export function toProblem(err: unknown): HttpProblem | undefined {
  if (err instanceof HttpProblem) return err
  if (err instanceof DomainError) {
    const status = statusOfCode[err.code]
    return status ? new HttpProblem(status, err.code, err.message, err.details) : undefined
  }
  return undefined
}

export function problemResponse(c: Context, problem: HttpProblem): Response {
  // Extension members first, so none can overwrite a standard member.
  const body = {
    ...problem.extra,
    type: `urn:call-orchestrator:problem:${problem.code}`,
    title: titles[problem.status] ?? 'Error',
    status: problem.status,
    detail: problem.message,
    code: problem.code,
    instance: c.req.path,
  }
  return c.body(JSON.stringify(body), problem.status, {
    'Content-Type': 'application/problem+json',
    ...problem.headers,
  })
}
