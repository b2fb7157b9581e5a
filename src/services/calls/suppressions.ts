import { emitCallEvents } from '../events/outbox.ts'
import { deleteJob } from './jobs.ts'
import { DomainError } from '../../domain/errors.ts'
import { lockClaimsShared } from '../../store/locks.ts'
import type { Queues } from '../../store/queues.ts'
import type { Sql } from '../../store/sql.ts'
import * as db from '../../store/suppressions.ts'
import { silentLogger, type Logger } from '../../platform/log.ts'
import { observeEnded } from './observe.ts'

// The do-not-call list, as the API offers it. Adding a number ends its PENDING calls at once,
// in the same transaction and under the shared claim lock: a claim that started before has
// dialed already (the number was not listed yet), one that starts after sees the number
// listed. Claims check the list too, so no call slips between the two.

export type Suppression = db.SuppressionRow

export interface SuppressionService {
  add(phone: string, input: { reason?: string | undefined; source?: string | undefined }): Promise<{ suppression: Suppression; created: boolean; callsSuppressed: number }>
  /** Every entry added or updated in one transaction; for each number, whether it was new. */
  import(entries: Array<{ phone: string; reason?: string | undefined }>, source: string | undefined): Promise<{ added: Set<string>; callsSuppressed: number }>
  remove(phone: string): Promise<void>
  get(phone: string): Promise<Suppression>
  list(q: { limit: number; after?: string | undefined }): Promise<Suppression[]>
}

const notFound = (phone: string) => new DomainError('suppression_not_found', `${phone} is not on the do-not-call list.`, { phone })

export function createSuppressionService(deps: { sql: Sql; queue: Queues; log?: Logger | undefined }): SuppressionService {
  const { sql, queue } = deps
  const log = deps.log ?? silentLogger

  const addAll = (entries: Array<{ phone: string; reason: string | null }>, source: string) =>
    sql.begin(async (tx) => {
      await lockClaimsShared(tx)
      const result = await db.addSuppressions(tx, entries, source)
      const ended = await db.suppressPendingCalls(tx, entries.map((e) => e.phone))
      for (const call of ended) await deleteJob(tx, queue.calls, call)
      await emitCallEvents(tx, queue.deliveries, 'call.suppressed', ended)
      return { result, ended }
    }).then(({ result, ended }) => {
      observeEnded(log, ended, 'SUPPRESSED', { source })
      return { ...result, callsSuppressed: ended.length }
    })

  return {
    async add(phone, input) {
      const { added, rows, callsSuppressed } = await addAll([{ phone, reason: input.reason ?? null }], input.source ?? 'api')
      return { suppression: rows[0]!, created: added.length > 0, callsSuppressed }
    },

    async import(entries, source) {
      // One entry per number: the last reason given wins, as a repeated PUT would.
      const unique = [...new Map(entries.map((e) => [e.phone, { phone: e.phone, reason: e.reason ?? null }])).values()]
      if (unique.length === 0) return { added: new Set<string>(), callsSuppressed: 0 }
      const { added, callsSuppressed } = await addAll(unique, source ?? 'import')
      return { added: new Set(added), callsSuppressed }
    },

    async remove(phone) {
      const removed = await sql.begin((tx) => db.removeSuppression(tx, phone))
      if (!removed) throw notFound(phone)
    },

    async get(phone) {
      const row = await db.getSuppression(sql, phone)
      if (!row) throw notFound(phone)
      return row
    },

    async list(q) {
      if (q.after && !(await db.getSuppression(sql, q.after))) {
        throw new DomainError('invalid_cursor', 'The cursor does not point at a listed number; start again without it.')
      }
      return db.listSuppressions(sql, q)
    },
  }
}
