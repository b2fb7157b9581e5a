import type { CallResult } from '../domain/call.ts'
import type { FinalProviderStatus, ProviderName } from './client.ts'

// What a provider's webhook delivery says, read the provider's way. The edge
// (src/http/routes/callbacks.ts) checks the URL's token first, the same for every provider:
// we issued that URL for one call and one dial. Then the provider's webhook decides who sent
// the delivery and what it reports; everything after that (whether it was had before, what it
// changes) is the provider's own no more.

/** A header of the delivery, by lower-case name. */
export type HeaderOf = (name: string) => string | undefined

export type WebhookSender =
  /** Proven to come from the provider; `webhookId` names the delivery when the provider gives it an id. */
  | { ok: true; webhookId: string | null }
  | { ok: false; code: 'invalid_signature' | 'invalid_api_key'; detail: string }

/** A final report: the provider's call ended, mapped to our four words. */
export interface FinalReport {
  providerCallId: string
  providerStatus: FinalProviderStatus
  durationSec: number | null
  completedAt: Date | null
  /** The provider's own word for how it ended (Vapi's endedReason, Retell's disconnection_reason); null for the generic contract. */
  endReason: string | null
  /** The provider never placed the call (its concurrency limit): nothing rang. */
  notPlaced?: boolean
  /** What else it tells of the call: transcript, recording, summary, analysis (bounded by resultOf). */
  result?: Omit<CallResult, 'endReason'>
}

const TRANSCRIPT_MAX = 256 * 1024
const SUMMARY_MAX = 16 * 1024
const ANALYSIS_MAX = 64 * 1024

/**
 * A result as a provider sent it, made safe to keep and show: strings cut to their bounds, a
 * recording link only if it is http(s) (the console links it), an analysis only if it is a JSON
 * object of at most 64 KiB. Undefined when nothing is left.
 */
export function resultOf(raw: { transcript?: unknown; recordingUrl?: unknown; summary?: unknown; analysis?: unknown }): Omit<CallResult, 'endReason'> | undefined {
  const text = (v: unknown, max: number) => (typeof v === 'string' && v !== '' ? v.slice(0, max) : null)
  const url = typeof raw.recordingUrl === 'string' && raw.recordingUrl.length <= 2048 && /^https?:\/\/[^\s]+$/i.test(raw.recordingUrl) ? raw.recordingUrl : null
  const analysis = typeof raw.analysis === 'object' && raw.analysis !== null && !Array.isArray(raw.analysis) && JSON.stringify(raw.analysis).length <= ANALYSIS_MAX ? raw.analysis : null
  const result = { transcript: text(raw.transcript, TRANSCRIPT_MAX), recordingUrl: url, summary: text(raw.summary, SUMMARY_MAX), analysis }
  return Object.values(result).some((v) => v !== null) ? result : undefined
}

export type WebhookReading =
  | { kind: 'final'; report: FinalReport }
  /** Well formed, about the call, but not its end (ringing, started, a transcript): acknowledged, changes nothing. */
  | { kind: 'progress'; event: string }
  /** Not what the provider sends: `summary` says why, for the sender. */
  | { kind: 'invalid'; summary: string }

export interface ProviderWebhook {
  readonly provider: ProviderName
  /** Whether anything can be checked at all (a secret or key is configured); if not, every delivery is refused. */
  readonly configured: boolean
  /** Says how to configure it, when it is not. */
  readonly notConfigured: string
  authenticate(header: HeaderOf, body: string, nowMs: number): WebhookSender
  /** What a JSON object delivered by an authenticated sender reports. */
  read(json: Record<string, unknown>): WebhookReading
}

/** How far a signed timestamp may be from our clock, either way. */
export const WEBHOOK_TOLERANCE_MS = 5 * 60_000
