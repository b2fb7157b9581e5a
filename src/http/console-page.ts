import { CALL_STATUSES, CANCELLABLE, RETRYABLE, type CallRow, type CallStatus } from '../domain/call.ts'
import type { BatchRow } from '../store/batches.ts'
import type { ConsoleFilter, Timeline } from '../store/console.ts'
import { escapeHtml as e, htmlDocument } from './status-page.ts'

// The console's pages (/console/calls, /console/calls/{id}): plain HTML, read without script,
// linked to one another. The status page (/) is the overview; these follow one call.

const iso = (d: Date | string | null) => (d ? new Date(d).toISOString().replace('T', ' ').slice(0, 23) : '')

const nav = `<nav class="console"><a href="../">Overview</a> · <a href="calls">Calls</a></nav>`
const navDeep = `<nav class="console"><a href="../../">Overview</a> · <a href="../calls">Calls</a></nav>`

/** /console/calls: a filter form and one page of calls, newest first. */
export function renderCallList(rows: CallRow[], filter: ConsoleFilter, next: string | null, nonce: string): string {
  const query = (extra: Record<string, string>) =>
    new URLSearchParams(
      Object.entries({
        status: filter.status ?? '',
        phone: filter.phone ?? '',
        batch: filter.batchId ?? '',
        from: filter.from?.toISOString() ?? '',
        to: filter.to?.toISOString() ?? '',
        ...extra,
      }).filter(([, v]) => v !== ''),
    ).toString()
  const options = ['', ...CALL_STATUSES].map((s) => `<option value="${s}"${s === (filter.status ?? '') ? ' selected' : ''}>${s || 'any status'}</option>`).join('')
  const table = rows.length
    ? `<table data-calls><thead><tr><th>Call</th><th>Status</th><th>Phone</th><th>Script</th><th>Dials</th><th>Created</th><th>Last error</th></tr></thead><tbody>${rows
        .map(
          (c) =>
            `<tr data-call="${e(c.id)}"><td><a href="calls/${e(c.id)}"><code>${e(c.id.slice(0, 8))}</code></a></td><td>${e(c.status)}</td><td>${e(c.phone)}</td><td>${e(c.script_id)}</td><td>${c.dial}</td><td>${e(iso(c.created_at))}</td><td>${e(c.last_error ?? '')}</td></tr>`,
        )
        .join('')}</tbody></table>`
    : `<p class="muted" data-no-calls>No call matches.</p>`
  return htmlDocument(
    'Call orchestrator: calls',
    nonce,
    `<header><h1>Calls</h1>${nav}</header>
<form class="filter" method="get" action="calls">
  <label>Status <select name="status">${options}</select></label>
  <label>Phone <input name="phone" value="${e(filter.phone ?? '')}" placeholder="+15550100000"></label>
  <label>Batch <input name="batch" value="${e(filter.batchId ?? '')}" placeholder="batch id"></label>
  <label>From <input name="from" value="${e(filter.from?.toISOString() ?? '')}" placeholder="2026-12-01T00:00:00Z"></label>
  <label>To <input name="to" value="${e(filter.to?.toISOString() ?? '')}" placeholder="2026-12-02T00:00:00Z"></label>
  <button>Filter</button>
</form>
<main>${table}${next ? `<p><a data-next href="calls?${e(query({ cursor: next }))}">Older calls →</a></p>` : ''}</main>`,
  )
}

/** /console/batches/{id}: how far the batch has come, by status, and its calls. */
export function renderBatch(batch: BatchRow, calls: CallRow[], nonce: string): string {
  const by = batch.by_status ?? {}
  const ended = CALL_STATUSES.filter((s) => s !== 'PENDING' && s !== 'IN_PROGRESS').reduce((n, s) => n + (by[s] ?? 0), 0)
  const rows = CALL_STATUSES.map(
    (s) => `<tr data-batch-status="${s}"><td>${s}</td><td>${by[s] ?? 0}</td><td><meter min="0" max="${Math.max(1, batch.calls)}" value="${by[s] ?? 0}"></meter></td></tr>`,
  ).join('')
  const list = calls
    .map((c) => `<tr data-call="${e(c.id)}"><td>${c.batch_index ?? ''}</td><td><a href="../calls/${e(c.id)}"><code>${e(c.id.slice(0, 8))}</code></a></td><td>${e(c.status)}</td><td>${e(c.phone)}</td></tr>`)
    .join('')
  return htmlDocument(
    `Call orchestrator: batch ${batch.id}`,
    nonce,
    `<header><h1>Batch <code>${e(batch.id.slice(0, 8))}</code></h1>${navDeep}</header>
<main>
<p class="big" data-progress>${ended} <span class="of">of ${batch.calls} calls ended</span></p>
<dl class="facts"><dt>Id</dt><dd><code>${e(batch.id)}</code></dd><dt>Items</dt><dd>${batch.items}, ${batch.calls} became calls</dd><dt>Created</dt><dd>${e(iso(batch.created_at))}</dd><dt>Completed</dt><dd>${batch.completed_at ? e(iso(batch.completed_at)) : 'not yet'}</dd></dl>
<table data-by-status><thead><tr><th>Status</th><th>Calls</th><th></th></tr></thead><tbody>${rows}</tbody></table>
<table data-calls><thead><tr><th>Item</th><th>Call</th><th>Status</th><th>Phone</th></tr></thead><tbody>${list}</tbody></table>
</main>`,
  )
}

/** What an admin may do to a call from the console, and which statuses allow it (as POST /calls/{id}/cancel and /retry). */
export const CONSOLE_ACTIONS = {
  cancel: { allowed: CANCELLABLE, label: 'Cancel', question: 'Cancel this call? It will not be dialed again.', done: 'Yes, cancel it' },
  retry: { allowed: RETRYABLE, label: 'Retry', question: 'Dial this call again, under a new dial and a fresh deadline? A call whose last dial had an unknown outcome may have been placed: retrying it may ring the person twice.', done: 'Yes, dial it again' },
} as const satisfies Record<string, { allowed: readonly CallStatus[]; label: string; question: string; done: string }>
export type ConsoleAction = keyof typeof CONSOLE_ACTIONS

/**
 * /console/calls/{id}/{action}: the question before the action, as a form that posts it. The
 * confirmation is a page of its own, so that it needs no script; a refusal comes back here too.
 */
export function renderConfirm(c: CallRow, action: ConsoleAction, nonce: string, refusal?: string): string {
  const a = CONSOLE_ACTIONS[action]
  return htmlDocument(
    `Call orchestrator: ${action} call ${c.id}`,
    nonce,
    `<header><h1>${a.label} call <code>${e(c.id.slice(0, 8))}</code> <span data-status>${e(c.status)}</span></h1>${navAction}</header>
<main>
${refusal ? `<p class="bad" data-refusal>${e(refusal)}</p>` : ''}
<dl class="facts"><dt>Id</dt><dd><code>${e(c.id)}</code></dd><dt>Phone</dt><dd>${e(c.phone)}</dd><dt>Script</dt><dd><code>${e(c.script_id)}</code></dd></dl>
<form method="post" action="${action}" data-confirm="${action}"><p>${e(a.question)}</p><button>${e(a.done)}</button> <a href="../${e(c.id)}">No, back to the call</a></form>
</main>`,
  )
}

const navAction = `<nav class="console"><a href="../../../">Overview</a> · <a href="../../calls">Calls</a></nav>`

/**
 * What the last dial ended with, as Vapi or Retell told it: its end reason, summary, the
 * recording (a player, and a link), the transcript and the analysis. Nothing for the generic
 * contract, which tells none of it. The provider's text is escaped like everything else; the
 * recording link is http(s) only (src/provider/webhook.ts, resultOf, and a CHECK on the column).
 */
function renderResult(d: Timeline['dials'][number] | undefined): string {
  if (!d || (d.end_reason === null && d.transcript === null && d.recording_url === null && d.summary === null && d.analysis === null)) return ''
  const facts = [
    d.end_reason !== null ? `<dt>End reason</dt><dd><code>${e(d.end_reason)}</code></dd>` : '',
    d.summary !== null ? `<dt>Summary</dt><dd data-summary>${e(d.summary)}</dd>` : '',
  ].join('')
  const recording = d.recording_url
    ? `<p data-recording><audio controls preload="none" src="${e(d.recording_url)}"></audio> <a href="${e(d.recording_url)}" rel="noopener noreferrer">The recording</a></p>`
    : ''
  const transcript = d.transcript !== null ? `<h3>Transcript</h3><pre data-transcript>${e(d.transcript)}</pre>` : ''
  const analysis = d.analysis !== null ? `<details><summary>The provider's analysis</summary><pre data-analysis>${e(JSON.stringify(d.analysis, null, 2))}</pre></details>` : ''
  return `<section data-result><h2>How dial ${d.dial} ended, as the provider told it</h2>${facts ? `<dl class="facts">${facts}</dl>` : ''}${recording}${transcript}${analysis}</section>`
}

/** /console/calls/{id}: the call's story, oldest first: created, each dial, the provider's reports, its events and their deliveries. */
export function renderTimeline(t: Timeline, nonce: string, options: { mayAct?: boolean } = {}): string {
  const c = t.call
  type Entry = { at: Date; kind: string; html: string }
  const entries: Entry[] = [{ at: new Date(c.created_at), kind: 'created', html: `Created for <strong>${e(c.phone)}</strong>, script <code>${e(c.script_id)}</code>${c.batch_id ? `, in batch <a href="../batches/${e(c.batch_id)}"><code>${e(c.batch_id.slice(0, 8))}</code></a>` : ''}.` }]
  for (const d of t.dials) {
    entries.push({
      at: new Date(d.started_at),
      kind: 'dial',
      html: `Dial ${d.dial} started: ${d.requests} request${d.requests === 1 ? '' : 's'} to the provider (dial key <code>${e(`${c.id}:${d.dial}`)}</code>, sent as the Idempotency-Key, or in the call's metadata to Vapi and Retell)${
        d.dialed_at ? `, accepted at ${e(iso(d.dialed_at))} as <code>${e(d.provider_call_id ?? '')}</code>` : ', not accepted yet'
      }.`,
    })
    if (d.ended_at) entries.push({ at: new Date(d.ended_at), kind: 'dial-ended', html: `Dial ${d.dial} ended: <strong>${e(d.outcome ?? '')}</strong>${d.error ? ` (${e(d.error)})` : ''}.` })
  }
  for (const r of t.reports) {
    entries.push({
      at: new Date(r.received_at),
      kind: 'report',
      html: `The provider's report (${e(r.source === 'reconcile' ? 'status look-up' : 'webhook')}): <strong>${e(r.provider_status ?? 'unreadable')}</strong> → verdict <strong>${e(r.verdict)}</strong>${r.reason ? ` (${e(r.reason)})` : ''}${r.repeats ? `, delivered ${r.repeats} more time${r.repeats === 1 ? '' : 's'}` : ''}.`,
    })
  }
  for (const ev of t.events) {
    const deliveries = ev.deliveries.length
      ? `<ul>${ev.deliveries.map((d) => `<li>${e(d.url)}: <strong>${e(d.status)}</strong> after ${d.attempts} attempt${d.attempts === 1 ? '' : 's'}${d.last_status_code ? ` (HTTP ${d.last_status_code})` : ''}${d.last_error ? `: ${e(d.last_error)}` : ''}</li>`).join('')}</ul>`
      : ''
    entries.push({ at: new Date(ev.created_at), kind: 'event', html: `Event <code>${e(ev.type)}</code> (<code>${e(ev.id)}</code>)${deliveries}` })
  }
  if (c.ended_at) entries.push({ at: new Date(c.ended_at), kind: 'ended', html: `Ended <strong>${e(c.status)}</strong>${c.last_error ? `: ${e(c.last_error)}` : ''}.` })
  entries.sort((a, b) => a.at.getTime() - b.at.getTime())
  const rows = entries.map((x) => `<tr data-entry="${x.kind}"><td>${e(iso(x.at))}</td><td>${x.html}</td></tr>`).join('')
  // Links, not buttons that act: each leads to its confirmation (renderConfirm).
  const possible = options.mayAct ? (Object.keys(CONSOLE_ACTIONS) as ConsoleAction[]).filter((a) => CONSOLE_ACTIONS[a].allowed.includes(c.status)) : []
  const actions = possible.length ? `<p class="actions">${possible.map((a) => `<a class="button" data-action="${a}" href="${e(c.id)}/${a}">${CONSOLE_ACTIONS[a].label}…</a>`).join(' ')}</p>` : ''
  return htmlDocument(
    `Call orchestrator: call ${c.id}`,
    nonce,
    `<header><h1>Call <code>${e(c.id.slice(0, 8))}</code> <span data-status>${e(c.status)}</span></h1>${navDeep}</header>
<main>
<dl class="facts"><dt>Id</dt><dd><code>${e(c.id)}</code></dd><dt>Phone</dt><dd>${e(c.phone)}</dd><dt>Attempts</dt><dd>${c.attempts} request${c.attempts === 1 ? '' : 's'} over ${c.dial} dial${c.dial === 1 ? '' : 's'}</dd>${
      c.expires_at ? `<dt>Deadline</dt><dd>${e(iso(c.expires_at))}</dd>` : ''
    }</dl>
${actions}
${renderResult(t.dials.at(-1))}
<table data-timeline><thead><tr><th>When (UTC)</th><th>What</th></tr></thead><tbody>${rows}</tbody></table>
<p class="muted">The same as JSON, with a token: GET /calls/${e(c.id)}</p>
</main>`,
  )
}
