import type { Hono } from 'hono'
import type { Suppression, SuppressionService } from '../../services/calls/suppressions.ts'
import type { DispatchControl } from '../../services/dispatch/control.ts'
import { readJson } from '../body.ts'
import * as s from '../schemas.ts'

// The do-not-call list (/suppressions) and run-time control of dispatch (/dispatch).

const suppressionResource = (row: Suppression) => ({
  phone: row.phone,
  reason: row.reason,
  source: row.source,
  createdAt: row.created_at.toISOString(),
})


export function suppressionRoutes(app: Hono, suppressions: SuppressionService): void {
  app.put('/suppressions/:phone', async (c) => {
    const phone = s.parse(s.Phone, c.req.param('phone'), 'path.phone')
    const body = s.parseBody(s.SuppressionBody, await readJson(c, undefined, true))
    const { suppression, created, callsSuppressed } = await suppressions.add(phone, body)
    return c.json({ ...suppressionResource(suppression), callsSuppressed }, created ? 201 : 200)
  })

  app.get('/suppressions/:phone', async (c) => {
    const phone = s.parse(s.Phone, c.req.param('phone'), 'path.phone')
    return c.json(suppressionResource(await suppressions.get(phone)))
  })

  app.delete('/suppressions/:phone', async (c) => {
    const phone = s.parse(s.Phone, c.req.param('phone'), 'path.phone')
    await suppressions.remove(phone)
    return c.body(null, 204)
  })

  app.get('/suppressions', async (c) => {
    const q = s.parse(s.PageQuery, s.singleQuery(c.req.queries()), 'query')
    const after = q.cursor === undefined ? undefined : s.decodePhoneCursor(q.cursor)
    const rows = await suppressions.list({ limit: q.limit + 1, after })
    const page = rows.slice(0, q.limit)
    const nextCursor = rows.length > q.limit ? s.encodeCursor(page[page.length - 1]!.phone) : null
    return c.json({ data: page.map(suppressionResource), nextCursor })
  })

  // Up to MAX_IMPORT numbers in one transaction; the body may be up to 1 MiB.
  // Each entry on its own, as in a batch of calls: a bad one is answered with its index and
  // problem, the rest are added.
  app.post('/suppressions/import', async (c) => {
    const body = s.parseBody(s.SuppressionImport, await readJson(c, 1024 * 1024))
    const judged = body.entries.map((entry, index) => {
      const one = s.parseItem(s.SuppressionEntry, entry, 'entries', index, 'entry')
      return 'value' in one ? { index, entry: one.value } : { index, problem: one.problem }
    })
    const valid = judged.flatMap((j) => (j.entry ? [j.entry] : []))
    const { added, callsSuppressed } = await suppressions.import(valid, body.source)
    const items = judged.map((j) =>
      j.entry ? { index: j.index, result: added.has(j.entry.phone) ? ('added' as const) : ('updated' as const), phone: j.entry.phone } : { index: j.index, result: 'rejected' as const, problem: j.problem! },
    )
    const count = (result: string) => new Set(items.filter((i) => i.result === result).map((i) => ('phone' in i ? i.phone : i.index))).size
    return c.json({ added: count('added'), updated: count('updated'), rejected: items.filter((i) => i.result === 'rejected').length, callsSuppressed, items })
  })
}

export function dispatchRoutes(app: Hono, control: DispatchControl): void {
  app.get('/dispatch/settings', async (c) => c.json(await control.settings()))
  app.put('/dispatch/settings', async (c) => {
    const body = s.parseBody(s.DispatchSettingsBody, await readJson(c))
    return c.json(await control.change({ maxConcurrentCalls: body.maxConcurrentCalls }))
  })
  app.post('/dispatch/pause', async (c) => c.json(await control.change({ paused: true })))
  app.post('/dispatch/resume', async (c) => c.json(await control.change({ paused: false })))
}
