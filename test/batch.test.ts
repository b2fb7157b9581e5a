import t from 'tap'
import { postCall, newPhone } from './support/factory.ts'
import { createHarness } from './support/harness.ts'
import { jobOf, tableSnapshot } from './support/inspect.ts'

// POST /calls/batch: every item answered on its own, the valid ones created with their jobs in
// one transaction; an Idempotency-Key for the whole batch and one per item.

const item = (to = newPhone(), extra: Record<string, unknown> = {}) => ({ to, scriptId: 'batch', ...extra })

t.test('valid items are created with their jobs; each bad one is answered with its index, the rest go on', async (t) => {
  const h = await createHarness(t)
  const res = await h.call('POST', '/calls/batch', {
    calls: [item(), { to: 'nope', scriptId: 'batch' }, item(undefined, { metadata: { n: 1 } }), { scriptId: 'batch' }, 'not a call', item()],
  })
  t.equal(res.status, 201)
  t.equal(res.headers.get('location'), `/calls/batch/${res.body.batchId}`)
  t.match(res.body, { created: 3, replayed: 0, rejected: 3 })
  t.same(res.body.items.map((i: { result: string }) => i.result), ['created', 'rejected', 'created', 'rejected', 'rejected', 'created'])
  t.same(res.body.items.map((i: { index: number }) => i.index), [0, 1, 2, 3, 4, 5])
  t.match(res.body.items[1].problem, { status: 400, code: 'validation_failed', errors: [{ path: 'body.calls.1.to' }] })
  t.match(res.body.items[3].problem.errors, [{ path: 'body.calls.3.to' }])
  t.match(res.body.items[4].problem, { status: 400, code: 'validation_failed' })
  t.equal(res.body.items[2].call.payload.metadata.n, 1)

  const created = res.body.items.filter((i: { result: string }) => i.result === 'created').map((i: { call: { id: string } }) => i.call)
  for (const call of created) {
    t.equal(call.status, 'PENDING')
    t.equal(call.batchId, res.body.batchId)
    const job = await jobOf(h.sql, call.id)
    t.equal(job?.state, 'created', 'its job waits')
    t.equal(job?.singleton_key, call.payload.to, 'keyed by its phone')
  }
  const rows = await h.sql<{ batch_index: number }[]>`SELECT batch_index FROM calls WHERE batch_id = ${res.body.batchId} ORDER BY batch_index`
  t.same(rows.map((r) => r.batch_index), [0, 2, 5], 'each call knows its place in the request')

  const read = await h.call('GET', `/calls/batch/${res.body.batchId}`)
  t.equal(read.status, 200)
  t.match(read.body, { id: res.body.batchId, items: 6, created: 3, byStatus: { PENDING: 3 }, completedAt: null })
  t.same(read.body.calls.map((c: { id: string }) => c.id), created.map((c: { id: string }) => c.id))
})

t.test('a request that is not a batch changes nothing', async (t) => {
  const h = await createHarness(t)
  const before = await tableSnapshot(h.sql)
  const cases: Array<[unknown, number, string]> = [
    [{ calls: [] }, 400, 'body.calls'],
    [{ calls: Array.from({ length: 1001 }, () => item()) }, 400, 'body.calls'],
    [{ calls: 'x' }, 400, 'body.calls'],
    [{ calls: [item()], extra: 1 }, 400, 'body.extra'],
    [[item()], 400, 'body'],
  ]
  for (const [body, status, path] of cases) {
    const res = await h.call('POST', '/calls/batch', body)
    t.equal(res.status, status, JSON.stringify(body).slice(0, 60))
    t.match(res.body.errors, [{ path }])
  }
  t.equal((await h.call('POST', '/calls/batch', '{"calls": [', {})).status, 400, 'not JSON')
  t.equal((await h.call('POST', '/calls/batch', JSON.stringify({ calls: [item()] }), { 'content-type': 'text/plain' })).status, 415)
  t.equal((await h.call('GET', '/calls/batch')).status, 405, 'GET /calls/batch is not a call with id "batch"')
  t.equal((await h.call('GET', '/calls/batch/nope')).status, 400)
  t.equal((await h.call('GET', `/calls/batch/${crypto.randomUUID()}`)).body.code, 'batch_not_found')
  t.same(await tableSnapshot(h.sql), before)
  const [b] = await h.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM call_batches`
  t.equal(b!.n, 0, 'no batch row either')
})

t.test('a batch of 1000 is created whole', async (t) => {
  const h = await createHarness(t)
  const res = await h.call('POST', '/calls/batch', { calls: Array.from({ length: 1000 }, () => item()) })
  t.equal(res.status, 201)
  t.equal(res.body.created, 1000)
  const [row] = await h.sql<{ calls: number; jobs: number }[]>`
    SELECT count(*)::int AS calls, count(j.id)::int AS jobs FROM calls c JOIN pgboss.job j ON j.id = c.job_id AND j.state = 'created'
    WHERE c.batch_id = ${res.body.batchId}`
  t.same(row, { calls: 1000, jobs: 1000 })
})

t.test('Idempotency-Key on the batch: the same batch is answered again, another is refused', async (t) => {
  const h = await createHarness(t)
  const body = { calls: [item(), { to: 'bad', scriptId: 'x' }, item()] }
  const first = await h.call('POST', '/calls/batch', body, { 'idempotency-key': 'campaign-7' })
  t.equal(first.status, 201)
  const again = await h.call('POST', '/calls/batch', body, { 'idempotency-key': 'campaign-7' })
  t.equal(again.status, 200)
  t.equal(again.headers.get('idempotent-replayed'), 'true')
  t.equal(again.body.batchId, first.body.batchId)
  t.same(again.body.items.map((i: any) => i.call?.id ?? i.problem.code), first.body.items.map((i: any) => i.call?.id ?? i.problem.code), 'the same answer per item')
  const before = await tableSnapshot(h.sql)
  const other = await h.call('POST', '/calls/batch', { calls: [item()] }, { 'idempotency-key': 'campaign-7' })
  t.equal(other.status, 422)
  t.equal(other.body.code, 'idempotency_key_reused')
  t.same(await tableSnapshot(h.sql), before, 'nothing changed')
})

t.test('ten identical batch requests at once create it once', async (t) => {
  const h = await createHarness(t)
  const body = { calls: Array.from({ length: 50 }, () => item()) }
  const answers = await Promise.all(Array.from({ length: 10 }, () => h.call('POST', '/calls/batch', body, { 'idempotency-key': 'race' })))
  t.same(answers.map((a) => a.status).sort(), [200, 200, 200, 200, 200, 200, 200, 200, 200, 201])
  t.equal(new Set(answers.map((a) => a.body.batchId)).size, 1)
  const [row] = await h.sql<{ n: number; jobs: number }[]>`SELECT count(*)::int AS n, count(DISTINCT job_id)::int AS jobs FROM calls`
  t.same(row, { n: 50, jobs: 50 })
})

t.test('per-item keys: a replay of an earlier call, a conflict, and a key twice in one batch', async (t) => {
  const h = await createHarness(t)
  const earlier = await h.call('POST', '/calls', item('+15550009001'), { 'idempotency-key': 'item-a' })
  t.equal(earlier.status, 201)
  const res = await h.call('POST', '/calls/batch', {
    calls: [
      { ...item('+15550009001'), idempotencyKey: 'item-a' }, // the same call: a replay
      { ...item('+15550009002'), idempotencyKey: 'item-a' }, // another call under its key
      { ...item('+15550009003'), idempotencyKey: 'item-b' },
      { ...item('+15550009003'), idempotencyKey: 'item-b' }, // twice in this batch
      { ...item('+15550009004'), idempotencyKey: 'item-b' },
    ],
  })
  t.equal(res.status, 201)
  const results = res.body.items.map((i: any) => i.result)
  t.same(results, ['replayed', 'rejected', 'created', 'replayed', 'rejected'])
  t.equal(res.body.items[0].call.id, earlier.body.id)
  t.equal(res.body.items[1].problem.code, 'idempotency_key_reused')
  t.equal(res.body.items[3].call.id, res.body.items[2].call.id)
  t.equal(res.body.items[4].problem.status, 422)
  const [row] = await h.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM calls`
  t.equal(row!.n, 2, 'one call made before, one by the batch')

  const single = await h.call('POST', '/calls', item('+15550009003'), { 'idempotency-key': 'item-b' })
  t.equal(single.status, 200, 'a single create replays a call a batch made')
  t.equal(single.body.id, res.body.items[2].call.id)
})

t.test('a number on the do-not-call list is refused per item', async (t) => {
  const h = await createHarness(t)
  await h.call('PUT', '/suppressions/%2B15550009100', {})
  const res = await h.call('POST', '/calls/batch', { calls: [item('+15550009100'), item()] })
  t.same(res.body.items.map((i: any) => i.result), ['rejected', 'created'])
  t.match(res.body.items[0].problem, { status: 422, code: 'phone_suppressed' })
})

t.test('cancelling a batch cancels what is still pending and only that', async (t) => {
  const h = await createHarness(t)
  const res = await h.call('POST', '/calls/batch', { calls: [item(), item(), item()] })
  const [a, b] = res.body.items.map((i: any) => i.call.id)
  await h.sql`UPDATE calls SET status = 'IN_PROGRESS', attempts = 1, dial = 1, dial_requests = 1, started_at = now(), next_attempt_at = now() + interval '1 hour' WHERE id = ${a}`
  const cancelled = await h.call('POST', `/calls/batch/${res.body.batchId}/cancel`)
  t.equal(cancelled.status, 200)
  t.equal(cancelled.body.cancelled, 2)
  t.same(cancelled.body.byStatus, { IN_PROGRESS: 1, CANCELLED: 2 })
  const again = await h.call('POST', `/calls/batch/${res.body.batchId}/cancel`)
  t.equal(again.body.cancelled, 0, 'a second cancel finds nothing left')
  t.equal((await jobOf(h.sql, b))?.state, undefined, 'the cancelled call’s job is gone')
  t.equal((await h.call('POST', `/calls/batch/${crypto.randomUUID()}/cancel`)).status, 404)
})

t.test('a single create and a batch share item keys under a race', async (t) => {
  const h = await createHarness(t)
  const answers = await Promise.all([
    h.call('POST', '/calls/batch', { calls: [{ ...item('+15550009200'), idempotencyKey: 'shared' }] }),
    postCall(h, item('+15550009200'), { 'idempotency-key': 'shared' }).then((call) => ({ status: 0, body: call })),
  ])
  const [row] = await h.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM calls WHERE idempotency_key = 'shared'`
  t.equal(row!.n, 1, 'one call under the key')
  const batchItem = answers[0].body.items[0]
  t.equal(batchItem.call.id, answers[1].body.id, 'both answers name it')
})
