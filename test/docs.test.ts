// The README is the entry and docs/ the depth: no reference anywhere in the project names a
// file that does not exist, a link that leads nowhere, or a README section that is not there.
import { execFileSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { dirname, join, normalize } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
const tracked = execFileSync('git', ['ls-files', '--cached', '--others', '--exclude-standard'], { cwd: ROOT, encoding: 'utf8' })
  .split('\n')
  .filter((f) => f && existsSync(join(ROOT, f)))
const texts = tracked.filter((f) => /\.(ts|md|sql|sh|ya?ml)$|^bin\/|^\.env\.example$|^Dockerfile$|^\.ci\//.test(f) && !f.startsWith('test/artifacts/'))
const read = (f: string) => readFileSync(join(ROOT, f), 'utf8')

/** Paths of the project's own files as written in prose and comments: src/…, test/…, sql/…, docs/…, bin/…. */
const PATH = /(?<![\w./-])((?:src|test|sql|docs|bin)\/[\w./-]*\w)/g
/** Written at run time (test/artifacts), URL paths (docs/assets), and usage examples. */
const NOT_FILES = [/^test\/artifacts/, /^docs\/assets/, /^test\/[a-z]\.test\.ts$/]
/** A migration named by its number alone: sql/011. */
const migration = (path: string) => /^sql\/\d{3}$/.test(path) && tracked.some((f) => f.startsWith(`${path}_`))

t.test('every path a file names exists', async (t) => {
  const missing: string[] = []
  for (const file of texts) {
    for (const m of read(file).matchAll(PATH)) {
      const path = m[1]!.replace(/[.]$/, '')
      if (NOT_FILES.some((re) => re.test(path)) || migration(path)) continue
      // A folder, a file, or a file named without its extension in prose (src/http/openapi).
      if (!existsSync(join(ROOT, path))) missing.push(`${file}: ${path}`)
    }
  }
  t.same(missing, [])
})

t.test('every Markdown file named exists', async (t) => {
  const missing: string[] = []
  for (const file of texts) {
    for (const m of read(file).matchAll(/(?<![\w/.-])([A-Z][A-Z_-]*\.md)\b/g)) {
      if (!existsSync(join(ROOT, m[1]!))) missing.push(`${file}: ${m[1]}`)
    }
  }
  t.same(missing, [])
})

t.test('every relative link in the README and docs/ leads to a file and a heading there', async (t) => {
  const slug = (heading: string) =>
    heading
      .toLowerCase()
      .replace(/[`*_]/g, '')
      .replace(/[^\p{L}\p{N} -]/gu, '')
      .replace(/ /g, '-')
  const anchors = (file: string) => new Set([...read(file).matchAll(/^#+ (.+)$/gm)].map((m) => slug(m[1]!)))
  const broken: string[] = []
  for (const file of tracked.filter((f) => f === 'README.md' || (f.startsWith('docs/') && f.endsWith('.md')))) {
    for (const m of read(file).matchAll(/\]\(([^)\s]+)\)/g)) {
      const href = m[1]!
      if (/^[a-z]+:/.test(href)) continue
      const [path, anchor] = href.split('#') as [string, string | undefined]
      const target = path === '' ? file : normalize(join(dirname(file), path))
      if (!existsSync(join(ROOT, target))) broken.push(`${file}: ${href}`)
      else if (anchor && target.endsWith('.md') && !anchors(target).has(anchor)) broken.push(`${file}: ${href} (no such heading)`)
    }
  }
  t.same(broken, [])
})

t.test('a README section named anywhere is one the README has', async (t) => {
  const headings = new Set([...read('README.md').matchAll(/^#+ (.+)$/gm)].map((m) => m[1]!.trim()))
  const stale: string[] = []
  for (const file of texts.filter((f) => f !== 'test/docs.test.ts')) {
    for (const m of read(file).matchAll(/README(?:'s)? "([^"]+)"/g)) {
      if (!headings.has(m[1]!)) stale.push(`${file}: README "${m[1]}"`)
    }
  }
  t.same(stale, [])
})

t.test('the README is the entry: at most 300 lines, with a map of docs/', async (t) => {
  const readme = read('README.md')
  t.ok(readme.split('\n').length <= 300, `${readme.split('\n').length} lines`)
  const docs = tracked.filter((f) => f.startsWith('docs/') && f.endsWith('.md'))
  t.same(docs.filter((d) => !readme.includes(`](${d})`)), [], 'every document in docs/ is linked from the README')
})
