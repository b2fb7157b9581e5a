import * as v from 'valibot'
import { CALL_STATUSES } from '../../domain/call.ts'
import { WEEKDAYS } from '../../domain/window.ts'
import { EVENT_TYPES } from '../../domain/events.ts'
import { PROBLEM_CODES } from '../problem.ts'

// What the API answers, as valibot schemas. Nothing parses responses with them at run time:
// they feed the OpenAPI description, and test/openapi-responses.test.ts checks real answers
// against that description, so a field added to a resource without being described here fails
// a test. Objects are strict for that reason: an undocumented field is an error.

const instant = v.pipe(v.string(), v.isoTimestamp(), v.description('An instant in UTC, as ISO 8601 with milliseconds.'))
const uuid = v.pipe(v.string(), v.uuid())
const count = v.pipe(v.number(), v.integer(), v.minValue(0))
/** A count for each call status. */
const byStatus = v.strictObject(Object.fromEntries(CALL_STATUSES.map((status) => [status, count])) as Record<(typeof CALL_STATUSES)[number], typeof count>)

const nextCursor = v.pipe(v.nullable(v.string()), v.description('Pass as ?cursor= for the next page; null on the last page.'))

export const Health = v.strictObject({ status: v.literal('ok') })
export const Ready = v.strictObject({ status: v.literal('ready') })

export const Dial = v.pipe(
  v.strictObject({
    dial: v.pipe(v.number(), v.integer(), v.minValue(1)),
    startedAt: instant,
    requests: count,
    dialedAt: v.nullable(instant),
    providerCallId: v.nullable(v.string()),
    outcome: v.nullable(v.string()),
    error: v.nullable(v.string()),
    endedAt: v.nullable(instant),
    endReason: v.pipe(v.nullable(v.string()), v.description("The provider's own word for how the dial ended (Vapi endedReason, Retell disconnection_reason); null with the generic contract.")),
  }),
  v.description('One provider call made for the call; a retry after BUSY or NO_ANSWER is a new dial.'),
)

export const CallResult = v.pipe(
  v.strictObject({
    endReason: v.nullable(v.string()),
    transcript: v.nullable(v.string()),
    recordingUrl: v.nullable(v.string()),
    summary: v.nullable(v.string()),
    analysis: v.pipe(v.unknown(), v.description("The provider's analysis as it sent it (Vapi analysis, Retell call_analysis), or null.")),
  }),
  v.description('What the last dial ended with, as the provider (Vapi, Retell) told it: its end reason, the transcript, a link to the recording, a summary, its analysis.'),
)

export const CallingWindow = v.strictObject({
  days: v.array(v.picklist(WEEKDAYS)),
  start: v.string(),
  end: v.string(),
  timezone: v.optional(v.string()),
})

export const Call = v.strictObject({
  id: uuid,
  payload: v.strictObject({ to: v.string(), scriptId: v.string(), metadata: v.record(v.string(), v.unknown()) }),
  status: v.picklist(CALL_STATUSES),
  attempts: count,
  lastError: v.nullable(v.string()),
  nextAttemptAt: v.nullable(instant),
  waitingFor: v.pipe(
    v.nullable(v.picklist(['notBefore', 'callingWindow', 'cap', 'retry', 'paused', 'slot', 'phone'])),
    v.description('Why a PENDING call is not dialed yet: its own schedule (notBefore, callingWindow, cap, retry), else dispatch paused, every slot taken, or its number with a call in flight (paused, slot, phone: as of this read).'),
  ),
  notBefore: v.nullable(instant),
  expiresAt: v.nullable(instant),
  callingWindow: v.nullable(CallingWindow),
  timeZones: v.array(v.string()),
  batchId: v.nullable(uuid),
  providerCallId: v.nullable(v.string()),
  providerStatus: v.nullable(v.string()),
  durationSec: v.nullable(count),
  createdAt: instant,
  updatedAt: instant,
  startedAt: v.nullable(instant),
  endedAt: v.nullable(instant),
  dials: v.array(Dial),
  result: v.nullable(CallResult),
})

export const CallPage = v.strictObject({ data: v.array(Call), nextCursor })

const ItemProblem = v.object({
  status: v.pipe(v.number(), v.integer()),
  code: v.string(),
  detail: v.string(),
  errors: v.optional(v.array(v.strictObject({ path: v.string(), message: v.string() }))),
})

export const BatchCreated = v.strictObject({
  batchId: uuid,
  created: count,
  replayed: count,
  rejected: count,
  items: v.array(
    v.union([
      v.strictObject({ index: count, result: v.picklist(['created', 'replayed']), call: Call }),
      v.strictObject({ index: count, result: v.literal('rejected'), problem: ItemProblem }),
    ]),
  ),
})

const batchEntries = {
  id: uuid,
  items: count,
  created: v.pipe(count, v.description('How many of its items became calls.')),
  byStatus: v.pipe(v.partial(byStatus), v.description('How many of its calls are in each status; a status none is in may be left out.')),
  createdAt: instant,
  completedAt: v.nullable(instant),
}

export const Batch = v.strictObject({ ...batchEntries, calls: v.array(Call) })
export const BatchCancelled = v.strictObject({ ...batchEntries, cancelled: v.pipe(count, v.description('How many PENDING calls this request cancelled.')) })

const suppressionEntries = { phone: v.string(), reason: v.nullable(v.string()), source: v.string(), createdAt: instant }
export const Suppression = v.strictObject(suppressionEntries)
export const SuppressionAdded = v.strictObject({
  ...suppressionEntries,
  callsSuppressed: v.pipe(count, v.description('PENDING calls to this number that were ended as SUPPRESSED.')),
})
export const SuppressionPage = v.strictObject({ data: v.array(Suppression), nextCursor })
export const SuppressionImported = v.strictObject({
  added: v.pipe(count, v.description('Numbers new to the list.')),
  updated: v.pipe(count, v.description('Numbers already listed (their reason updated when one was given).')),
  rejected: v.pipe(count, v.description('Entries refused: each is answered in items with its problem.')),
  callsSuppressed: v.pipe(count, v.description('Waiting calls to the numbers added, ended as SUPPRESSED.')),
  items: v.array(
    v.union([
      v.strictObject({ index: count, result: v.picklist(['added', 'updated']), phone: v.string() }),
      v.strictObject({ index: count, result: v.literal('rejected'), problem: ItemProblem }),
    ]),
  ),
})

export const DispatchSettings = v.strictObject({
  paused: v.boolean(),
  maxConcurrentCalls: v.pipe(v.number(), v.integer(), v.description('The limit in force: the one set here, else MAX_CONCURRENT_CALLS.')),
  maxConcurrentCallsSet: v.pipe(v.boolean(), v.description('Whether maxConcurrentCalls was set through the API (null falls back to the environment).')),
  updatedAt: instant,
})

export const Metrics = v.strictObject({
  calls: byStatus,
  inFlight: count,
  freeSlots: count,
  maxConcurrentCalls: count,
  paused: v.boolean(),
  callbacksRefused: v.pipe(v.record(v.string(), count), v.description('Callbacks refused by this process before they were authenticated, by reason.')),
})

const endpointEntries = {
  id: uuid,
  url: v.string(),
  eventTypes: v.pipe(v.nullable(v.array(v.picklist(EVENT_TYPES))), v.description('null: every type.')),
  source: v.pipe(v.picklist(['env', 'api']), v.description('env: configured by EVENT_ENDPOINTS; api: added here.')),
  createdAt: instant,
}
export const Endpoint = v.strictObject(endpointEntries)
export const EndpointWithSecret = v.strictObject({
  ...endpointEntries,
  secret: v.pipe(v.string(), v.regex(/^whsec_/), v.description('The Standard Webhooks secret deliveries are signed with; shown only here.')),
})
export const EndpointList = v.strictObject({ data: v.array(Endpoint) })

export const Delivery = v.strictObject({
  endpointId: uuid,
  status: v.picklist(['pending', 'delivered', 'failed']),
  attempts: count,
  lastAttemptAt: v.nullable(instant),
  lastStatusCode: v.nullable(v.pipe(v.number(), v.integer())),
  lastError: v.nullable(v.string()),
  nextAttemptAt: v.nullable(instant),
  deliveredAt: v.nullable(instant),
})

export const Event = v.strictObject({
  id: v.pipe(v.string(), v.regex(/^msg_/)),
  type: v.picklist(EVENT_TYPES),
  callId: v.nullable(uuid),
  batchId: v.nullable(uuid),
  createdAt: instant,
  payload: v.pipe(
    v.strictObject({ type: v.picklist(EVENT_TYPES), timestamp: instant, data: v.record(v.string(), v.unknown()) }),
    v.description('The body POSTed to event endpoints, signed per Standard Webhooks.'),
  ),
  deliveries: v.array(Delivery),
})
export const EventPage = v.strictObject({ data: v.array(Event), nextCursor })
export const Replayed = v.strictObject({ deliveries: v.pipe(count, v.description('Deliveries queued anew.')) })

export const CallbackResult = v.strictObject({
  verdict: v.pipe(
    v.picklist(['applied', 'corrected', 'duplicate', 'already_final', 'stale', 'progress']),
    v.description('progress: a provider\'s message that reports no end (PROVIDER=vapi: a status-update before "ended", a transcript); nothing changed.'),
  ),
  callId: uuid,
  status: v.optional(v.picklist(CALL_STATUSES)),
})

/** RFC 9457 problem details, with the extension members some codes carry. */
export const Problem = v.object({
  type: v.pipe(v.string(), v.description('urn:call-orchestrator:problem:<code>')),
  title: v.pipe(v.string(), v.description('The HTTP reason phrase of the status.')),
  status: v.pipe(v.number(), v.integer()),
  detail: v.pipe(v.string(), v.description('For people; its words may change. Branch on code.')),
  code: v.pipe(v.picklist(PROBLEM_CODES), v.description('Stable; branch on this, not on detail.')),
  instance: v.pipe(v.string(), v.description('The path of the request.')),
  errors: v.optional(v.pipe(v.array(v.strictObject({ path: v.string(), message: v.string() })), v.description('With validation_failed: every problem found, by path.'))),
  callId: v.optional(v.pipe(uuid, v.description('The call the problem is about (call_not_found, call_not_pending, call_not_retryable, expiry_passed, callback_not_bound).'))),
  callStatus: v.optional(v.pipe(v.picklist(CALL_STATUSES), v.description('The call’s status, which refused the request (call_not_pending, call_not_retryable).'))),
  batchId: v.optional(v.pipe(uuid, v.description('With batch_not_found.'))),
  phone: v.optional(v.pipe(v.string(), v.description('E.164 (phone_suppressed, suppression_not_found).'))),
  endpointId: v.optional(v.pipe(uuid, v.description('With endpoint_not_found.'))),
  eventId: v.optional(v.pipe(v.string(), v.description('With event_not_found.'))),
  url: v.optional(v.pipe(v.string(), v.description('With endpoint_not_allowed: the url refused.'))),
  notBefore: v.optional(v.pipe(instant, v.description('With schedule_impossible: the notBefore refused.'))),
  expiresAt: v.optional(v.pipe(instant, v.description('With schedule_impossible: the deadline it is not before.'))),
})


const phoneNumber = v.pipe(v.string(), v.description('E.164.'))
export const Status = v.strictObject({
  at: instant,
  counts: byStatus,
  paused: v.boolean(),
  limit: count,
  oldestWaiting: v.nullable(
    v.strictObject({ id: uuid, phone: phoneNumber, createdAt: instant, nextAttemptAt: v.nullable(instant), waitingFor: v.nullable(v.string()) }),
  ),
  inFlight: v.pipe(
    v.array(v.strictObject({ id: uuid, phone: phoneNumber, attempts: count, startedAt: instant, dialedAt: v.nullable(instant) })),
    v.description('Calls in flight, longest first (at most 50).'),
  ),
  recentFailures: v.pipe(
    v.array(v.strictObject({ id: uuid, phone: phoneNumber, reason: v.string(), providerStatus: v.nullable(v.string()), endedAt: instant })),
    v.description('Calls that failed in the last hour, newest first (at most 10).'),
  ),
  callbacks: v.pipe(v.record(v.string(), count), v.description('Callbacks received in the last hour, by verdict.')),
  heldUntilTimeout: v.pipe(
    v.nullable(v.strictObject({ calls: count, until: instant })),
    v.description('Dialed calls no status look-up will end (the provider cannot be asked): they hold slots until CALL_TIMEOUT_SECONDS, the last until `until`.'),
  ),
  lastHour: v.pipe(
    v.array(v.strictObject({ minute: instant, created: count, dialed: count, completed: count, failed: count, slots: count })),
    v.description('The last 60 minutes, oldest first, the current minute last: calls created, dials started, calls completed and failed, and slots in use at the minute\'s end (now, for the current one).'),
  ),
})
