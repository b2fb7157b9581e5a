// The layers of src/ (docs/architecture.md), checked on the import graph: every import points
// down or stays in its own layer, no module is part of a circle, and the domain does no I/O.
import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join, normalize, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'

const SRC = join(dirname(fileURLToPath(import.meta.url)), '..', 'src')

/** Each layer, bottom first, with the layers it may import (besides itself). */
export const LAYERS: Array<{ name: string; paths: string[]; may: string[] }> = [
  { name: 'config', paths: ['config.ts'], may: [] },
  { name: 'platform', paths: ['platform/'], may: ['config'] },
  { name: 'domain', paths: ['domain/'], may: [] },
  { name: 'store', paths: ['store/'], may: ['domain', 'platform', 'config'] },
  { name: 'provider', paths: ['provider/'], may: ['domain', 'platform'] },
  { name: 'services', paths: ['services/'], may: ['domain', 'store', 'provider', 'platform'] },
  { name: 'edges', paths: ['http/', 'worker/', 'simulator/'], may: ['services', 'domain', 'store', 'provider', 'platform', 'config'] },
  { name: 'main', paths: ['runtime.ts', 'cli.ts', 'settings.ts'], may: ['edges', 'services', 'domain', 'store', 'provider', 'platform', 'config'] },
]

/** Within services, a service may use those below it in this list, never one above. */
export const SERVICES = ['services/events/', 'services/calls/', 'services/callbacks/', 'services/dispatch/']

/** What the domain may import from outside the project: no database, network or file system. */
const DOMAIN_PACKAGES = new Set(['node:crypto'])

export function sourceFiles(dir = SRC): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sourceFiles(join(dir, e.name)) : e.name.endsWith('.ts') ? [relative(SRC, join(dir, e.name))] : [],
  )
}

const IMPORT = /(?:^|\n)\s*(?:import|export)\s+(?:type\s+)?(?:[^'";]*?\s+from\s+)?['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g

/** Every import of every file under src/: `to` is a path under src/ or a package name. */
export function importGraph(files = sourceFiles()): Array<{ from: string; to: string; local: boolean }> {
  return files.flatMap((from) => {
    const text = readFileSync(join(SRC, from), 'utf8')
    return [...text.matchAll(IMPORT)].map((m) => {
      const spec = (m[1] ?? m[2])!
      const local = spec.startsWith('.')
      return { from, to: local ? normalize(join(dirname(from), spec)) : spec, local }
    })
  })
}

export const layerOf = (file: string) => LAYERS.find((l) => l.paths.some((p) => (p.endsWith('/') ? file.startsWith(p) : file === p)))

const edges = importGraph()
const local = edges.filter((e) => e.local)

t.test('every file under src/ belongs to a layer', async (t) => {
  t.same(sourceFiles().filter((f) => !layerOf(f)), [])
})

t.test('every import points down or stays in its layer', async (t) => {
  const against = local.flatMap(({ from, to }) => {
    const a = layerOf(from)!
    const b = layerOf(to)
    if (!b) return [`${from} -> ${to}: not a file of any layer`]
    return a === b || a.may.includes(b.name) ? [] : [`${from} (${a.name}) -> ${to} (${b.name})`]
  })
  t.same(against, [])
})

t.test('services use only the services below them', async (t) => {
  const rank = (f: string) => SERVICES.findIndex((p) => f.startsWith(p))
  const against = local.filter(({ from, to }) => rank(from) >= 0 && rank(to) > rank(from)).map(({ from, to }) => `${from} -> ${to}`)
  t.same(against, [])
})

t.test('the domain does no I/O: it imports no package but hashing', async (t) => {
  const against = edges.filter((e) => !e.local && layerOf(e.from)?.name === 'domain' && !DOMAIN_PACKAGES.has(e.to))
  t.same(against.map((e) => `${e.from} -> ${e.to}`), [])
})

t.test('no module is part of a circle', async (t) => {
  const next = new Map<string, string[]>()
  for (const { from, to } of local) next.set(from, [...(next.get(from) ?? []), to])
  // Tarjan's strongly connected components: any component of more than one file is a circle.
  let index = 0
  const seen = new Map<string, { index: number; low: number; onStack: boolean }>()
  const stack: string[] = []
  const circles: string[][] = []
  const visit = (v: string) => {
    const s = { index, low: index, onStack: true }
    index++
    seen.set(v, s)
    stack.push(v)
    for (const w of next.get(v) ?? []) {
      const ws = seen.get(w)
      if (!ws) {
        visit(w)
        s.low = Math.min(s.low, seen.get(w)!.low)
      } else if (ws.onStack) s.low = Math.min(s.low, ws.index)
    }
    if (s.low === s.index) {
      const component: string[] = []
      let w: string
      do {
        w = stack.pop()!
        seen.get(w)!.onStack = false
        component.push(w)
      } while (w !== v)
      if (component.length > 1) circles.push(component.sort())
    }
  }
  for (const f of sourceFiles()) if (!seen.has(f)) visit(f)
  t.same(circles, [])
})

t.test('the check itself catches an arrow back up and a circle', async (t) => {
  // A guard against a check that cannot fail: the rules applied to made-up arrows.
  const store = layerOf('store/calls.ts')!
  t.notOk(store.may.includes(layerOf('services/calls/create.ts')!.name), 'store -> services is refused')
  t.notOk(layerOf('domain/call.ts')!.may.includes('store'), 'domain -> store is refused')
  t.notOk(layerOf('config.ts')!.may.includes('domain'), 'config -> domain is refused')
  t.ok(layerOf('http/app.ts')!.may.includes('services'), 'edges -> services is allowed')
})
