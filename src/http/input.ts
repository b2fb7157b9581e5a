// Reading client JSON without losing or changing anything, and refusing what Postgres cannot
// store. JSON.parse alone would turn 1e400 into Infinity (stored as null) and 2^64 into a
// nearby double; a text column cannot hold NUL, and a lone UTF-16 surrogate becomes U+FFFD on
// its way into UTF-8. Each of those is a 400 that names the field, never a silent change.

/** Metadata bounds (docs/api.md): its JSON size, its nesting, and its keys and array items in all. */
export const MAX_METADATA_BYTES = 16 * 1024
export const MAX_METADATA_DEPTH = 10
export const MAX_METADATA_ENTRIES = 500

/** A number literal that a JavaScript number cannot carry exactly; left for validation to refuse. */
export class InexactNumber {
  readonly source: string
  constructor(source: string) {
    this.source = source
  }
}

/** The digits and exponent of a JSON number literal, so two spellings of one value compare equal. */
function canonical(literal: string): string | undefined {
  const m = /^(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/.exec(literal)
  if (!m) return undefined
  const digits = (m[2]! + (m[3] ?? '')).replace(/^0+/, '')
  if (digits === '') return '0'
  const significant = digits.replace(/0+$/, '')
  const exponent = Number(m[4] ?? 0) - (m[3]?.length ?? 0) + (digits.length - significant.length)
  return `${m[1]}${significant}e${exponent}`
}

/** Where `value` first nests deeper than `max` levels (the value itself is level 1), if it does. */
export function tooDeepAt(value: unknown, max: number): Array<string | number> | undefined {
  const stack: Array<{ node: unknown; path: Array<string | number>; depth: number }> = [{ node: value, path: [], depth: 1 }]
  while (stack.length) {
    const { node, path, depth } = stack.pop()!
    if (typeof node !== 'object' || node === null) continue
    if (depth > max) return path
    const children: Array<[string | number, unknown]> = Array.isArray(node) ? node.map((v, i) => [i, v]) : Object.entries(node)
    for (const [key, child] of children) stack.push({ node: child, path: [...path, key], depth: depth + 1 })
  }
  return undefined
}

export class TooDeep extends Error {
  readonly path: Array<string | number>
  constructor(path: Array<string | number>) {
    super('nested too deeply')
    this.path = path
  }
}

/**
 * JSON.parse that keeps every key (a reviver defines properties, so "__proto__" stays a key)
 * and marks every number whose value a double would change (the reviver's source text, Node
 * >= 22). A reviver recurses, so a plain parse (which does not) first refuses nesting deeper
 * than `maxDepth`, with TooDeep naming where.
 */
export function parseJson(text: string, maxDepth: number): unknown {
  const deep = tooDeepAt(JSON.parse(text), maxDepth)
  if (deep) throw new TooDeep(deep)
  return JSON.parse(text, (_key: string, value: unknown, ...rest: unknown[]) => {
    const source = (rest[0] as { source?: string } | undefined)?.source
    if (typeof value === 'number' && source !== undefined) {
      if (!Number.isFinite(value) || canonical(source) !== canonical(JSON.stringify(value))) return new InexactNumber(source)
    }
    return value
  })
}

/** What in `s` Postgres cannot store as text or in jsonb as it is, if anything. */
export function textFault(s: string): string | undefined {
  if (s.includes('\u0000')) return 'NUL (\\u0000) characters'
  if (!s.isWellFormed()) return 'unpaired UTF-16 surrogates'
  return undefined
}

export const isJsonObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof InexactNumber)

export interface InputProblem {
  /** Below the metadata object itself: keys and array indexes. */
  path: Array<string | number>
  message: string
}

/**
 * Everything wrong with a metadata value, walked without recursion (so nesting thousands deep
 * costs a loop, not the stack): its shape, depth, number of entries, strings and numbers, then
 * its size once the walk has shown it is small enough to serialise.
 */
export function metadataProblems(value: unknown): InputProblem[] {
  if (!isJsonObject(value)) return [{ path: [], message: 'must be a JSON object' }]
  const problems: InputProblem[] = []
  const stack: Array<{ node: unknown; path: Array<string | number>; depth: number }> = [{ node: value, path: [], depth: 1 }]
  let entries = 0
  while (stack.length) {
    const { node, path, depth } = stack.pop()!
    if (node instanceof InexactNumber) {
      problems.push({ path, message: `is ${node.source}, which cannot be kept exactly (beyond a double's range or precision); send it as a string` })
      continue
    }
    if (typeof node === 'string') {
      const fault = textFault(node)
      if (fault) problems.push({ path, message: `must not contain ${fault}` })
      continue
    }
    if (typeof node !== 'object' || node === null) continue
    if (depth > MAX_METADATA_DEPTH) {
      return [{ path: [], message: `must be at most ${MAX_METADATA_DEPTH} levels deep` }]
    }
    const children: Array<[string | number, unknown]> = Array.isArray(node) ? node.map((v, i) => [i, v]) : Object.entries(node)
    entries += children.length
    if (entries > MAX_METADATA_ENTRIES) {
      return [{ path: [], message: `must have at most ${MAX_METADATA_ENTRIES} keys and array items in all` }]
    }
    for (const [key, child] of children) {
      if (typeof key === 'string') {
        const fault = textFault(key)
        if (fault) problems.push({ path, message: `has a key containing ${fault}` })
      }
      stack.push({ node: child, path: [...path, key], depth: depth + 1 })
    }
  }
  if (problems.length === 0 && Buffer.byteLength(JSON.stringify(value)) > MAX_METADATA_BYTES) {
    problems.push({ path: [], message: `must be at most ${MAX_METADATA_BYTES} bytes as JSON` })
  }
  return problems
}
