import type { Hono } from 'hono'
import { HttpProblem } from '../problem.ts'
import { readDocsAsset, DocsAsset } from './docs-assets.ts'
import { buildOpenApiDocument } from './document.ts'
import * as v from 'valibot'

// GET /openapi.json and the /docs page. Both are public even when API_TOKENS is set: they hold
// no data, only the shape of the API, which a client needs before it has a token, and the
// docs page loads the description with no way to send one. Its "Authorize" button then sends
// the token with the requests a person tries.

// Relative URLs, so the page works behind a proxy that mounts the API under a prefix.
const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>call-orchestrator API</title>
<link rel="stylesheet" href="docs/assets/swagger-ui.css">
</head>
<body>
<div id="docs"></div>
<script src="docs/assets/swagger-ui-bundle.js"></script>
<script>
// validatorUrl: null, or Swagger UI sends the description to an online validator.
SwaggerUIBundle({ url: 'openapi.json', dom_id: '#docs', validatorUrl: null, deepLinking: true })
</script>
</body>
</html>
`

export function openApiRoutes(app: Hono): void {
  let document: string | undefined
  app.get('/openapi.json', (c) => {
    document ??= JSON.stringify(buildOpenApiDocument())
    return c.body(document, 200, { 'Content-Type': 'application/json' })
  })
  // Never inside another site's frame: its "Authorize" button takes a token.
  app.get('/docs', (c) => c.html(PAGE, 200, { 'Content-Security-Policy': "frame-ancestors 'none'", 'X-Frame-Options': 'DENY' }))
  app.get('/docs/assets/:file', async (c) => {
    const file = c.req.param('file')
    if (!v.is(DocsAsset, file)) throw new HttpProblem(404, 'route_not_found', `No route ${c.req.method} ${c.req.path}.`)
    const { body, contentType } = await readDocsAsset(file)
    return c.body(new Uint8Array(body), 200, { 'Content-Type': contentType, 'Cache-Control': 'public, max-age=3600' })
  })
}
