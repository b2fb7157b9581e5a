// An outside integrator's view of the API description: a client generated from the served
// /openapi.json with openapi-typescript and openapi-fetch compiles under `strict` (TypeScript
// 5, what openapi-typescript runs on) and a small script with it works against the API:
// create, get, list with `limit: 5`, cancel twice reading `callStatus` from the 409, a batch,
// and the do-not-call list. test/openapi-client/ is its own package; this installs it when
// it is missing.
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import t from 'tap'
import { listen } from '../src/platform/serve.ts'
import { createHarness } from './support/harness.ts'

const run = promisify(execFile)
const DIR = join(dirname(fileURLToPath(import.meta.url)), 'openapi-client')
const bin = (name: string) => join(DIR, 'node_modules', '.bin', name)

t.test('a client generated from /openapi.json compiles strictly and works', async (t) => {
  if (!existsSync(bin('openapi-typescript')) || !existsSync(bin('tsc'))) {
    await run('npm', ['ci', '--no-audit', '--no-fund', '--prefix', DIR], { timeout: 300_000 })
  }
  const h = await createHarness(t)
  const server = await listen(h.app, { host: '127.0.0.1', port: 0 })
  t.teardown(() => server.close())
  const base = `http://127.0.0.1:${server.port}`

  const document = await (await fetch(`${base}/openapi.json`)).text()
  await writeFile(join(DIR, 'openapi.json'), document)
  await run(bin('openapi-typescript'), ['openapi.json', '-o', 'schema.d.ts'], { cwd: DIR })

  const typecheck = await run(bin('tsc'), ['-p', 'tsconfig.json'], { cwd: DIR }).then(
    () => ({ ok: true, output: '' }),
    (err: { stdout?: string; stderr?: string }) => ({ ok: false, output: `${err.stdout ?? ''}${err.stderr ?? ''}` }),
  )
  t.ok(typecheck.ok, 'the client and its script type-check under strict')
  if (!typecheck.ok) t.comment(typecheck.output)

  const { stdout } = await run(process.execPath, ['client.ts'], { cwd: DIR, env: { ...process.env, BASE_URL: base } })
  const seen = JSON.parse(stdout.trim().split('\n').at(-1)!)
  t.equal(seen.created, 201, 'created')
  t.equal(seen.got, 'PENDING', 'read back')
  t.ok(seen.listed >= 1 && seen.listed <= 5, 'listed with limit 5')
  t.equal(seen.cancelled, 'CANCELLED')
  t.same(seen.again, { status: 409, code: 'call_not_pending', callStatus: 'CANCELLED', pending: true }, 'the second cancel: 409, callStatus read from the problem')
  t.same(seen.batch, { created: 1, rejected: 1 })
  t.equal(seen.suppressed, 201)
  t.same(seen.suppressions, ['+966501234569'])
})
