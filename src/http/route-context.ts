/** What the route files of `errandRoutes` share: the typed instance, the app, auth, and the broker call wrapper. */
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import type { Broker, RunRecord } from '../broker/types.ts';
import type { Errand } from '../errand.ts';
import type { Scope, TokenAuth } from '../web/auth.ts';
import type { RunJson } from './schemas.ts';
import type { RunStream } from './sse.ts';

const withZod = (fastify: FastifyInstance) => fastify.withTypeProvider<ZodTypeProvider>();
export type RoutesApp = ReturnType<typeof withZod>;

export interface RouteContext {
  app: RoutesApp;
  errand: Errand;
  auth: TokenAuth;
  options: { bodyLimit?: number };
  /** The plugin's prefix (`fastify.prefix`), for the URLs the answers give. */
  prefix: string;
  /** The `onRequest` hook that requires a scope. */
  guard: (scope: Scope) => ReturnType<TokenAuth['hook']>;
  /** The OpenAPI security requirement of a route. */
  security: (scope: Scope) => { bearerAuth: string[] }[] | undefined;
  /** A run as the routes answer it: secrets redacted, stacks when `errorStacks`. */
  toJson: (rec: RunRecord) => RunJson;
  /** Any broker failure (including failing to connect) as BrokerUnavailableError. */
  brokerCall: <T>(fn: (broker: Broker) => Promise<T>) => Promise<T>;
  /** A malformed run id as RunNotFoundError (404). */
  checkRunId: (id: string) => void;
  /** The open run event streams, closed with the server. */
  streams: Set<RunStream>;
  heartbeatMs: number;
  readyTimeoutMs: number;
}
