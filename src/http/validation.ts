/** The zod validator compiler shared by `createServer` and `errandRoutes`. */
import type { FastifySchemaCompiler } from 'fastify';
import type { z } from 'zod';
import { ConfigError } from '../core/errors.ts';

const isZodSchema = (s: unknown): s is z.ZodType =>
  !!s && typeof s === 'object' && typeof (s as { safeParse?: unknown }).safeParse === 'function';

/**
 * The zod validator compiler of `createServer`: like fastify-type-provider-zod's, but each issue
 * keeps its exact path (a key may contain "/"), and a non-zod schema is refused with a clear error.
 */
export const zodValidatorCompiler: FastifySchemaCompiler<z.ZodType> = ({ schema, method, url, httpPart }) => {
  if (!isZodSchema(schema)) {
    throw new ConfigError(
      `Route ${method} ${url}: the ${httpPart ?? 'request'} schema is not a zod schema; routes of createServer take zod schemas`,
    );
  }
  return (data: unknown) => {
    const r = schema.safeParse(data);
    if (r.success) return { value: r.data };
    return {
      error: r.error.issues.map((i) => {
        const path = i.path.map((p) => (typeof p === 'symbol' ? String(p) : p));
        return {
          keyword: i.code,
          instancePath: `/${path.join('/')}`,
          schemaPath: `#/${path.join('/')}/${i.code}`,
          message: i.message,
          params: {},
          path,
        };
      }),
    };
  };
};
