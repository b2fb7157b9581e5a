import pg from 'pg'
import { WAKE_CHANNEL } from './notify.ts'
import { failureStreak, type Logger } from '../platform/log.ts'

// LISTEN on the wake channel over a connection of its own that comes back by itself.
// postgres.js's sql.listen re-listens once when its connection closes and gives up silently if
// the server is still down at that moment (a restart, a failover), leaving the worker deaf to
// every NOTIFY. Here a lost connection is retried with backoff for as long as the process runs,
// and every (re)connection wakes the worker, since notifications sent meanwhile were lost.

export class WakeListener {
  readonly #url: string
  readonly #channel: string
  readonly #onWake: (payload: string) => void
  readonly #log: Logger
  #client: pg.Client | undefined
  #stopped = false
  #retryTimer: NodeJS.Timeout | undefined
  /** Connections lost since it last listened: counted, and logged when they are news. */
  readonly #failures = failureStreak(20)
  #connected: Promise<void> | undefined
  #resolveStart: (() => void) | undefined

  /** `onWake` gets the notification's payload ('' for a wake-up on reconnection). */
  constructor(url: string, onWake: (payload: string) => void, log: Logger, channel = WAKE_CHANNEL) {
    this.#url = url
    this.#channel = channel
    this.#onWake = onWake
    this.#log = log
  }

  /** Resolves once listening for the first time; later losses are repaired in the background. */
  start(): Promise<void> {
    this.#connected ??= new Promise((resolve) => {
      this.#resolveStart = resolve
      this.#connect(resolve)
    })
    return this.#connected
  }

  async stop(): Promise<void> {
    this.#stopped = true
    clearTimeout(this.#retryTimer)
    this.#resolveStart?.()
    const client = this.#client
    this.#client = undefined
    await client?.end().catch(() => {})
  }

  #connect(onListening: () => void): void {
    if (this.#stopped) return onListening()
    const client = new pg.Client({ connectionString: this.#url, application_name: 'call-orchestrator/listen', keepAlive: true })
    let lost = false
    const onLost = (err?: Error) => {
      if (lost) return
      lost = true
      if (this.#client === client) this.#client = undefined
      client.end().catch(() => {})
      if (this.#stopped) return
      const tell = this.#failures.failed(err)
      const delay = Math.min(5_000, 100 * 2 ** Math.min(this.#failures.count, 6))
      if (tell) this.#log.warn('wake channel lost; listening again', { err, retryInMs: delay, failures: this.#failures.count })
      this.#retryTimer = setTimeout(() => this.#connect(onListening), delay)
    }
    client.on('error', onLost)
    client.on('end', () => onLost())
    client.on('notification', (message) => {
      if (message.channel === this.#channel) this.#onWake(message.payload ?? '')
    })
    client
      .connect()
      .then(() => client.query(`LISTEN ${this.#channel}`))
      .then(() => {
        if (lost) return
        if (this.#failures.count > 0) this.#log.info('wake channel listening again')
        this.#failures.reset()
        this.#client = client
        onListening()
        this.#onWake('')
      })
      .catch(onLost)
  }
}
