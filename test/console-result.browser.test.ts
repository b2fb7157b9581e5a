import t from 'tap'
import { existsSync } from 'node:fs'
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { chromium } from 'playwright-core'
import { listen } from '../src/platform/serve.ts'
import { silentLogger } from '../src/platform/log.ts'
import { createRetellWebhook } from '../src/provider/retell.ts'
import { callbackPath, inFlightCall } from './support/callbacks.ts'
import { retellSignature } from './support/fake-retell.ts'
import { newPhone } from './support/factory.ts'
import { createHarness, registerWorker } from './support/harness.ts'

// The console's call page in a real browser (Debian's Chromium, headless), for a call Retell
// ended: the transcript shows as text (a script in it does not run), the recording has a
// player, and the page's CSP lets that player load https media and nothing else new.

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
const KEY = 'retell-browser-key'

interface PageGlobal {
  document: { querySelector(s: string): { textContent: string | null; getAttribute(name: string): string | null } | null }
  pwned?: boolean
}

t.test("a call's transcript, summary and recording player on the console, in Chromium", async (t) => {
  t.ok(existsSync(CHROMIUM), `Chromium at ${CHROMIUM} (apt-get install chromium; .ci/run does)`)
  if (!existsSync(CHROMIUM)) return
  const h = await createHarness(t, { webhook: createRetellWebhook({ apiKey: KEY, voicemail: 'NO_ANSWER', log: silentLogger }) })
  const server = await listen(h.app, { host: '127.0.0.1', port: 0 })
  t.teardown(async () => void (await server.close()))
  const base = `http://127.0.0.1:${server.port}`
  const call = await inFlightCall(h, await registerWorker(h), newPhone(), 'r-browser')
  const body = JSON.stringify({
    event: 'call_analyzed',
    call: {
      call_id: 'r-browser',
      disconnection_reason: 'agent_hangup',
      duration_ms: 12_000,
      transcript: 'Agent: Hello.\nUser: <img src=x onerror="globalThis.pwned=true"> see you Monday.',
      recording_url: 'https://recordings.example/r-browser.wav',
      call_analysis: { call_summary: 'Confirmed for Monday.', call_successful: true },
    },
  })
  const res = await fetch(`${base}${callbackPath(call.id, 1)}`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-retell-signature': retellSignature(KEY, body, Date.now()) }, body })
  t.equal(res.status, 200)

  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] })
  t.teardown(() => browser.close())
  const page = await browser.newPage({ viewport: { width: 1100, height: 1000 } })
  const problems: string[] = []
  page.on('pageerror', (err) => problems.push(err.message))
  page.on('console', (m) => m.type() === 'error' && problems.push(m.text()))
  await page.goto(`${base}/console/calls/${call.id}`)
  await page.waitForSelector('section[data-result]')
  t.match(await page.textContent('[data-transcript]'), /User: <img src=x onerror="globalThis\.pwned=true"> see you Monday\./, 'the transcript, as text')
  t.equal(await page.evaluate(() => (globalThis as unknown as PageGlobal).pwned ?? false), false, 'nothing in it ran')
  t.equal(await page.textContent('[data-summary]'), 'Confirmed for Monday.')
  t.equal(await page.getAttribute('[data-recording] audio', 'src'), 'https://recordings.example/r-browser.wav', 'a player for the recording')
  t.equal(await page.getAttribute('[data-recording] a', 'href'), 'https://recordings.example/r-browser.wav', 'and a link to it')
  t.same(problems, [], 'no script error and no CSP violation on the page')
  await mkdir(join(import.meta.dirname, 'artifacts'), { recursive: true })
  await page.screenshot({ path: join(import.meta.dirname, 'artifacts', 'console-result.png'), fullPage: true })
})
