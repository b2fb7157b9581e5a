import { CALL_STATUSES } from '../domain/call.ts'
import { LIST_LIMIT, RECENT_MINUTES, type MinuteCounts, type StatusSnapshot } from '../store/status.ts'

// The status page's HTML, rendered here and only here: the first load gets the whole page, and
// every server-sent event carries the board (the part that changes) rendered by the same code,
// which the page's few lines of script swap in. So there is one renderer, and one place where
// values from outside (phones, failure reasons, verdicts) are escaped.

const ENTITIES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }

export function escapeHtml(value: unknown): string {
  return String(value).replace(/[&<>"']/g, (ch) => ENTITIES[ch]!)
}

/** A phone with every digit but the last four hidden: the page is for screens others can see. */
export function maskPhone(phone: string): string {
  const digits = phone.replace(/\D/g, '')
  return (phone.startsWith('+') ? '+' : '') + '•'.repeat(Math.max(0, digits.length - 4)) + digits.slice(-4)
}

/** "7 s", "3 min 05 s", "2 h 14 min", "3 d 4 h": as long as it needs to be, no longer. */
export function formatDuration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000))
  const pad = (n: number) => String(n).padStart(2, '0')
  if (s < 60) return `${s} s`
  if (s < 3600) return `${Math.floor(s / 60)} min ${pad(s % 60)} s`
  if (s < 86_400) return `${Math.floor(s / 3600)} h ${pad(Math.floor(s / 60) % 60)} min`
  return `${Math.floor(s / 86_400)} d ${Math.floor(s / 3600) % 24} h`
}

/** HH:MM of an instant, in UTC. */
const hhmm = (d: Date) => d.toISOString().slice(11, 16)

/** Everything that changes, as the page shows it and as each server-sent event carries it. */
export function renderBoard(s: StatusSnapshot): string {
  const now = s.at.getTime()
  const since = (d: Date) => formatDuration(now - d.getTime())
  const inUse = s.counts.IN_PROGRESS
  const free = s.paused ? 0 : Math.max(0, s.limit - inUse)
  const callId = (id: string) => `<code title="${escapeHtml(id)}">${escapeHtml(id.slice(0, 8))}</code>`

  const held = s.heldUntilTimeout
    ? `<p class="banner paused" data-held>${s.heldUntilTimeout.calls} call${s.heldUntilTimeout.calls === 1 ? '' : 's'} hold slots until ${hhmm(s.heldUntilTimeout.until)} UTC (CALL_TIMEOUT_SECONDS): the provider cannot be asked about them.</p>`
    : ''
  const dispatch = (s.paused
    ? `<p class="banner paused" data-dispatch="paused">Dispatch is <strong>paused</strong>: no new calls start (POST /dispatch/resume).</p>`
    : `<p class="banner running" data-dispatch="running">Dispatch is running.</p>`) + held

  const slots = `
    <section class="slots">
      <h2>Slots</h2>
      <p class="big"><span data-slots-in-use>${inUse}</span> <span class="of">of ${s.limit} in use</span></p>
      <meter min="0" max="${Math.max(1, s.limit)}" value="${Math.min(inUse, s.limit)}"></meter>
      <p class="muted"><span data-free-slots>${free}</span> free</p>
    </section>`

  const counts = `
    <section>
      <h2>Calls by status</h2>
      <table class="counts"><tbody>
        ${CALL_STATUSES.map((st) => `<tr><th>${st}</th><td data-count="${st}">${s.counts[st]}</td></tr>`).join('')}
      </tbody></table>
    </section>`

  const o = s.oldestWaiting
  const oldest = `
    <section>
      <h2>Oldest waiting call</h2>
      ${
        o
          ? `<p class="big" data-oldest-waiting>${since(o.createdAt)}</p>
             <p>${callId(o.id)} to ${escapeHtml(maskPhone(o.phone))}${o.waitingFor ? `, waiting for ${escapeHtml(o.waitingFor.replace('_', ' '))}` : ''}${
               o.nextAttemptAt && o.nextAttemptAt.getTime() > now ? `, next try in ${formatDuration(o.nextAttemptAt.getTime() - now)}` : ''
             }</p>`
          : `<p class="muted" data-oldest-waiting>No call is waiting.</p>`
      }
    </section>`

  const callbacks = Object.entries(s.callbacks).sort(([a], [b]) => a.localeCompare(b))
  const verdicts = `
    <section>
      <h2>Callbacks, last ${RECENT_MINUTES} min</h2>
      ${
        callbacks.length
          ? `<table class="counts"><tbody>${callbacks
              .map(([verdict, n]) => `<tr><th>${escapeHtml(verdict)}</th><td data-callbacks="${escapeHtml(verdict)}">${n}</td></tr>`)
              .join('')}</tbody></table>`
          : `<p class="muted">None received.</p>`
      }
    </section>`

  const flying = `
    <section class="wide">
      <h2>In flight (${inUse})</h2>
      ${
        s.inFlight.length
          ? `<table data-in-flight><thead><tr><th>Call</th><th>Phone</th><th>Attempt</th><th>For</th><th>Dialed</th></tr></thead><tbody>${s.inFlight
              .map(
                (c) =>
                  `<tr data-call="${escapeHtml(c.id)}"><td>${callId(c.id)}</td><td>${escapeHtml(maskPhone(c.phone))}</td><td>${c.attempts}</td><td>${since(c.startedAt)}</td><td>${
                    c.dialedAt ? `${since(c.dialedAt)} ago` : '<span class="muted">not yet</span>'
                  }</td></tr>`,
              )
              .join('')}</tbody></table>${inUse > s.inFlight.length ? `<p class="muted">The ${LIST_LIMIT.inFlight} longest shown.</p>` : ''}`
          : `<p class="muted">No call in flight.</p>`
      }
    </section>`

  const failures = `
    <section class="wide">
      <h2>Failures, last ${RECENT_MINUTES} min</h2>
      ${
        s.recentFailures.length
          ? `<table data-failures><thead><tr><th>Call</th><th>Phone</th><th>Reason</th><th>Provider</th><th>Ended</th></tr></thead><tbody>${s.recentFailures
              .map(
                (f) =>
                  `<tr><td>${callId(f.id)}</td><td>${escapeHtml(maskPhone(f.phone))}</td><td class="reason">${escapeHtml(f.reason)}</td><td>${escapeHtml(
                    f.providerStatus ?? '',
                  )}</td><td>${since(f.endedAt)} ago</td></tr>`,
              )
              .join('')}</tbody></table>`
          : `<p class="muted">None.</p>`
      }
    </section>`

  return `${dispatch}<div class="grid">${slots}${counts}${oldest}${verdicts}${renderLastHour(s.lastHour, s.limit)}${flying}${failures}</div>`
}

/** The series of the last-hour chart, each with its colour. */
const SERIES = [
  { key: 'created', label: 'created', colour: '#888' },
  { key: 'dialed', label: 'dialed', colour: '#36c' },
  { key: 'completed', label: 'completed', colour: '#2a7' },
  { key: 'failed', label: 'failed', colour: '#d33' },
] as const

/**
 * The last hour per minute, drawn on the server as SVG (no script, no library): calls created,
 * dialed, completed and failed on one chart, slots in use against the limit on another. The
 * current minute's numbers are written beside it and every minute's in a table under it, so the
 * chart can be read without seeing it.
 */
export function renderLastHour(minutes: MinuteCounts[], limit: number): string {
  if (minutes.length === 0) return ''
  const W = 600
  const H = 120
  const x = (i: number) => (minutes.length === 1 ? W : (i / (minutes.length - 1)) * W).toFixed(1)
  const top = Math.max(1, ...minutes.flatMap((m) => SERIES.map((sr) => m[sr.key])))
  const y = (n: number, max: number) => (H - (n / max) * H).toFixed(1)
  const lines = SERIES.map(
    (sr) =>
      `<polyline data-series="${sr.key}" fill="none" stroke="${sr.colour}" stroke-width="2" vector-effect="non-scaling-stroke" points="${minutes.map((m, i) => `${x(i)},${y(m[sr.key], top)}`).join(' ')}"><title>${sr.label} per minute</title></polyline>`,
  ).join('')
  const slotTop = Math.max(1, limit, ...minutes.map((m) => m.slots))
  const area = `<polygon data-series="slots" fill="#a6c5" stroke="#a6c" vector-effect="non-scaling-stroke" points="0,${H} ${minutes.map((m, i) => `${x(i)},${y(m.slots, slotTop)}`).join(' ')} ${W},${H}"><title>slots in use</title></polygon>`
  const limitLine = `<line data-limit x1="0" x2="${W}" y1="${y(limit, slotTop)}" y2="${y(limit, slotTop)}" stroke="#d73" stroke-dasharray="6 4" vector-effect="non-scaling-stroke"><title>the limit: ${limit}</title></line>`
  const now = minutes.at(-1)!
  const first = hhmm(minutes[0]!.minute)
  const svg = (label: string, body: string, max: number) =>
    `<svg viewBox="0 0 ${W} ${H}" preserveAspectRatio="none" width="100%" height="${H}" role="img" aria-label="${escapeHtml(label)}">${body}</svg><p class="axis muted"><span>${first}</span><span>max ${max}</span><span>${hhmm(now.minute)} UTC</span></p>`
  const legend = SERIES.map((sr) => `<span data-now="${sr.key}"><svg width="10" height="10" aria-hidden="true"><rect width="10" height="10" fill="${sr.colour}"/></svg> ${sr.label} ${now[sr.key]}</span>`).join(' ')
  return `
    <section class="wide" data-last-hour>
      <h2>Last ${minutes.length} min, per minute</h2>
      <p class="legend">This minute: ${legend}</p>
      ${svg(`Calls per minute over the last hour: ${SERIES.map((sr) => `${sr.label} ${minutes.reduce((n, m) => n + m[sr.key], 0)}`).join(', ')}`, lines, top)}
      <p class="legend"><span data-now="slots"><svg width="10" height="10" aria-hidden="true"><rect width="10" height="10" fill="#a6c"/></svg> slots in use ${now.slots}</span> of ${limit}</p>
      ${svg(`Slots in use over the last hour, at most ${Math.max(...minutes.map((m) => m.slots))} of ${limit}`, area + limitLine, slotTop)}
      <details><summary>Every minute</summary><table class="counts" data-minutes><thead><tr><th>UTC</th>${SERIES.map((sr) => `<th>${sr.label}</th>`).join('')}<th>slots</th></tr></thead><tbody>${minutes
        .toReversed()
        .map((m) => `<tr><th>${hhmm(m.minute)}</th>${SERIES.map((sr) => `<td>${m[sr.key]}</td>`).join('')}<td>${m.slots}</td></tr>`)
        .join('')}</tbody></table></details>
    </section>`
}

/** Shown in place of the board while the database does not answer; the stream keeps trying. */
export function renderUnavailable(): string {
  return `<p class="banner paused" data-unavailable>The database is not answering; retrying every second.</p>`
}

const STYLE = `
  :root { color-scheme: light dark; font-family: system-ui, sans-serif; }
  body { margin: 0 auto; max-width: 72rem; padding: 1rem 1.5rem; }
  header { display: flex; align-items: baseline; gap: 1rem; }
  h1 { font-size: 1.3rem; margin: 0 0 .5rem; } h2 { font-size: 1rem; margin: 0 0 .5rem; }
  .grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(14rem, 1fr)); gap: 1rem; }
  section { border: 1px solid #8884; border-radius: .5rem; padding: .75rem 1rem; }
  .wide { grid-column: 1 / -1; }
  .big { font-size: 2rem; margin: 0; font-variant-numeric: tabular-nums; } .of { font-size: 1rem; }
  meter { width: 100%; }
  table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
  th, td { text-align: left; padding: .2rem .5rem .2rem 0; border-bottom: 1px solid #8882; vertical-align: top; }
  .counts td { text-align: right; }
  .reason { overflow-wrap: anywhere; }
  .muted { opacity: .65; }
  .banner { padding: .5rem 1rem; border-radius: .5rem; }
  .running { background: #2a72; } .paused { background: #d732; }
  #live { font-size: .85rem; } #live.ok::before { content: "● "; color: #2a7; }
  #board.stale { opacity: .45; filter: grayscale(1); }
  nav.console { font-size: .9rem; } form.filter { display: flex; flex-wrap: wrap; gap: .6rem; align-items: end; margin: 1rem 0; }
  form.filter label { display: flex; flex-direction: column; font-size: .8rem; } dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; }
  table[data-timeline] td:first-child, table[data-calls] td { white-space: nowrap; vertical-align: top; }
  .logout { margin-left: auto; }
  a.button, button { display: inline-block; padding: .3rem .8rem; border: 1px solid #8888; border-radius: .3rem; background: #8881; color: inherit; text-decoration: none; font: inherit; cursor: pointer; }
  .axis { display: flex; justify-content: space-between; font-size: .75rem; margin: 0 0 .5rem; } .legend { font-size: .85rem; margin: .25rem 0; }
  .bad { background: #d332; padding: .5rem 1rem; border-radius: .5rem; }
  form.login { display: grid; gap: .5rem; max-width: 24rem; }
`

export function htmlDocument(title: string, nonce: string, body: string, head = ''): string {
  return document(title, nonce, body, head)
}

function document(title: string, nonce: string, body: string, head = ''): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title><link rel="icon" href="data:,"><style nonce="${nonce}">${STYLE}</style>${head}</head>
<body>${body}</body></html>`
}

/**
 * The whole page. Its script listens to status/events (server-sent events; EventSource
 * reconnects by itself) and swaps in each board it is sent. Without EventSource, or without
 * script at all, the page reloads itself every 5 seconds instead.
 */
export function renderPage(s: StatusSnapshot, nonce: string, options: { logout: boolean }): string {
  const script = `
    const board = document.getElementById('board'), live = document.getElementById('live')
    if (!('EventSource' in window)) setTimeout(() => location.reload(), 5000)
    else {
      const events = new EventSource('status/events')
      let heard = new Date()
      events.addEventListener('status', (e) => {
        board.innerHTML = e.data; board.classList.remove('stale'); board.removeAttribute('data-stale')
        live.textContent = 'live'; live.className = 'ok'; heard = new Date()
      })
      // Numbers the server no longer sends are not live: they are greyed out, and say from when.
      events.onerror = () => {
        live.className = ''
        board.classList.add('stale'); board.setAttribute('data-stale', '')
        const since = 'stale: as of ' + heard.toLocaleTimeString() + ', '
        live.textContent = since + (events.readyState === EventSource.CLOSED ? 'disconnected: reload the page (signed out?)' : 'reconnecting…')
      }
    }`
  return document(
    'Call orchestrator: status',
    nonce,
    `<header><h1>Call orchestrator</h1><span id="live" class="muted">connecting…</span><nav class="console"><a href="console/calls">Calls</a></nav>${
      options.logout ? `<form class="logout" method="post" action="logout"><button>Sign out</button></form>` : ''
    }</header>
<main id="board">${renderBoard(s)}</main>
<script nonce="${nonce}">${script}</script>`,
    `<noscript><meta http-equiv="refresh" content="5"></noscript>`,
  )
}

export function renderLogin(nonce: string, message?: string): string {
  return document(
    'Call orchestrator: sign in',
    nonce,
    `<h1>Call orchestrator</h1>
<form class="login" method="post" action="login">
  <label for="token">API token (one of API_TOKENS or API_READ_TOKENS)</label>
  <input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
  <button>Show the status page</button>
  ${message ? `<p class="banner paused" role="alert">${escapeHtml(message)}</p>` : ''}
</form>`,
  )
}
