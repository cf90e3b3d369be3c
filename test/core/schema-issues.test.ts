import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { z } from 'zod';
import { checkSchema } from '../../src/core/schema-issues.ts';
import { zodErrorToDetail } from '../../src/web/errors.ts';

const User = z.object({
  email: z.string(),
  name: z.string({ error: 'a name, please' }),
  kind: z.enum(['a', 'b']),
  id: z.union([z.string(), z.number()]),
  tags: z.array(z.string()).optional(),
  address: z.object({ city: z.string() }),
});

describe('checkSchema', () => {
  it('says an absent field is required, as FastAPI does, keeping a message the schema sets', () => {
    const r = checkSchema(User, { address: {} });
    assert.equal(r.ok, false);
    assert.deepEqual(!r.ok && r.issues, [
      { path: ['email'], message: 'Field required', code: 'missing' },
      { path: ['name'], message: 'a name, please', code: 'missing' },
      { path: ['kind'], message: 'Field required', code: 'missing' },
      { path: ['id'], message: 'Field required', code: 'missing' },
      { path: ['address', 'city'], message: 'Field required', code: 'missing' },
    ]);
  });

  it('keeps zod’s issue for a value that is there but wrong', () => {
    const r = checkSchema(User, { email: 3, name: 'n', kind: 'c', id: 1, tags: [1], address: 'x' });
    assert.equal(r.ok, false);
    const got = !r.ok && r.issues.map((i) => [i.path, i.code]);
    assert.deepEqual(got, [
      [['email'], 'invalid_type'],
      [['kind'], 'invalid_value'],
      [['tags', 0], 'invalid_type'],
      [['address'], 'invalid_type'],
    ]);
  });

  it('says a value that is not there at all is required, and passes a good one through', () => {
    assert.deepEqual(checkSchema(z.object({}), undefined), {
      ok: false,
      issues: [{ path: [], message: 'Field required', code: 'missing' }],
    });
    assert.deepEqual(checkSchema(z.object({ n: z.coerce.number() }), { n: '2' }), { ok: true, value: { n: 2 } });
  });
});

describe('checkSchema, FastAPI words', () => {
  it('names each unknown key of a strict object at the key', () => {
    const r = checkSchema(z.strictObject({ a: z.string() }), { a: 'x', b: 1, c: 2 });
    assert.deepEqual(!r.ok && r.issues, [
      { path: ['b'], message: 'Extra inputs are not permitted', code: 'extra_forbidden' },
      { path: ['c'], message: 'Extra inputs are not permitted', code: 'extra_forbidden' },
    ]);
  });

  it('says a coerced number that is not one, or not finite, is not a valid number', () => {
    const Q = z.object({ limit: z.coerce.number().int(), n: z.number() });
    const r = checkSchema(Q, { limit: 'abc', n: Number.POSITIVE_INFINITY });
    assert.deepEqual(!r.ok && r.issues.map((i) => [i.path, i.message]), [
      [['limit'], 'Input should be a valid number'],
      [['n'], 'Input should be a finite number'],
    ]);
  });

  it('gives a value out of several bounds one issue, the tightest bound; other problems stay', () => {
    const Q = z.object({
      delay: z.coerce.number().int().min(0).max(1000),
      big: z.bigint().max(10n).max(5n),
      name: z
        .string()
        .max(8)
        .max(4)
        .regex(/^[a-z]+$/),
    });
    const r = checkSchema(Q, { delay: '1e20', big: 10n ** 30n, name: 'ABCDEFGHIJ' });
    assert.deepEqual(!r.ok && r.issues.map((i) => [i.path, i.code, i.message]), [
      [['delay'], 'too_big', 'Too big: expected number to be <=1000'],
      [['big'], 'too_big', 'Too big: expected bigint to be <=5'],
      [['name'], 'too_big', 'Too big: expected string to have <=4 characters'],
      [['name'], 'invalid_format', 'Invalid string: must match pattern /^[a-z]+$/'],
    ]);
    const low = checkSchema(Q, { delay: '-1e20', big: 1n, name: 'ab' });
    assert.deepEqual(!low.ok && low.issues.map((i) => [i.path, i.message]), [[['delay'], 'Too small: expected number to be >=0']]);
    // A ZodError a route throws itself (schema.parse) is answered the same way.
    const thrown = Q.safeParse({ delay: '1e20', big: 1n, name: 'ab' });
    assert.deepEqual(!thrown.success && zodErrorToDetail('query', thrown.error), [
      { loc: ['query', 'delay'], msg: 'Too big: expected number to be <=1000', type: 'too_big' },
    ]);
  });
});

describe('checkSchema and an app-wide error map', () => {
  it("keeps the app's own messages (z.config({ customError })); the codes still say missing", () => {
    z.config({ customError: (issue) => (issue.code === 'invalid_type' ? 'Pflichtfeld' : undefined) });
    try {
      const r = checkSchema(z.object({ a: z.string() }), {});
      assert.deepEqual(!r.ok && r.issues, [{ path: ['a'], message: 'Pflichtfeld', code: 'missing' }]);
    } finally {
      z.config({ customError: undefined });
    }
  });
});
