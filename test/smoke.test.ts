import t from 'tap'
import { createHarness } from './support/harness.ts'

t.test('a created call can be read back', async (t) => {
  const h = await createHarness(t)
  const created = await h.call('POST', '/calls', { to: '+966501234567', scriptId: 'welcomeFlow' })
  t.equal(created.status, 201)
  const fetched = await h.call('GET', `/calls/${created.body.id}`)
  t.equal(fetched.body.status, 'PENDING')
  const [job] = await h.sql`SELECT singleton_key, state FROM pgboss.job WHERE id = ${fetched.body.id ? (await h.sql`SELECT job_id FROM calls WHERE id = ${created.body.id}`)[0]!.job_id : null}`
  t.equal(job?.singleton_key, '+966501234567')
})
