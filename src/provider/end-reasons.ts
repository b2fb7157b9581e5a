import type { FinalProviderStatus } from './client.ts'

// How a provider's own word for a call's end (Vapi's endedReason, Retell's
// disconnection_reason) maps to our four: COMPLETED (a connected call that ended normally),
// BUSY, NO_ANSWER, FAILED. Voicemail is NO_ANSWER unless VOICEMAIL_OUTCOME=COMPLETED says a
// message left counts as reached. A concurrency refusal means the provider never placed the
// call. Lists from VapiAI/docs (fern/apis/api/openapi.json, fern/calls/call-ended-reason.mdx) and
// the Retell TypeScript SDK (its call resource); docs/providers.md has the table.

export type VoicemailOutcome = 'NO_ANSWER' | 'COMPLETED'

export interface MappedEnd {
  status: FinalProviderStatus
  /** The provider refused to place the call (its concurrency limit): nothing rang. */
  notPlaced: boolean
  /** False for a word not in the provider's published list: mapped to FAILED, and worth a look. */
  known: boolean
}

interface Families {
  busy: string[]
  noAnswer: string[]
  voicemail: string[]
  completed: string[]
  notPlaced: string[]
  /** Published words and prefixes of words that mean the call failed. */
  failed: string[]
  failedPrefixes: string[]
}

const VAPI: Families = {
  busy: ['customer-busy'],
  noAnswer: ['customer-did-not-answer'],
  voicemail: ['voicemail'],
  completed: [
    'customer-ended-call',
    'customer-ended-call-after-warm-transfer-attempt',
    'customer-ended-call-before-warm-transfer',
    'customer-ended-call-during-transfer',
    'assistant-ended-call',
    'assistant-ended-call-after-message-spoken',
    'assistant-ended-call-with-hangup-task',
    'assistant-said-end-call-phrase',
    'assistant-forwarded-call',
    'exceeded-max-duration',
    'silence-timed-out',
    'call.in-progress.twilio-completed-call',
    'call.in-progress.sip-completed-call',
    'vonage-completed',
    'call.ending.hook-executed-say',
    'call.ending.hook-executed-transfer',
  ],
  notPlaced: ['call.start.error-subscription-concurrency-limit-reached'],
  failed: ['manually-canceled', 'call-deleted', 'scheduled-call-deleted', 'worker-shutdown', 'customer-did-not-give-microphone-permission'],
  failedPrefixes: ['call.start.', 'call-start-error-', 'call.in-progress.', 'call.ringing.', 'call.forwarding.', 'pipeline-error-', 'assistant-', 'phone-call-provider-', 'twilio-', 'vonage-'],
}

const RETELL: Families = {
  busy: ['dial_busy'],
  // An IVR answered: no person did.
  noAnswer: ['dial_no_answer', 'ivr_reached'],
  voicemail: ['voicemail_reached'],
  completed: ['user_hangup', 'agent_hangup', 'call_transfer', 'inactivity', 'max_duration_reached', 'transfer_bridged', 'transfer_cancelled', 'call_take_over'],
  notPlaced: ['concurrency_limit_reached', 'no_concurrency_fallback'],
  failed: [
    'manual_stopped',
    'no_valid_payment',
    'dial_failed',
    'invalid_destination',
    'telephony_provider_permission_denied',
    'telephony_provider_unavailable',
    'sip_routing_error',
    'marked_as_spam',
    'user_declined',
    'scam_detected',
    'registered_call_timeout',
  ],
  failedPrefixes: ['error_'],
}

function mapWith(families: Families, reason: string, voicemail: VoicemailOutcome): MappedEnd {
  const is = (list: string[]) => list.includes(reason)
  if (is(families.completed)) return { status: 'COMPLETED', notPlaced: false, known: true }
  if (is(families.busy)) return { status: 'BUSY', notPlaced: false, known: true }
  if (is(families.noAnswer)) return { status: 'NO_ANSWER', notPlaced: false, known: true }
  if (is(families.voicemail)) return { status: voicemail, notPlaced: false, known: true }
  if (is(families.notPlaced)) return { status: 'FAILED', notPlaced: true, known: true }
  const known = is(families.failed) || families.failedPrefixes.some((p) => reason.startsWith(p))
  return { status: 'FAILED', notPlaced: false, known }
}

export const vapiEnd = (reason: string, voicemail: VoicemailOutcome): MappedEnd => mapWith(VAPI, reason, voicemail)
export const retellEnd = (reason: string, voicemail: VoicemailOutcome): MappedEnd => mapWith(RETELL, reason, voicemail)
