import type { GenericSchema } from 'valibot'
import { CallbackBody, CallbackUrl } from '../routes/callbacks.ts'
import type { ProblemCode } from '../problem.ts'
import * as s from '../schemas.ts'
import { DocsAsset } from './docs-assets.ts'
import * as r from './responses.ts'

// Every operation the API serves, as the OpenAPI description tells it. Request shapes are the
// very valibot schemas the handlers parse with (src/http/schemas.ts, src/http/routes/callbacks.ts);
// response shapes are in ./responses.ts. test/openapi.test.ts checks this table against the
// routes the Hono app registers, both ways.

export type Method = 'get' | 'post' | 'put' | 'patch' | 'delete'

/**
 * Who may call. With API_TOKENS set: `admin`, one of API_TOKENS; `read`, one of those or of
 * API_READ_TOKENS; `session`, the status page's, a read token or its sign-in cookie. Always:
 * `public`, anyone; `provider`, the provider's callback (webhook signature or callback API key).
 * `console`: the console's actions, one of API_TOKENS or a sign-in cookie opened with one.
 */
export type Access = 'admin' | 'read' | 'session' | 'console' | 'public' | 'provider'

/** What must be wired into the app for the route to be served (AppDeps); always, when left out. */
export type Part = 'callbacks' | 'suppressions' | 'dispatch' | 'batches' | 'events' | 'status'

export interface Answer {
  description: string
  /** A JSON body of this shape; none when left out. */
  schema?: GenericSchema
  /** Bodies described by media type alone (a page, a script, this document). */
  mediaTypes?: string[]
  headers?: Array<'Location' | 'Idempotent-Replayed'>
  example?: unknown
}

/** Whether the route wants a token when API_TOKENS is set. */
export const needsToken = (op: Pick<Operation, 'access'>) => op.access !== 'public' && op.access !== 'provider'

export interface Operation {
  method: Method
  /** As Hono writes it: /calls/:id. */
  path: string
  id: string
  tag: string
  summary: string
  description?: string
  access: Access
  needs?: Part
  pathParams?: Record<string, { schema: GenericSchema; description: string }>
  query?: GenericSchema
  /** The route takes an Idempotency-Key header. */
  idempotent?: boolean
  body?: { schema: GenericSchema; required: boolean; example: unknown }
  answers: Record<number, Answer>
  /** Problem codes this route can answer with, beyond those every route shares (see document.ts). */
  problems?: Array<[status: number, code: ProblemCode]>
}

const callId = { schema: s.CallId, description: 'The call’s id.' }
const batchId = { schema: s.Uuid, description: 'The batch’s id (batchId of POST /calls/batch).' }
const endpointId = { schema: s.Uuid, description: 'The event endpoint’s id.' }
const eventId = { schema: s.EventId, description: 'The event’s id: msg_ and a UUID.' }
const phone = { schema: s.Phone, description: 'The number, E.164 (URL-encode the "+" as %2B or send it as is).' }

const createCallExample = { to: '+966501234567', scriptId: 'welcomeFlow', metadata: { customerId: 'c-42' }, callingWindow: { days: ['sun', 'mon', 'tue', 'wed', 'thu'], start: '09:00', end: '20:00', timezone: 'Asia/Riyadh' } }

const callNotFound: [number, ProblemCode] = [404, 'call_not_found']
const pending: [number, ProblemCode] = [409, 'call_not_pending']
const invalidCursor: [number, ProblemCode] = [400, 'invalid_cursor']
const createProblems: Array<[number, ProblemCode]> = [[422, 'idempotency_key_reused'], [422, 'phone_suppressed'], [422, 'calling_window_never_opens'], [422, 'time_zone_unknown'], [422, 'schedule_impossible']]

export const OPERATIONS: Operation[] = [
  { method: 'get', path: '/healthz', id: 'health', tag: 'Operations', summary: 'Liveness: the process answers.', access: 'public', answers: { 200: { description: 'Alive.', schema: r.Health } } },
  {
    method: 'get', path: '/readyz', id: 'ready', tag: 'Operations', summary: 'Readiness: the database is reachable and migrated.', access: 'public',
    answers: { 200: { description: 'Ready.', schema: r.Ready } }, problems: [[503, 'not_ready']],
  },
  {
    method: 'get', path: '/metrics', id: 'metrics', tag: 'Operations', access: 'read',
    summary: 'Counts of calls by status, slots, dispatch state; JSON or Prometheus text.',
    description: 'JSON unless ?format=prometheus, or an Accept header asking for text/plain and not JSON.',
    query: s.MetricsQuery,
    answers: {
      200: {
        description: 'The metrics: JSON (application/json) or the Prometheus text exposition format (text/plain; version=0.0.4).',
        schema: r.Metrics,
        example: { calls: { PENDING: 3, IN_PROGRESS: 2, COMPLETED: 40, FAILED: 1, EXPIRED: 0, SUPPRESSED: 0, CANCELLED: 0 }, inFlight: 2, freeSlots: 28, maxConcurrentCalls: 30, paused: false, callbacksRefused: {} },
      },
    },
  },

  {
    method: 'post', path: '/calls', id: 'createCall', tag: 'Calls', access: 'admin', idempotent: true,
    summary: 'Create a call; it is dialed when its time, window and the concurrency limit allow.',
    body: { schema: s.CreateCallBody, required: true, example: createCallExample },
    answers: {
      201: { description: 'Created.', schema: r.Call, headers: ['Location'] },
      200: { description: 'An earlier request with this Idempotency-Key and the same body created it: the call as it is now.', schema: r.Call, headers: ['Location', 'Idempotent-Replayed'] },
    },
    problems: createProblems,
  },
  {
    method: 'get', path: '/calls', id: 'listCalls', tag: 'Calls', access: 'read', summary: 'List calls, newest first, a page at a time.', query: s.ListQuery,
    answers: { 200: { description: 'A page of calls.', schema: r.CallPage } }, problems: [invalidCursor],
  },
  {
    method: 'get', path: '/calls/:id', id: 'getCall', tag: 'Calls', access: 'read', summary: 'Read a call, with its dials.', pathParams: { id: callId },
    answers: { 200: { description: 'The call.', schema: r.Call } }, problems: [callNotFound],
  },
  {
    method: 'patch', path: '/calls/:id', id: 'updateCall', tag: 'Calls', access: 'admin', summary: 'Change a PENDING call: number, script, metadata, notBefore, calling window.',
    pathParams: { id: callId }, body: { schema: s.UpdateCallBody, required: true, example: { notBefore: '2030-01-01T09:00:00Z', metadata: { customerId: 'c-42', note: 'moved' } } },
    answers: { 200: { description: 'The call as changed.', schema: r.Call } }, problems: [callNotFound, pending, [422, 'phone_suppressed'], [422, 'calling_window_never_opens'], [422, 'time_zone_unknown'], [422, 'schedule_impossible']],
  },
  {
    method: 'post', path: '/calls/:id/cancel', id: 'cancelCall', tag: 'Calls', access: 'admin', needs: 'batches', summary: 'Cancel a PENDING call.', pathParams: { id: callId },
    answers: { 200: { description: 'The call, now CANCELLED.', schema: r.Call } }, problems: [callNotFound, pending],
  },
  {
    method: 'post', path: '/calls/:id/retry', id: 'retryCall', tag: 'Calls', access: 'admin', needs: 'batches', summary: 'Dial a FAILED or EXPIRED call again.',
    description: 'The call goes back to PENDING with a new job and is dialed under its next dial, when its calling rules allow. It may wait until expiresAt, or by default as long as it first could, counted from now. A call whose last dial ended with an unknown outcome may have been placed: retrying it may ring the person twice.',
    pathParams: { id: callId }, body: { schema: s.RetryCallBody, required: false, example: { expiresAt: '2030-01-01T09:00:00Z' } },
    answers: { 200: { description: 'The call, PENDING again.', schema: r.Call } },
    problems: [callNotFound, [409, 'call_not_retryable'], [422, 'phone_suppressed'], [422, 'calling_window_never_opens'], [422, 'expiry_passed']],
  },
  {
    method: 'post', path: '/calls/batch', id: 'createBatch', tag: 'Batches', access: 'admin', needs: 'batches', idempotent: true,
    summary: 'Create up to 1000 calls at once; each item is accepted or refused on its own.',
    description: 'The body may be up to 2 MiB. Each item has the fields of POST /calls and an optional idempotencyKey of its own; a refused item is answered with its index and problem, and the others are still created.',
    body: { schema: s.BatchBody, required: true, example: { calls: [{ to: '+966501234567', scriptId: 'welcomeFlow', idempotencyKey: 'order-1' }, { to: '+14155550100', scriptId: 'welcomeFlow' }] } },
    answers: {
      201: { description: 'The batch was made; items say which calls were created, replayed or refused.', schema: r.BatchCreated, headers: ['Location'] },
      200: { description: 'An earlier request with this Idempotency-Key and the same body made the batch: the same answer again.', schema: r.BatchCreated, headers: ['Location', 'Idempotent-Replayed'] },
    },
    problems: [[422, 'idempotency_key_reused']],
  },
  {
    method: 'get', path: '/calls/batch/:id', id: 'getBatch', tag: 'Batches', access: 'read', needs: 'batches', summary: 'Read a batch: counts by status and its calls.', pathParams: { id: batchId },
    answers: { 200: { description: 'The batch.', schema: r.Batch } }, problems: [[404, 'batch_not_found']],
  },
  {
    method: 'post', path: '/calls/batch/:id/cancel', id: 'cancelBatch', tag: 'Batches', access: 'admin', needs: 'batches', summary: 'Cancel every call of the batch still PENDING.', pathParams: { id: batchId },
    answers: { 200: { description: 'The batch, and how many calls this cancelled.', schema: r.BatchCancelled } }, problems: [[404, 'batch_not_found']],
  },

  {
    method: 'get', path: '/suppressions', id: 'listSuppressions', tag: 'Do-not-call list', access: 'read', needs: 'suppressions', summary: 'List the do-not-call list, a page at a time.', query: s.PageQuery,
    answers: { 200: { description: 'A page of numbers.', schema: r.SuppressionPage } }, problems: [invalidCursor],
  },
  {
    method: 'post', path: '/suppressions/import', id: 'importSuppressions', tag: 'Do-not-call list', access: 'admin', needs: 'suppressions', summary: `Add up to ${s.MAX_IMPORT} numbers in one transaction (body up to 1 MiB).`,
    body: { schema: s.SuppressionImport, required: true, example: { entries: [{ phone: '+966501234567', reason: 'asked not to be called' }], source: 'crm-export' } },
    answers: { 200: { description: 'How many were added and updated, and how many PENDING calls were ended as SUPPRESSED.', schema: r.SuppressionImported } },
  },
  {
    method: 'get', path: '/suppressions/:phone', id: 'getSuppression', tag: 'Do-not-call list', access: 'read', needs: 'suppressions', summary: 'Whether a number is on the do-not-call list.', pathParams: { phone },
    answers: { 200: { description: 'It is.', schema: r.Suppression } }, problems: [[404, 'suppression_not_found']],
  },
  {
    method: 'put', path: '/suppressions/:phone', id: 'addSuppression', tag: 'Do-not-call list', access: 'admin', needs: 'suppressions',
    summary: 'Put a number on the do-not-call list; its PENDING calls end as SUPPRESSED.', pathParams: { phone },
    body: { schema: s.SuppressionBody, required: false, example: { reason: 'asked not to be called', source: 'agent' } },
    answers: { 201: { description: 'Added.', schema: r.SuppressionAdded }, 200: { description: 'Already listed; reason and source updated.', schema: r.SuppressionAdded } },
  },
  {
    method: 'delete', path: '/suppressions/:phone', id: 'removeSuppression', tag: 'Do-not-call list', access: 'admin', needs: 'suppressions', summary: 'Take a number off the do-not-call list.', pathParams: { phone },
    answers: { 204: { description: 'Removed.' } }, problems: [[404, 'suppression_not_found']],
  },

  {
    method: 'get', path: '/dispatch/settings', id: 'getDispatchSettings', tag: 'Dispatch', access: 'read', needs: 'dispatch', summary: 'Whether dispatch is paused, and the concurrency limit in force.',
    answers: { 200: { description: 'The settings.', schema: r.DispatchSettings } },
  },
  {
    method: 'put', path: '/dispatch/settings', id: 'changeDispatchSettings', tag: 'Dispatch', access: 'admin', needs: 'dispatch',
    summary: 'Set the concurrency limit for every worker at once (null: back to MAX_CONCURRENT_CALLS).',
    body: { schema: s.DispatchSettingsBody, required: true, example: { maxConcurrentCalls: 10 } },
    answers: { 200: { description: 'The settings now.', schema: r.DispatchSettings } },
  },
  {
    method: 'post', path: '/dispatch/pause', id: 'pauseDispatch', tag: 'Dispatch', access: 'admin', needs: 'dispatch', summary: 'Stop starting new calls; calls in flight go on.',
    answers: { 200: { description: 'The settings now.', schema: r.DispatchSettings } },
  },
  {
    method: 'post', path: '/dispatch/resume', id: 'resumeDispatch', tag: 'Dispatch', access: 'admin', needs: 'dispatch', summary: 'Start new calls again.',
    answers: { 200: { description: 'The settings now.', schema: r.DispatchSettings } },
  },

  {
    method: 'get', path: '/event-endpoints', id: 'listEventEndpoints', tag: 'Events', access: 'read', needs: 'events', summary: 'Where status events are delivered.', query: s.NoQuery,
    answers: { 200: { description: 'Every endpoint.', schema: r.EndpointList } },
  },
  {
    method: 'post', path: '/event-endpoints', id: 'addEventEndpoint', tag: 'Events', access: 'admin', needs: 'events', summary: 'Add an endpoint; the answer shows its signing secret, once.',
    body: { schema: s.EndpointBody, required: true, example: { url: 'https://example.com/hooks/calls', eventTypes: ['call.completed', 'call.failed'] } },
    answers: { 201: { description: 'Added.', schema: r.EndpointWithSecret, headers: ['Location'] } }, problems: [[422, 'endpoint_not_allowed']],
  },
  {
    method: 'delete', path: '/event-endpoints/:id', id: 'removeEventEndpoint', tag: 'Events', access: 'admin', needs: 'events', summary: 'Remove an endpoint.', pathParams: { id: endpointId },
    answers: { 204: { description: 'Removed.' } }, problems: [[404, 'endpoint_not_found']],
  },
  {
    method: 'post', path: '/event-endpoints/:id/rotate-secret', id: 'rotateEventEndpointSecret', tag: 'Events', access: 'admin', needs: 'events', summary: 'Give an endpoint a new signing secret.', pathParams: { id: endpointId },
    answers: { 200: { description: 'The endpoint with its new secret, shown once.', schema: r.EndpointWithSecret } }, problems: [[404, 'endpoint_not_found']],
  },
  {
    method: 'get', path: '/events', id: 'listEvents', tag: 'Events', access: 'read', needs: 'events', summary: 'The event log, newest first, with each event’s deliveries.', query: s.EventsQuery,
    answers: { 200: { description: 'A page of events.', schema: r.EventPage } },
  },
  {
    method: 'get', path: '/events/:id', id: 'getEvent', tag: 'Events', access: 'read', needs: 'events', summary: 'One event and its deliveries.', pathParams: { id: eventId },
    answers: { 200: { description: 'The event.', schema: r.Event } }, problems: [[404, 'event_not_found']],
  },
  {
    method: 'post', path: '/events/:id/replay', id: 'replayEvent', tag: 'Events', access: 'admin', needs: 'events', summary: 'Deliver an event again, to every endpoint that takes it or to one.', pathParams: { id: eventId },
    body: { schema: s.ReplayBody, required: false, example: { endpointId: '0b9c1f7e-2a51-4c1e-9d0a-5f7b3c2e1a90' } },
    answers: { 202: { description: 'Queued.', schema: r.Replayed } }, problems: [[404, 'event_not_found'], [404, 'endpoint_not_found']],
  },

  {
    method: 'post', path: '/callbacks/call-status', id: 'callStatusCallback', tag: 'Provider callbacks', access: 'provider', needs: 'callbacks',
    summary: 'The provider’s final report on a dial.',
    description:
      'Call it at the webhookUrl sent with the dial, as it is: its callId, dial and token say which call and dial it is for and that we issued it. ' +
      'Authenticated by a Standard Webhooks signature (webhook-id, webhook-timestamp within 5 minutes, webhook-signature "v1,<base64 HMAC-SHA256 of id.timestamp.body>") ' +
      'when WEBHOOK_SECRET is set, or by WEBHOOK_API_KEY as "Authorization: Bearer" or "X-Api-Key". Applied once per webhook-id; extra body fields are ignored. ' +
      'With PROVIDER=vapi the body is a Vapi server message and it is authenticated by Vapi\'s HMAC or Bearer credential instead (docs/providers.md).',
    query: CallbackUrl,
    body: { schema: CallbackBody, required: true, example: { callId: 'prov-8c1d', status: 'COMPLETED', durationSec: 42, completedAt: '2030-01-01T09:03:12Z' } },
    answers: { 200: { description: 'Taken: what the callback did to the call (applied, corrected, or nothing: duplicate, already_final, stale).', schema: r.CallbackResult } },
    problems: [[401, 'callbacks_not_configured'], [401, 'invalid_signature'], [401, 'invalid_api_key'], [401, 'invalid_callback_url'], [404, 'call_not_found'], [409, 'callback_not_bound'], [409, 'provider_call_id_conflict']],
  },

  {
    method: 'get', path: '/openapi.json', id: 'openapi', tag: 'Operations', access: 'public', summary: 'This description of the API (OpenAPI 3.1).',
    answers: { 200: { description: 'The OpenAPI document.', mediaTypes: ['application/json'] } },
  },
  {
    method: 'get', path: '/docs', id: 'docs', tag: 'Operations', access: 'public', summary: 'Interactive documentation of this API (Swagger UI), served from this server.',
    answers: { 200: { description: 'An HTML page.', mediaTypes: ['text/html'] } },
  },
  {
    method: 'get', path: '/docs/assets/:file', id: 'docsAsset', tag: 'Operations', access: 'public', summary: 'A script or style sheet of the documentation page.',
    pathParams: { file: { schema: DocsAsset, description: 'One of the files the page loads.' } },
    answers: { 200: { description: 'The file.', mediaTypes: ['text/javascript', 'text/css'] } }, problems: [[404, 'route_not_found']],
  },
  {
    method: 'get', path: '/', id: 'statusPage', tag: 'Status page', access: 'session', needs: 'status',
    summary: 'The live status page: slots, calls by status, the oldest waiting call, calls in flight, recent failures, callbacks.',
    description: 'For a browser. When API_TOKENS is set, a browser without a session gets a sign-in form (401, text/html); the session cookie from POST /login, or a Bearer token, opens it.',
    answers: { 200: { description: 'An HTML page, updated live from /status/events.', mediaTypes: ['text/html'] } },
  },
  {
    method: 'post', path: '/login', id: 'login', tag: 'Status page', access: 'session', needs: 'status',
    summary: 'Signs a browser in to the status page with an API token (form field "token").',
    description: 'Sets an HttpOnly, SameSite=Strict session cookie (a random key the server keeps the hash of, never the token) that opens /, /status.json and /status/events for 7 days, until signed out, or until its token is removed. Refused from another site; 10 failed sign-ins a minute per client address, then 429.',
    answers: { 303: { description: 'Signed in (or no tokens are set): back to the page.' } },
    problems: [[403, 'cross_origin'], [429, 'too_many_attempts']],
  },
  {
    method: 'post', path: '/logout', id: 'logout', tag: 'Status page', access: 'public', needs: 'status', summary: 'Signs the browser out (clears the session cookie).',
    answers: { 303: { description: 'Signed out: back to the page.' } },
  },
  {
    method: 'get', path: '/status.json', id: 'status', tag: 'Status page', access: 'session', needs: 'status',
    summary: 'What the status page shows, as JSON, for scripts.', description: 'A Bearer token or the status page session cookie.',
    answers: { 200: { description: 'The status now.', schema: r.Status } },
  },
  {
    method: 'get', path: '/status/events', id: 'statusEvents', tag: 'Status page', access: 'session', needs: 'status',
    summary: 'Server-sent events: the status board, rendered as HTML, each time it changes (read every second).',
    description: 'A Bearer token or the status page session cookie. Event "status", data: an HTML fragment. At most 50 open at once per server process; the board is read once per second for all of them.',
    answers: { 200: { description: 'An event stream.', mediaTypes: ['text/event-stream'] } },
    problems: [[503, 'too_many_streams']],
  },
  {
    method: 'get', path: '/console/calls', id: 'consoleCalls', tag: 'Status page', access: 'session', needs: 'status',
    summary: 'The console: calls filtered by status, phone, batch and time, newest first, 50 a page (HTML).',
    description: 'A Bearer token or the status page session cookie. Each call links to its timeline. Readable without script.',
    query: s.ConsoleQuery,
    answers: { 200: { description: 'The page.', mediaTypes: ['text/html'] } },
  },
  {
    method: 'get', path: '/console/calls/:id', id: 'consoleCall', tag: 'Status page', access: 'session', needs: 'status',
    summary: 'The console: one call\'s timeline, from its creation through each dial, the provider\'s reports and its events with their deliveries (HTML).',
    description: 'A Bearer token or the status page session cookie. Readable without script.',
    pathParams: { id: callId },
    answers: { 200: { description: 'The page.', mediaTypes: ['text/html'] } },
    problems: [callNotFound],
  },
  ...consoleAction('cancel', { doing: 'cancelling', does: 'Cancels', which: 'a PENDING call', refusal: pending }),
  ...consoleAction('retry', { doing: 'retrying', does: 'Dials again', which: 'a FAILED or EXPIRED call', refusal: [409, 'call_not_retryable'] }),
  {
    method: 'get', path: '/console/batches/:id', id: 'consoleBatch', tag: 'Status page', access: 'session', needs: 'status',
    summary: 'The console: a batch\'s progress by status, and its calls (HTML).',
    description: 'A Bearer token or the status page session cookie. Readable without script.',
    pathParams: { id: batchId },
    answers: { 200: { description: 'The page.', mediaTypes: ['text/html'] } },
    problems: [[404, 'batch_not_found']],
  },
]

/** The console's two routes for one action on a call: the question (GET) and its form's answer (POST). */
function consoleAction(
  action: 'cancel' | 'retry',
  words: { doing: string; does: string; which: string; refusal: [number, ProblemCode] },
): Operation[] {
  const name = action[0]!.toUpperCase() + action.slice(1)
  const common = { path: `/console/calls/:id/${action}`, tag: 'Status page', access: 'console', needs: 'status', pathParams: { id: callId } } as const
  return [
    {
      ...common,
      method: 'get',
      id: `consoleConfirm${name}`,
      summary: `The console: asks before ${words.doing} ${words.which}, with a form that does it (HTML).`,
      description: 'An admin token, or the status page session cookie opened with one; a read-only one is a 403. Readable without script.',
      answers: { 200: { description: 'The question, and a form posting the answer.', mediaTypes: ['text/html'] } },
      problems: [callNotFound],
    },
    {
      ...common,
      method: 'post',
      id: `console${name}`,
      summary: `${words.does} ${words.which} from the console, as POST /calls/{id}/${action} does, then back to its timeline.`,
      description: `The form of GET /console/calls/{id}/${action}. A refusal (the call is no longer in a status that allows it) is shown on the question's page, with its status code.`,
      answers: { 303: { description: "Done: back to the call's timeline." } },
      problems: [callNotFound, words.refusal],
    },
  ]
}
