import { createHmac, randomUUID } from 'node:crypto'
import { Webhook } from 'standardwebhooks'
import type { CallRow } from '../../src/domain/call.ts'
import { claimCalls, type DispatchPolicy } from '../../src/services/dispatch/claim.ts'
import { recordDialResult } from '../../src/services/dispatch/record.ts'
import { postCall } from './factory.ts'
import { readResponse, WEBHOOK_SECRET, type Harness } from './harness.ts'

// Helpers for the provider-callback tests. Signatures come from the independent
// `standardwebhooks` package, never from src/domain/signature.ts, so the tests prove that
// what a real Standard Webhooks sender produces is what the endpoint accepts.

export const POLICY: DispatchPolicy = {
  maxConcurrentCalls: 30,
  maxAttempts: 3,
  retryBaseSeconds: 1,
  retryMaxSeconds: 60,
  callTimeoutSeconds: 600,
  leaseMs: 10_000,
  reconcileAfterSeconds: 120,
}

/** Standard Webhooks headers for `body`, signed by the reference library. */
export function signHeaders(
  body: string,
  options: { secret?: string; id?: string; at?: Date } = {},
): Record<string, string> {
  const id = options.id ?? `msg_${randomUUID()}`
  const at = options.at ?? new Date()
  return {
    'content-type': 'application/json',
    'webhook-id': id,
    'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
    'webhook-signature': new Webhook(options.secret ?? WEBHOOK_SECRET).sign(id, at, body),
  }
}

export interface Delivery {
  status: number
  contentType: string | null
  body: any
}

/**
 * The token of a webhook URL, made as the README defines it (here with node:crypto, not with
 * src/domain/callback-token.ts, so a drift between the two fails the tests).
 */
export function urlToken(callId: string, dial: number, secret = WEBHOOK_SECRET): string {
  const raw = secret.startsWith('whsec_') ? Buffer.from(secret.slice(6), 'base64') : Buffer.from(secret)
  const key = createHmac('sha256', raw).update('call-orchestrator callback URL').digest()
  return createHmac('sha256', key).update(`${callId}:${dial}`).digest('base64url')
}

/** The webhook URL we hand the provider for a call's dial. */
export const callbackPath = (callId: string, dial = 1, secret = WEBHOOK_SECRET) =>
  `/callbacks/call-status?callId=${callId}&dial=${dial}&token=${urlToken(callId, dial, secret)}`

/** POSTs exactly `body` (the string that was signed) to `path`, by default a call's own webhook URL. */
export async function deliver(h: Harness, body: string, headers: Record<string, string>, path: string): Promise<Delivery> {
  const res = await readResponse(await h.app.request(path, { method: 'POST', headers, body }))
  return { status: res.status, contentType: res.headers.get('content-type'), body: res.body }
}

/** Signs and delivers a callback to `callId`'s webhook URL for `dial` (1 unless given); `id` is the webhook-id. */
export async function sendSigned(
  h: Harness,
  callId: string,
  payload: unknown,
  options: { dial?: number; id?: string; secret?: string; at?: Date } = {},
): Promise<Delivery> {
  const body = typeof payload === 'string' ? payload : JSON.stringify(payload)
  return deliver(h, body, signHeaders(body, options), callbackPath(callId, options.dial ?? 1))
}

/**
 * A call claimed by a worker (IN_PROGRESS) and, unless `providerCallId` is null, accepted by
 * the provider (its 202 recorded). Returns the call as the claim returned it, for a later
 * recordDialResult.
 */
export async function inFlightCall(
  h: Harness,
  workerId: number,
  phone: string,
  providerCallId: string | null,
): Promise<CallRow> {
  const { id } = await postCall(h, { to: phone })
  const { claimed } = await claimCalls(h.sql, h.queue, POLICY, workerId, 30)
  const call = claimed.find((c) => c.id === id)
  if (!call) throw new Error(`call ${id} was not claimed`)
  if (providerCallId !== null) {
    const { outcome } = await recordDialResult(h.sql, h.queue, POLICY, call, { kind: 'accepted', providerCallId })
    if (outcome !== 'dialed') throw new Error(`dial result for ${id} was ${outcome}`)
  }
  return call
}

