import t from 'tap'
import { existsSync } from 'node:fs'
import { mkdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { chromium } from 'playwright-core'
import { listen } from '../src/platform/serve.ts'
import { sendSigned } from './support/callbacks.ts'
import { startFakeProvider } from './support/fake-provider.ts'
import { createHarness } from './support/harness.ts'
import { waitFor } from './support/processes.ts'
import { startDispatcher } from './support/dispatcher.ts'

// The status page in a real browser (Debian's Chromium, headless): signed in with a token, it
// shows a new call in flight and then its end, without a reload, because only a browser runs
// the page's EventSource script. CI installs Chromium (.ci/run), so its absence is a failure.

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
const SCREENSHOT = join(import.meta.dirname, 'artifacts', 'status-page.png')
const TOKEN = 'browser-test-token-5b1f0c'

// Functions given to page.evaluate run in the page (strings would be refused by its CSP, which
// forbids eval). They are sent as source, without their closure, and this project compiles
// without the DOM's types: each casts globalThis to this, a cast that disappears at run time.
interface PageGlobal {
  document: { getElementById(id: string): { textContent: string | null } | null; querySelector(s: string): { textContent: string | null } | null }
  unreloaded?: boolean
}

t.test('the page signs in, then follows calls live from dial to end without a reload', async (t) => {
  t.ok(existsSync(CHROMIUM), `Chromium at ${CHROMIUM} (apt-get install chromium; .ci/run does)`)
  if (!existsSync(CHROMIUM)) return

  const h = await createHarness(t, { apiTokens: [TOKEN], maxConcurrentCalls: 5, statusIntervalMs: 250 })
  const server = await listen(h.app, { host: '127.0.0.1', port: 0 })
  t.teardown(() => server.close())
  const base = `http://127.0.0.1:${server.port}`
  let n = 0
  const fake = await startFakeProvider(t, () => ({ status: 202, body: { callId: `prov-${++n}` } }))
  await startDispatcher(t, h, fake.url, { maxConcurrentCalls: 5, pollMs: 500, shutdownTimeoutMs: 2_000, reconcileAfterSeconds: 600, publicBaseUrl: base, providerTimeoutMs: 2_000 })

  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] }) // no user namespaces in CI containers
  t.teardown(() => browser.close())
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } })
  const errors: string[] = []
  page.on('pageerror', (err) => errors.push(err.message))
  page.on('console', (m) => m.type() === 'error' && errors.push(m.text()))

  await page.goto(`${base}/`)
  t.ok(await page.isVisible('form.login'), 'without a session, the sign-in form')
  await page.fill('#token', 'not-the-token')
  await page.click('form.login button')
  t.match(await page.textContent('[role=alert]'), /not accepted/, 'a wrong token is refused')
  await page.fill('#token', TOKEN)
  await page.click('form.login button')
  await page.waitForSelector('#board [data-count="PENDING"]')
  await page.waitForFunction(() => (globalThis as unknown as PageGlobal).document.getElementById('live')?.textContent === 'live')
  t.pass('signed in; the page is live')
  errors.length = 0 // the two 401s of the sign-in form are logged as failed loads; from here on, nothing should be
  // Anything a reload would wipe: proves every later change arrived through the stream.
  await page.evaluate(() => ((globalThis as unknown as PageGlobal).unreloaded = true))

  const api = (path: string, body: unknown) =>
    fetch(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` }, body: JSON.stringify(body) }).then(
      (r) => r.json() as Promise<{ id: string }>,
    )
  const calls = [
    await api('/calls', { to: '+15553000001', scriptId: 'status-page' }),
    await api('/calls', { to: '+15553000002', scriptId: 'status-page' }),
    await api('/calls', { to: '+15553000003', scriptId: 'status-page' }),
  ]
  for (const call of calls) await page.waitForSelector(`[data-in-flight] tr[data-call="${call.id}"]`, { timeout: 15_000 })
  t.equal(await page.textContent('[data-count="IN_PROGRESS"]'), '3', 'the new calls are in flight')
  t.equal(await page.textContent('[data-slots-in-use]'), '3')
  t.match(await page.textContent('[data-in-flight]'), /\+•••••••0001/, 'phones masked')
  t.notMatch(await page.content(), /15553000001/, 'no full phone on the page')

  // The provider's final report on two of them: one completes, one is busy.
  await waitFor('both dials recorded', async () => {
    const [row] = await h.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM calls WHERE dialed_at IS NOT NULL`
    return row!.n === 3
  })
  const providerId = async (id: string) => (await h.sql<{ p: string }[]>`SELECT provider_call_id AS p FROM calls WHERE id = ${id}`)[0]!.p
  t.equal((await sendSigned(h, calls[0]!.id, { callId: await providerId(calls[0]!.id), status: 'COMPLETED', durationSec: 42 })).status, 200)
  t.equal((await sendSigned(h, calls[1]!.id, { callId: await providerId(calls[1]!.id), status: 'BUSY' })).status, 200)

  await page.waitForFunction(() => (globalThis as unknown as PageGlobal).document.querySelector('[data-count="COMPLETED"]')?.textContent === '1', undefined, { timeout: 15_000 })
  await page.waitForSelector('[data-failures]', { timeout: 15_000 })
  t.equal(await page.textContent('[data-count="IN_PROGRESS"]'), '1', 'one call still in flight')
  t.equal(await page.textContent('[data-count="FAILED"]'), '1')
  t.match(await page.textContent('[data-failures]'), /BUSY/, 'the failure and its reason are listed')
  t.equal(await page.textContent('[data-callbacks="applied"]'), '2', 'both callbacks counted as applied')
  t.equal(await page.locator(`[data-in-flight] tr[data-call="${calls[0]!.id}"]`).count(), 0, 'the completed call left the in-flight table')
  t.equal(await page.evaluate(() => (globalThis as unknown as PageGlobal).unreloaded), true, 'all without a reload')

  await h.call('POST', '/dispatch/pause', undefined, { authorization: `Bearer ${TOKEN}` })
  await page.waitForSelector('[data-dispatch="paused"]', { timeout: 15_000 })
  t.pass('pausing shows at once')
  t.ok(await page.isVisible('[data-last-hour] svg polyline[data-series="dialed"]'), 'the last hour is drawn')
  t.equal(await page.locator('[data-last-hour] table[data-minutes] tbody tr').count(), 60, 'a row per minute behind it')
  t.same(errors, [], 'no script errors, and nothing refused by the content security policy')

  await mkdir(join(import.meta.dirname, 'artifacts'), { recursive: true })
  await page.screenshot({ path: SCREENSHOT, fullPage: true })
  const png = await readFile(SCREENSHOT)
  t.same([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], 'the screenshot is a PNG')
  t.ok(png.length > 10_000, `and not an empty one (${png.length} bytes)`)

  // The console, signed in by the same session: the list, then one call's timeline, by its link.
  const consoleContext = await browser.newContext({ viewport: { width: 1100, height: 900 } })
  await consoleContext.addCookies(await page.context().cookies())
  const consoleTab = await consoleContext.newPage()
  consoleTab.on('pageerror', (err) => errors.push(err.message))
  await consoleTab.goto(`${base}/console/calls`)
  t.equal(await consoleTab.locator('table[data-calls] tr[data-call]').count(), 3, 'the console lists the calls')
  await consoleTab.click(`a[href="calls/${calls[0]!.id}"]`)
  await consoleTab.waitForSelector('table[data-timeline]')
  t.match(await consoleTab.textContent('table[data-timeline]'), /verdict applied/, 'its timeline shows the provider\'s report and its verdict')
  await consoleTab.screenshot({ path: SCREENSHOT.replace(/status-page\.png$/, 'console-call.png'), fullPage: true })

  // Retry the busy call: the button asks first, and only the answer acts.
  await consoleTab.goto(`${base}/console/calls/${calls[1]!.id}`)
  await consoleTab.click('a[data-action="retry"]')
  await consoleTab.waitForSelector('form[data-confirm="retry"]')
  t.match(await consoleTab.textContent('form[data-confirm="retry"]'), /ring the person twice/, 'the question says what could happen')
  t.equal((await h.sql<{ status: string }[]>`SELECT status FROM calls WHERE id = ${calls[1]!.id}`)[0]!.status, 'FAILED', 'asking changed nothing')
  await consoleTab.screenshot({ path: SCREENSHOT.replace(/status-page\.png$/, 'console-confirm.png'), fullPage: true })
  await consoleTab.click('form[data-confirm="retry"] button')
  await consoleTab.waitForSelector('table[data-timeline]')
  t.equal(await consoleTab.textContent('[data-status]'), 'PENDING', 'back on the timeline, the call is PENDING again (dispatch is paused)')
  t.equal(await consoleTab.locator('a[data-action="cancel"]').count(), 1, 'and may now be cancelled')
  t.same(errors, [], 'no script errors on the console')

  // The server gone: the last numbers are marked stale, never shown as live.
  await server.close()
  await page.waitForSelector('#board[data-stale]', { timeout: 15_000 })
  t.match(await page.textContent('#live'), /^stale: as of .*(reconnecting|disconnected)/, 'the header says since when')
  await page.screenshot({ path: SCREENSHOT.replace(/\.png$/, '-stale.png'), fullPage: true })
})
