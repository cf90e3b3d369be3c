/** The zod validator compiler shared by `createServer` and `errandRoutes`. */
import type { FastifySchemaCompiler } from 'fastify';
import type { z } from 'zod';
import { ConfigError } from '../core/errors.ts';
import { type CheckableSchema, checkSchema, nullAsMissing } from '../core/schema-issues.ts';

const isZodSchema = (s: unknown): s is z.ZodType & CheckableSchema =>
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
    const r = checkSchema(schema, data);
    if (r.ok) return { value: r.value };
    return {
      error: nullAsMissing(data, r.issues).map(({ path, code, message }) => ({
        keyword: code,
        instancePath: `/${path.join('/')}`,
        schemaPath: `#/${path.join('/')}/${code}`,
        message,
        params: {},
        path,
      })),
    };
  };
};
