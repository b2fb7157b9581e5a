import t from 'tap'
import net from 'node:net'
import { createHarness } from './support/harness.ts'
import { newPhone } from './support/factory.ts'

// Round trips to PostgreSQL on the hot paths (README "Performance"). Counted on the wire: every
// socket to the database server that sends after it has been answered makes one.

function countRoundTrips(port: number) {
  const counter = { trips: 0 }
  const answered = new WeakMap<net.Socket, boolean>()
  const write = net.Socket.prototype.write
  net.Socket.prototype.write = function (this: net.Socket, ...args: unknown[]) {
    if (this.remotePort === port) {
      if (!answered.has(this)) this.on('data', () => answered.set(this, true))
      if (answered.get(this) ?? true) counter.trips++
      answered.set(this, false)
    }
    return (write as (...a: unknown[]) => boolean).apply(this, args)
  } as typeof write
  return { counter, restore: () => void (net.Socket.prototype.write = write) }
}

t.test('POST /calls for a number with no calling rules: one round trip, with BEGIN and COMMIT in it', async (t) => {
  const h = await createHarness(t)
  const { counter, restore } = countRoundTrips(Number(new URL(h.url).port || 5432))
  t.teardown(restore)
  // The first of each statement on a connection is prepared; count a later one.
  for (let i = 0; i < 15; i++) t.equal((await h.call('POST', '/calls', { to: newPhone(), scriptId: 's' })).status, 201)
  counter.trips = 0
  const res = await h.call('POST', '/calls', { to: newPhone(), scriptId: 's' })
  t.equal(res.status, 201)
  t.equal(counter.trips, 1, 'the do-not-call check, both inserts and COMMIT went out with BEGIN')
  const [row] = await h.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM calls WHERE id = ${res.body.id} AND job_id IS NOT NULL`
  t.equal(row!.n, 1, 'committed, with its job')
})
