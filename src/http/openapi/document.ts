import { readFileSync } from 'node:fs'
import { toJsonSchema, toJsonSchemaDefs, type ConversionConfig, type JsonSchema } from '@valibot/to-json-schema'
import type { GenericSchema } from 'valibot'
import * as s from '../schemas.ts'
import { needsToken, OPERATIONS, type Answer, type Operation } from './operations.ts'
import { problemExamples, type ProblemCode } from '../problem.ts'
import * as r from './responses.ts'

// The OpenAPI 3.1 description of the API, built from the operations table and the valibot
// schemas it names. OpenAPI 3.1 schemas are JSON Schema 2020-12, which is what
// @valibot/to-json-schema writes, so the schemas go in as converted.

/** Named schemas, referenced as #/components/schemas/<name> wherever they appear. */
const NAMED: Record<string, GenericSchema> = {
  CreateCallBody: s.CreateCallBody,
  UpdateCallBody: s.UpdateCallBody,
  BatchBody: s.BatchBody,
  BatchItem: s.BatchItem,
  CallingWindowInput: s.CallingWindowSchema,
  SuppressionBody: s.SuppressionBody,
  SuppressionImport: s.SuppressionImport,
  DispatchSettingsBody: s.DispatchSettingsBody,
  EndpointBody: s.EndpointBody,
  ReplayBody: s.ReplayBody,
  ...r,
}

/**
 * Checks valibot cannot say in JSON Schema (a real calendar day, code points counted as
 * Postgres counts them) go into the description in their own words, the messages a client
 * gets when one fails; anything else that does not convert is an error, so a schema never
 * quietly loses a rule on its way into the document.
 */
const conversion: ConversionConfig = {
  target: 'draft-2020-12',
  typeMode: 'input',
  errorMode: 'throw',
  definitions: NAMED,
  overrideRef: ({ referenceId }) => `#/components/schemas/${referenceId}`,
  // A query parameter parsed from text but described as an integer (v.metadata in schemas.ts)
  // keeps its default as the number a client would send, not the text it is parsed from.
  overrideSchema: ({ jsonSchema }) =>
    jsonSchema.type === 'integer' && typeof jsonSchema.default === 'string' ? { ...jsonSchema, default: Number(jsonSchema.default) } : undefined,
  overrideAction: ({ valibotAction, jsonSchema }) => {
    if (valibotAction.type !== 'check' && valibotAction.type !== 'raw_check') return undefined
    const message = (valibotAction as { message?: unknown }).message
    if (typeof message !== 'string') return jsonSchema
    return { ...jsonSchema, description: jsonSchema.description ? `${jsonSchema.description}; ${message}` : `Must satisfy: ${message}` }
  },
}

/** A schema for use in place: named schemas are references, and their definitions live in components.schemas, not repeated here. */
const jsonSchema = (schema: GenericSchema): JsonSchema => {
  const { $schema: _, $defs: __, ...rest } = toJsonSchema(schema, conversion)
  return rest
}

const VERSION = (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version

const METHODS = ['get', 'put', 'post', 'delete', 'patch'] as const

/** Hono's /calls/:id as OpenAPI's /calls/{id}. */
export const openApiPath = (path: string) => path.replace(/:(\w+)/g, '{$1}')

const problemContent = (codes: ProblemCode[]) => ({
  'application/problem+json': {
    schema: { $ref: '#/components/schemas/Problem' },
    examples: Object.fromEntries(codes.map((code) => [code, { value: problemExamples[code] ?? { code } }])),
  },
})

const HEADERS = {
  Location: { description: 'Where the created resource is read.', schema: { type: 'string' } },
  'Idempotent-Replayed': { description: '"true" when this answers an earlier request with the same Idempotency-Key.', schema: { type: 'string', const: 'true' } },
  'Retry-After': { description: 'Seconds to wait before trying again.', schema: { type: 'integer' } },
  'WWW-Authenticate': { description: 'Bearer realm="call-orchestrator"', schema: { type: 'string' } },
  Allow: { description: 'The methods the path has.', schema: { type: 'string' } },
}

/** The problems an operation can answer with: its own, and those every route of its kind shares. */
export function problemsOf(op: Operation): Array<[number, ProblemCode]> {
  const problems: Array<[number, ProblemCode]> = []
  const takesInput = op.body || op.query || op.pathParams || op.idempotent
  if (takesInput && op.access !== 'provider') problems.push([400, 'validation_failed'])
  if (op.body) {
    problems.push([400, 'malformed_json'], [400, 'body_incomplete'], [413, 'body_too_large'])
    if (op.access === 'provider') problems.push([400, 'validation_failed'])
    else problems.push([415, 'unsupported_media_type'])
  }
  if (needsToken(op)) problems.push([401, 'unauthorized'])
  if (op.method !== 'get' && op.access !== 'provider') problems.push([403, 'cross_origin'])
  if (op.access === 'admin' || op.access === 'console') problems.push([403, 'read_only_token'])
  problems.push(...(op.problems ?? []))
  if (op.path !== '/healthz' && op.path !== '/readyz') problems.push([403, 'host_not_allowed'])
  if (op.access !== 'public') problems.push([503, 'database_unavailable'])
  problems.push([500, 'internal_error'])
  return problems
}

function responsesOf(op: Operation) {
  const responses: Record<string, unknown> = {}
  for (const [status, answer] of Object.entries(op.answers) as Array<[string, Answer]>) {
    const content = answer.schema
      ? { 'application/json': { schema: jsonSchema(answer.schema), ...(answer.example ? { example: answer.example } : {}) }, ...(op.id === 'metrics' ? { 'text/plain': { schema: { type: 'string' } } } : {}) }
      : answer.mediaTypes
        ? Object.fromEntries(answer.mediaTypes.map((type) => [type, { schema: type === 'application/json' ? { type: 'object' } : { type: 'string' } }]))
        : undefined
    responses[status] = {
      description: answer.description,
      ...(answer.headers ? { headers: Object.fromEntries(answer.headers.map((h) => [h, HEADERS[h]])) } : {}),
      ...(content ? { content } : {}),
    }
  }
  const byStatus = new Map<number, ProblemCode[]>()
  for (const [status, code] of problemsOf(op)) byStatus.set(status, [...new Set([...(byStatus.get(status) ?? []), code])])
  for (const [status, codes] of [...byStatus].sort(([a], [b]) => a - b)) {
    const headers = {
      ...(status === 401 && needsToken(op) ? { 'WWW-Authenticate': HEADERS['WWW-Authenticate'] } : {}),
      ...(codes.includes('database_unavailable') ? { 'Retry-After': HEADERS['Retry-After'] } : {}),
    }
    responses[String(status)] = {
      description: `Problem: ${codes.join(', ')}.`,
      ...(Object.keys(headers).length ? { headers } : {}),
      content: problemContent(codes),
    }
  }
  return responses
}

function parametersOf(op: Operation) {
  const parameters: unknown[] = []
  for (const [name, param] of Object.entries(op.pathParams ?? {})) {
    parameters.push({ name, in: 'path', required: true, description: param.description, schema: jsonSchema(param.schema) })
  }
  if (op.query) {
    const query = jsonSchema(op.query) as { properties?: Record<string, JsonSchema>; required?: string[] }
    for (const [name, schema] of Object.entries(query.properties ?? {})) {
      parameters.push({ name, in: 'query', required: query.required?.includes(name) ?? false, schema })
    }
  }
  if (op.idempotent) parameters.push({ $ref: '#/components/parameters/IdempotencyKey' })
  if (op.access === 'provider') {
    for (const name of ['webhook-id', 'webhook-timestamp', 'webhook-signature']) parameters.push({ $ref: `#/components/parameters/${name}` })
  }
  return parameters
}

const SECURITY = {
  admin: [{ bearerAuth: [] }],
  read: [{ bearerAuth: [] }],
  session: [{ bearerAuth: [] }],
  console: [{ bearerAuth: [] }],
  public: [],
  provider: [{ webhookSignature: [] }, { callbackApiKey: [] }, { callbackBearer: [] }],
}

function operationObject(op: Operation) {
  const parameters = parametersOf(op)
  return {
    operationId: op.id,
    tags: [op.tag],
    summary: op.summary,
    ...(op.description ? { description: op.description } : {}),
    security: SECURITY[op.access],
    ...(parameters.length ? { parameters } : {}),
    ...(op.body
      ? { requestBody: { required: op.body.required, content: { 'application/json': { schema: jsonSchema(op.body.schema), example: op.body.example } } } }
      : {}),
    responses: responsesOf(op),
  }
}

const DESCRIPTION = `Places outbound calls through a provider, one call per phone at a time, under a concurrency limit.

Errors are RFC 9457 problem details (application/problem+json) with a stable \`code\`; branch on the code.
A method a path does not have is answered 405 method_not_allowed with an Allow header (and OPTIONS with 204 and Allow).
A request while the database is away is answered 503 database_unavailable with Retry-After; nothing was changed, so try again.
When API_TOKENS is set, every route but /healthz, /readyz, the callback, /openapi.json and /docs needs "Authorization: Bearer <token>".`

/** The whole document; built once per process (it depends on nothing that changes at run time). */
export function buildOpenApiDocument(operations: Operation[] = OPERATIONS) {
  const paths: Record<string, Partial<Record<string, unknown>>> = {}
  for (const op of operations) (paths[openApiPath(op.path)] ??= {})[op.method] = operationObject(op)
  // Every method a path does not have is answered 405 with Allow: described as such, so a
  // client knows what DELETE /calls gets rather than guessing.
  for (const item of Object.values(paths)) {
    const allow = METHODS.filter((m) => item[m]).map((m) => m.toUpperCase()).join(', ')
    for (const method of METHODS.filter((m) => !item[m])) {
      item[method] = {
        summary: `Not allowed: answered 405 with Allow: ${allow}.`,
        security: [],
        responses: { 405: { $ref: '#/components/responses/MethodNotAllowed' } },
      }
    }
  }
  const schemas = toJsonSchemaDefs(NAMED, { ...conversion, definitions: undefined } as Omit<ConversionConfig, 'definitions'>)
  return {
    openapi: '3.1.0',
    jsonSchemaDialect: 'https://spec.openapis.org/oas/3.1/dialect/base',
    info: { title: 'call-orchestrator', version: VERSION, description: DESCRIPTION },
    // Relative: the document is served by the API it describes, wherever that is mounted.
    servers: [{ url: '/', description: 'The server this document was read from.' }],
    tags: [...new Set(operations.map((op) => op.tag))].map((name) => ({ name })),
    paths,
    components: {
      schemas: Object.fromEntries(Object.entries(schemas).map(([name, schema]) => [name, withoutDialect(schema)])),
      parameters: {
        IdempotencyKey: {
          name: 'Idempotency-Key', in: 'header', required: false, schema: jsonSchema(s.IdempotencyKey),
          description: 'Send the same key again to retry safely: the first answer is given again (200, Idempotent-Replayed: true); the same key with another body is 422 idempotency_key_reused.',
        },
        'webhook-id': { name: 'webhook-id', in: 'header', required: false, schema: { type: 'string' }, description: 'Standard Webhooks: the message id; a callback is applied once per id. Required with a signature.' },
        'webhook-timestamp': { name: 'webhook-timestamp', in: 'header', required: false, schema: { type: 'string', pattern: '^\\d{1,12}$' }, description: 'Standard Webhooks: unix seconds, within 5 minutes of now. Required with a signature.' },
        'webhook-signature': { name: 'webhook-signature', in: 'header', required: false, schema: { type: 'string' }, description: 'Standard Webhooks: space-separated "v1,<base64 HMAC-SHA256 of {webhook-id}.{webhook-timestamp}.{body}>", keyed with a WEBHOOK_SECRET (whsec_…).' },
      },
      responses: {
        MethodNotAllowed: {
          description: 'Problem: method_not_allowed. Any path, for a method it does not have.',
          headers: { Allow: HEADERS.Allow },
          content: problemContent(['method_not_allowed']),
        },
      },
      securitySchemes: {
        bearerAuth: { type: 'http', scheme: 'bearer', description: 'One of API_TOKENS. Needed only when API_TOKENS is set.' },
        webhookSignature: {
          type: 'apiKey', in: 'header', name: 'webhook-signature',
          description: 'Standard Webhooks signature with webhook-id and webhook-timestamp (see the callback operation); used when WEBHOOK_SECRET is set.',
        },
        callbackApiKey: { type: 'apiKey', in: 'header', name: 'X-Api-Key', description: 'WEBHOOK_API_KEY, when the provider cannot sign.' },
        callbackBearer: { type: 'http', scheme: 'bearer', description: 'WEBHOOK_API_KEY as a bearer token, when the provider cannot sign.' },
      },
    },
  }
}

function withoutDialect(schema: JsonSchema): JsonSchema {
  const { $schema: _, ...rest } = schema
  return rest
}
