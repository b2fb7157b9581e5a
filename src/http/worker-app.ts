import { Hono } from 'hono'
import { exposition } from '../platform/metrics.ts'
import { HttpProblem, problemResponse } from './problem.ts'

// What a worker-only process serves on METRICS_PORT: its own metrics for Prometheus to scrape,
// and a liveness probe for the orchestrator it runs under. Nothing here changes anything, and
// nothing reads the database: the API's /metrics carries what the database holds.
export function createWorkerApp(): Hono {
  const app = new Hono()
  app.get('/healthz', (c) => c.json({ status: 'ok' }))
  app.get('/metrics', async (c) => {
    const { body, contentType } = await exposition()
    return c.body(body, 200, { 'Content-Type': contentType })
  })
  app.notFound((c) => problemResponse(c, new HttpProblem(404, 'route_not_found', `No route ${c.req.method} ${c.req.path}; a worker serves GET /metrics and GET /healthz.`)))
  return app
}
