import { readFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import * as v from 'valibot'

// The files of the /docs page, served from the swagger-ui-dist package where npm put it, so
// the page needs no CDN (the network may be closed) and nothing is copied into this repository.

const TYPES = {
  'swagger-ui-bundle.js': 'text/javascript; charset=utf-8',
  'swagger-ui.css': 'text/css; charset=utf-8',
} as const

export type DocsAssetName = keyof typeof TYPES

export const DocsAsset = v.picklist(Object.keys(TYPES) as DocsAssetName[], 'is not a file of the documentation page')

const packageDir = dirname(createRequire(import.meta.url).resolve('swagger-ui-dist/package.json'))
const loaded = new Map<DocsAssetName, Promise<Buffer>>()

/** The file's bytes (read once, then kept) and its content type. */
export async function readDocsAsset(name: DocsAssetName): Promise<{ body: Buffer; contentType: string }> {
  let body = loaded.get(name)
  if (!body) {
    body = readFile(join(packageDir, name))
    // A failed read is not kept, so the next request tries again.
    body.catch(() => loaded.delete(name))
    loaded.set(name, body)
  }
  return { body: await body, contentType: TYPES[name] }
}
