/**
 * Request bodies: a JSON parser that refuses prototype-pollution keys with a clear 400, and a walk
 * that bounds nesting depth (deeply nested JSON parses fine but overflows the stack of anything
 * recursive downstream: JSON.stringify, validators). (A body over the limit is answered 413 by
 * `httpErrorHandler`, which reads and discards its rest: src/web/discard.ts.)
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { formatPath } from '../core/errors.ts';
import { HttpError } from '../web/errors.ts';
import { checkJsonCharset } from '../web/json-charset.ts';

/** Deepest nesting of arrays and objects accepted in a task input. */
export const MAX_BODY_DEPTH = 256;

export interface BodyProblem {
  kind: 'proto' | 'depth';
  path: (string | number)[];
  message: string;
}

/**
 * Finds the first forbidden key (`__proto__` as an own key, or a `constructor` object with a
 * `prototype` key) or nesting deeper than `maxDepth`. Iterative: safe on any depth.
 */
export function findBodyProblem(value: unknown, maxDepth = MAX_BODY_DEPTH): BodyProblem | null {
  if (value === null || typeof value !== 'object') return null;
  // Each node links to its parent: the path is built only for a problem, so the walk stays linear.
  interface Node {
    v: object;
    key: string | number | null;
    parent: Node | null;
    depth: number;
  }
  const pathOf = (node: Node | null, ...tail: (string | number)[]) => {
    const path: (string | number)[] = [];
    for (let n = node; n && n.key !== null; n = n.parent) path.push(n.key);
    return [...path.reverse(), ...tail];
  };
  const stack: Node[] = [{ v: value, key: null, parent: null, depth: 1 }];
  const seen = new Set<object>();
  while (stack.length) {
    const node = stack.pop()!;
    const { v, depth } = node;
    if (seen.has(v)) continue;
    seen.add(v);
    if (depth > maxDepth) {
      return { kind: 'depth', path: pathOf(node), message: `is nested more than ${maxDepth} levels deep` };
    }
    if (Array.isArray(v)) {
      for (let i = v.length - 1; i >= 0; i--) {
        const item = v[i];
        if (item !== null && typeof item === 'object') stack.push({ v: item, key: i, parent: node, depth: depth + 1 });
      }
      continue;
    }
    if (Object.hasOwn(v, '__proto__')) {
      return { kind: 'proto', path: pathOf(node, '__proto__'), message: 'the key "__proto__" is not allowed' };
    }
    const ctor = Object.hasOwn(v, 'constructor') ? (v as Record<string, unknown>).constructor : undefined;
    if (ctor !== null && typeof ctor === 'object' && Object.hasOwn(ctor, 'prototype')) {
      return { kind: 'proto', path: pathOf(node, 'constructor', 'prototype'), message: 'the key "constructor.prototype" is not allowed' };
    }
    const keys = Object.keys(v);
    for (let i = keys.length - 1; i >= 0; i--) {
      const key = keys[i]!;
      const item = (v as Record<string, unknown>)[key];
      if (item !== null && typeof item === 'object') stack.push({ v: item, key, parent: node, depth: depth + 1 });
    }
  }
  return null;
}

/** Parses a JSON body; throws `HttpError` 400 for malformed JSON or a prototype-pollution key. */
export function parseJsonBody(text: string): unknown {
  if (text.length === 0 || text.trim() === '') throw new HttpError(400, 'The body is empty but the content type is application/json');
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new HttpError(400, `The body is not valid JSON: ${(err as Error).message}`);
  }
  // Without a backslash no key is escaped, so a text that spells neither key has none of them: the
  // walk is skipped (the common case). Depth is not limited here.
  if (
    typeof value !== 'object' ||
    value === null ||
    (!text.includes('\\') && !text.includes('__proto__') && !text.includes('constructor'))
  ) {
    return value;
  }
  const problem = findBodyProblem(value, Number.POSITIVE_INFINITY);
  if (problem) throw new HttpError(400, `The JSON body is refused: ${problem.message} (at ${formatPath(problem.path, 'body')})`);
  return value;
}

const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * A body's bytes as text; 400 for bytes that are not UTF-8 (JSON's encoding), which a lenient decode
 * would silently turn into U+FFFD and store.
 */
function decodeUtf8(bytes: Buffer): string {
  try {
    return UTF8.decode(bytes);
  } catch {
    const at = firstBadUtf8(bytes);
    throw new HttpError(400, `The body is not valid UTF-8 (a bad byte sequence at or just before byte ${at})`);
  }
}

/** Where a body stops being UTF-8: the first byte where decoding leniently and encoding again differ. */
function firstBadUtf8(bytes: Buffer): number {
  const again = Buffer.from(bytes.toString('utf8'), 'utf8');
  let i = 0;
  while (i < bytes.length && bytes[i] === again[i]) i++;
  return i;
}

/**
 * `application/<anything>+json` (e.g. application/merge-patch+json), with or without parameters:
 * Fastify tests it against the whole content type, parameters included (`; charset=utf-8`).
 */
const JSON_SUFFIX = /^application\/[\w.+-]+\+json\s*(?:;|$)/i;

/**
 * Makes `application/json` (and `+json` types) parse with `parseJsonBody` and drops Fastify's
 * `text/plain` parser, so that a non-JSON body gets 415, as does a JSON body whose content type
 * names a charset other than UTF-8 (`checkJsonCharset`: it would be misread). Encapsulated: affects `app` and its children.
 */
export function useJsonBodies(app: FastifyInstance): void {
  if (app.hasContentTypeParser('application/json')) app.removeContentTypeParser('application/json');
  if (app.hasContentTypeParser('text/plain')) app.removeContentTypeParser('text/plain');
  if (app.hasContentTypeParser(JSON_SUFFIX)) app.removeContentTypeParser(JSON_SUFFIX);
  const parser = (req: FastifyRequest, body: string | Buffer, done: (err: Error | null, body?: unknown) => void) => {
    try {
      checkJsonCharset(req.headers['content-type']);
      done(null, parseJsonBody(typeof body === 'string' ? body : decodeUtf8(body)));
    } catch (err) {
      done(err as Error, undefined);
    }
  };
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, parser);
  app.addContentTypeParser(JSON_SUFFIX, { parseAs: 'buffer' }, parser);
}
