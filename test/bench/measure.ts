import { readFileSync } from 'node:fs'

// The arithmetic every scenario shares: latency summaries, rates, and what a child process
// cost (read from /proc, so it sees the process itself and not the shell that started it).

export interface Summary {
  n: number
  median: number
  p99: number
  max: number
}

/** Nearest-rank percentile of an ascending array. */
export const percentile = (sorted: readonly number[], p: number): number =>
  sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? NaN

export function summarize(samples: readonly number[]): Summary {
  const sorted = [...samples].sort((a, b) => a - b)
  return { n: sorted.length, median: percentile(sorted, 50), p99: percentile(sorted, 99), max: sorted.at(-1) ?? NaN }
}

export const round = (x: number, digits = 2): number => (Number.isFinite(x) ? Math.round(x * 10 ** digits) / 10 ** digits : x)

/** Runs `count` tasks with `concurrency` of them under way at once; returns each one's latency in ms and the wall time. */
export async function closedLoop(count: number, concurrency: number, task: (i: number) => Promise<void>): Promise<{ latencies: number[]; wallMs: number }> {
  const latencies: number[] = []
  let next = 0
  const t0 = performance.now()
  await Promise.all(
    Array.from({ length: Math.min(concurrency, count) }, async () => {
      while (next < count) {
        const i = next++
        const start = performance.now()
        await task(i)
        latencies.push(performance.now() - start)
      }
    }),
  )
  return { latencies, wallMs: performance.now() - t0 }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

export interface ProcessUsage {
  /** Peak resident set (VmHWM), MiB. */
  peakRssMb: number
  /** User plus system CPU time so far, seconds. */
  cpuSeconds: number
}

// Linux's USER_HZ, the unit of utime and stime in /proc/<pid>/stat: 100 on every mainstream
// architecture (the kernel fixes it for user space whatever its internal HZ).
const TICKS_PER_SECOND = 100

/** What process `pid` has used so far, or undefined once it is gone. */
export function processUsage(pid: number): ProcessUsage | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8')
    const hwm = /^VmHWM:\s+(\d+) kB/m.exec(status)
    // The command name (field 2) may hold spaces and parentheses: fields are counted after its last ')'.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const ticks = Number(fields[11]) + Number(fields[12]) // utime, stime: fields 14 and 15
    return { peakRssMb: round(Number(hwm?.[1] ?? NaN) / 1024, 1), cpuSeconds: ticks / TICKS_PER_SECOND }
  } catch {
    return undefined
  }
}

/** This process: its peak RSS and CPU time (Node's own accounting, same units). */
export function ownUsage(): ProcessUsage {
  const u = process.resourceUsage()
  return { peakRssMb: round(u.maxRSS / 1024, 1), cpuSeconds: (u.userCPUTime + u.systemCPUTime) / 1e6 }
}
