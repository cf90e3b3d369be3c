/**
 * Errand's HTTP layer: `createServer` (a Fastify app with the task, run and health routes, FastAPI's
 * error shapes and an OpenAPI 3.1 document), or `errandRoutes` to mount on your own Fastify instance.
 * See docs/http.md.
 */
export { authFromEnv, type HttpAuthOptions, type Scope, TokenAuth } from '../web/auth.ts';
export { findBodyProblem, MAX_BODY_DEPTH, parseJsonBody, useJsonBodies } from './body.ts';
export {
  errorResponse,
  HttpError,
  httpErrorHandler,
  issuesToDetail,
  RequestValidationError,
  RETRY_AFTER_SECONDS,
  type ValidationDetail,
  zodErrorToDetail,
} from '../web/errors.ts';
export {
  EnqueueHeadersSchema,
  EnqueueQuerySchema,
  type ErrandRoutesOptions,
  errandRoutes,
  MAX_DELAY_MS,
  openApiSecurity,
  requireScope,
  traceparentOf,
} from './routes.ts';
export { checkRateLimit, type HttpRateLimitOptions } from './rate-limit.ts';
export {
  EnqueuedSchema,
  ErrorSchema,
  errorResponses,
  type RunJson,
  RunSchema,
  runToJson,
  ValidationErrorSchema,
} from './schemas.ts';
export { type CreateServerOptions, createServer } from './server.ts';
export { zodValidatorCompiler } from './validation.ts';
