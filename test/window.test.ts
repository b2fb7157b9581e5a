import t from 'tap'
import { instantOfWallTime, isOpen, nextOpening, parseWindowSpec, type CallingWindow } from '../src/domain/window.ts'

// Calling windows on the called party's own clock, pinned to dates around daylight-saving
// switches in three zones (New York and London change on different weekends; Sydney goes the
// other way), with several zones at once, windows through midnight, and the hour that never
// happens.

const at = (iso: string) => new Date(iso)
const weekdays: CallingWindow = { days: ['mon', 'tue', 'wed', 'thu', 'fri'], start: '09:00', end: '20:00' }
const everyDay: CallingWindow = { days: ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'], start: '09:00', end: '20:00' }
const iso = (d: Date | null) => d?.toISOString() ?? null

t.test('New York around the spring switch (Sunday 8 March 2026, 02:00 EST -> 03:00 EDT)', async (t) => {
  const ny = ['America/New_York']
  // Friday 6 March, 21:00 EST: closed; the next weekday opening is Monday 9 March, 09:00 EDT.
  t.equal(iso(nextOpening(weekdays, ny, at('2026-03-07T02:00:00Z'))), '2026-03-09T13:00:00.000Z', 'Monday 09:00 EDT is 13:00Z')
  // Friday 6 March, 09:00 EST is 14:00Z: the same wall time an hour later in UTC than Monday's.
  t.equal(iso(nextOpening(weekdays, ny, at('2026-03-06T13:30:00Z'))), '2026-03-06T14:00:00.000Z')
  t.equal(isOpen(weekdays, ny, at('2026-03-09T12:59:59Z')), false, 'Monday 08:59:59 EDT: closed')
  t.equal(isOpen(weekdays, ny, at('2026-03-09T13:00:00Z')), true, 'Monday 09:00 EDT: open')
  t.equal(isOpen(weekdays, ny, at('2026-03-10T00:00:00Z')), false, 'Monday 20:00 EDT: closed again')
  // On the switch day itself, every day at 09:00 local.
  t.equal(iso(nextOpening(everyDay, ny, at('2026-03-08T05:00:00Z'))), '2026-03-08T13:00:00.000Z', 'Sunday 09:00 EDT')
})

t.test('New York around the autumn switch (Sunday 1 November 2026, 02:00 EDT -> 01:00 EST)', async (t) => {
  const ny = ['America/New_York']
  t.equal(iso(nextOpening(everyDay, ny, at('2026-11-01T01:00:00Z'))), '2026-11-01T14:00:00.000Z', 'from Saturday 21:00 EDT: Sunday 09:00 EST, 14:00Z')
  t.equal(iso(nextOpening(everyDay, ny, at('2026-10-31T12:00:00Z'))), '2026-10-31T13:00:00.000Z', 'Saturday 09:00 EDT is 13:00Z')
  t.equal(isOpen(everyDay, ny, at('2026-11-02T00:59:59Z')), true, 'Sunday 19:59:59 EST: open')
  t.equal(isOpen(everyDay, ny, at('2026-11-02T01:00:00Z')), false, 'Sunday 20:00 EST: closed')
})

t.test('London around both switches (29 March and 25 October 2026)', async (t) => {
  const london = ['Europe/London']
  t.equal(iso(nextOpening(everyDay, london, at('2026-03-29T00:00:00Z'))), '2026-03-29T08:00:00.000Z', 'Sunday 29 March 09:00 BST is 08:00Z')
  t.equal(iso(nextOpening(everyDay, london, at('2026-03-28T00:00:00Z'))), '2026-03-28T09:00:00.000Z', 'Saturday 28 March 09:00 GMT is 09:00Z')
  t.equal(iso(nextOpening(everyDay, london, at('2026-10-25T00:00:00Z'))), '2026-10-25T09:00:00.000Z', 'Sunday 25 October 09:00 GMT is 09:00Z')
  t.equal(iso(nextOpening(everyDay, london, at('2026-10-24T00:00:00Z'))), '2026-10-24T08:00:00.000Z', 'Saturday 24 October 09:00 BST is 08:00Z')
})

t.test('Sydney, which leaves summer time in April and enters it in October', async (t) => {
  const sydney = ['Australia/Sydney']
  t.equal(iso(nextOpening(everyDay, sydney, at('2026-04-04T12:00:00Z'))), '2026-04-04T23:00:00.000Z', 'Sunday 5 April 09:00 AEST (+10) is 23:00Z the day before')
  t.equal(iso(nextOpening(everyDay, sydney, at('2026-04-03T12:00:00Z'))), '2026-04-03T22:00:00.000Z', 'Saturday 4 April 09:00 AEDT (+11) is 22:00Z the day before')
  t.equal(iso(nextOpening(everyDay, sydney, at('2026-10-03T12:00:00Z'))), '2026-10-03T22:00:00.000Z', 'Sunday 4 October 09:00 AEDT is 22:00Z the day before')
})

t.test('a window opening in the hour that never happens opens when the clocks jump past it', async (t) => {
  const early: CallingWindow = { days: ['sun'], start: '02:30', end: '05:00' }
  // 8 March 2026 in New York: 02:00 EST is followed by 03:00 EDT (07:00Z); 02:30 never happens.
  t.equal(iso(nextOpening(early, ['America/New_York'], at('2026-03-08T00:00:00Z'))), '2026-03-08T07:00:00.000Z')
  t.equal(instantOfWallTime(Date.UTC(2026, 2, 8, 2, 30), 'America/New_York'), Date.parse('2026-03-08T07:00:00Z'))
  // 1 November 2026: 01:30 happens twice; the first one counts.
  t.equal(instantOfWallTime(Date.UTC(2026, 10, 1, 1, 30), 'America/New_York'), Date.parse('2026-11-01T05:30:00Z'))
})

t.test('several zones: only instants open in every one of them count', async (t) => {
  // A Western Australian prefix spans Perth (+8) and Adelaide (+10:30 in summer, +9:30 in winter).
  const zones = ['Australia/Perth', 'Australia/Adelaide']
  // 2 July 2026 (winter): Adelaide opens 09:00 = 23:30Z the day before, Perth 09:00 = 01:00Z;
  // together: from Perth's opening to Adelaide's closing (20:00 ACST = 10:30Z).
  t.equal(iso(nextOpening(everyDay, zones, at('2026-07-01T12:00:00Z'))), '2026-07-02T01:00:00.000Z')
  t.equal(isOpen(everyDay, zones, at('2026-07-02T10:29:59Z')), true)
  t.equal(isOpen(everyDay, zones, at('2026-07-02T10:30:00Z')), false, 'Adelaide has closed, though Perth is still open')
  // Zones whose windows never meet: no opening at all.
  const short: CallingWindow = { days: everyDay.days, start: '09:00', end: '10:00' }
  t.equal(nextOpening(short, ['Pacific/Honolulu', 'Asia/Tokyo'], at('2026-07-01T00:00:00Z')), null)
})

t.test("the window's own timezone replaces the number's zones", async (t) => {
  const w: CallingWindow = { ...everyDay, timezone: 'Asia/Riyadh' }
  t.equal(iso(nextOpening(w, ['America/New_York'], at('2026-07-01T00:00:00Z'))), '2026-07-01T06:00:00.000Z', '09:00 in Riyadh (+3)')
})

t.test('a window through midnight', async (t) => {
  const night = parseWindowSpec('fri 22:00-02:00')
  const utc = ['UTC']
  t.equal(isOpen(night, utc, at('2026-07-03T23:00:00Z')), true, 'Friday 23:00')
  t.equal(isOpen(night, utc, at('2026-07-04T01:59:59Z')), true, 'Saturday 01:59:59, still Friday night')
  t.equal(isOpen(night, utc, at('2026-07-04T02:00:00Z')), false)
  t.equal(iso(nextOpening(night, utc, at('2026-07-04T03:00:00Z'))), '2026-07-10T22:00:00.000Z', 'next Friday')
})

t.test('CALLING_WINDOW specs', async (t) => {
  t.same(parseWindowSpec('mon-fri 09:00-20:00'), weekdays)
  t.same(parseWindowSpec('sat,sun 10:00-14:30').days, ['sun', 'sat'])
  t.same(parseWindowSpec('fri-mon 08:00-21:00').days, ['sun', 'mon', 'fri', 'sat'], 'a range may wrap round the week')
  t.same(parseWindowSpec('mon 09:00:30-09:00:45'), { days: ['mon'], start: '09:00:30', end: '09:00:45' })
  for (const bad of ['', 'weekdays 9-5', 'mon-fri 9:00-20:00', 'mon-fri 09:00', 'mon-xyz 09:00-20:00', 'mon 25:00-26:00', 'mon 09:00-09:00']) {
    t.throws(() => parseWindowSpec(bad), `"${bad}" is refused`)
  }
})
