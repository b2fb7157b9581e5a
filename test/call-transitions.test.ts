// The call's transition table (src/domain/call.ts) is the one statement of which status may
// follow which. Every state change is a guarded UPDATE in the store; this reads each one's SQL
// and holds the two to each other: every move an UPDATE can make is in the table, and every
// move in the table is made by some UPDATE.
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { CALL_STATUSES, TRANSITIONS, canMove, type CallStatus } from '../src/domain/call.ts'

const SRC = join(dirname(fileURLToPath(import.meta.url)), '..', 'src')
const STORE = ['store/transitions.ts', 'store/suppressions.ts', 'store/calls.ts']

const statusesIn = (text: string): CallStatus[] => CALL_STATUSES.filter((s) => new RegExp(`'${s}'`).test(text))

/** Every UPDATE of calls that sets a status: the statuses it leaves and the one it sets. */
function movesInStore(): Array<{ where: string; from: CallStatus[]; to: CallStatus[] }> {
  return STORE.flatMap((file) => {
    const text = readFileSync(join(SRC, file), 'utf8')
    // To RETURNING or the template's end; a nested template (`${tx`…`}`) ends in a brace.
    return [...text.matchAll(/UPDATE calls\b[\s\S]*?(?=\bRETURNING\b|`(?:\s*$|\)|,))/gm)].flatMap((m) => {
      const sql = m[0]
      const set = /\bSET\b([\s\S]*?)\bWHERE\b/.exec(sql)?.[1] ?? ''
      const target = /\bstatus\s*=\s*('(\w+)'|\$\{[^}]+\})/.exec(set)
      if (!target) return []
      // A status given as a parameter (the provider's final report) is COMPLETED or FAILED.
      const to = target[2] ? [target[2] as CallStatus] : (['COMPLETED', 'FAILED'] as CallStatus[])
      const where = sql.slice(sql.search(/\bWHERE\b/))
      // What NOT EXISTS names is a condition on other calls (the phone's), not a status this one leaves.
      const from = statusesIn(where.replace(/NOT EXISTS\s*\([^()]*\)/g, ''))
      return [{ where: `${file}: ${sql.slice(0, 60).replace(/\s+/g, ' ')}…`, from, to }]
    })
  })
}

t.test('every status change the store makes is in the transition table', async (t) => {
  const moves = movesInStore()
  t.ok(moves.length >= 11, `${moves.length} guarded UPDATEs that set a status`)
  for (const move of moves) {
    t.ok(move.from.length > 0, `${move.where} is guarded by the status it leaves`)
    for (const from of move.from) for (const to of move.to) t.ok(canMove(from, to), `${from} -> ${to} (${move.where})`)
  }
})

t.test('every move in the table is made by some UPDATE', async (t) => {
  const made = new Set(movesInStore().flatMap((m) => m.from.flatMap((from) => m.to.map((to) => `${from} -> ${to}`))))
  for (const move of TRANSITIONS) t.ok(made.has(`${move.from} -> ${move.to}`), `${move.from} -> ${move.to}: ${move.when}`)
})

t.test('final statuses stay final but for the table’s exceptions', async (t) => {
  t.notOk(canMove('COMPLETED', 'PENDING'), 'a completed call is never dialed again')
  t.notOk(canMove('CANCELLED', 'PENDING'), 'a cancelled call stays cancelled')
  t.notOk(canMove('SUPPRESSED', 'IN_PROGRESS'))
  t.notOk(canMove('PENDING', 'COMPLETED'), 'nothing completes without being dialed')
  t.ok(canMove('FAILED', 'COMPLETED'), 'the provider’s later report corrects a FAILED we declared')
})
