// Property: task inputs. For a few schemas and any value (JSON or not: bigint, Date, Map, typed
// arrays, sparse arrays, null-prototype objects, functions, symbols, cycles, deep nesting, -0, NaN),
// `task.prepare` (what enqueue runs first) either accepts it, and then what is queued is JSON that
// the same schema accepts again in the worker, or throws an InputError on the input whose issues
// have paths and messages; never another exception. Accepted inputs are then run by a worker
// (SQLite) and must all succeed: nothing accepted at enqueue is refused as invalid_input later.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import fc from 'fast-check';
import { z } from 'zod';
import { InputError } from '../../src/core/errors.ts';
import { createErrand, type Errand, type Task } from '../../src/index.ts';
import { quietLogger } from '../fixtures/brokers.ts';
import { tempDir } from '../helpers.ts';

const MAX_INPUT_BYTES = 64 * 1024;

const schemas = {
  signup: z.object({ email: z.email(), name: z.string().min(1).max(100) }),
  order: z.object({
    items: z
      .array(z.object({ sku: z.string().min(1), qty: z.number().int().positive() }))
      .min(1)
      .max(20),
    note: z.string().optional(),
    tags: z.array(z.string().optional()).optional(),
    discount: z.number().min(0).max(1).nullable().optional(),
  }),
  event: z.discriminatedUnion('kind', [
    z.object({ kind: z.literal('click'), x: z.number(), y: z.number() }),
    z.object({ kind: z.literal('view'), page: z.string(), ms: z.number().int().nonnegative().default(0) }),
  ]),
  anything: z.unknown(),
  meta: z.object({ id: z.string(), meta: z.record(z.string(), z.unknown()).optional(), at: z.date().optional() }),
  scalar: z.number(),
} as const;

type Name = keyof typeof schemas;

/** Values shaped like each schema, so that a good share of the cases are accepted. */
const shaped: Record<Name, fc.Arbitrary<unknown>> = {
  signup: fc.record({ email: fc.oneof(fc.emailAddress(), fc.string()), name: fc.string({ maxLength: 110 }) }),
  order: fc.record(
    {
      items: fc.array(
        fc.record({ sku: fc.string({ maxLength: 8 }), qty: fc.oneof(fc.integer({ min: -2, max: 50 }), fc.double(), fc.anything()) }),
        { maxLength: 22 },
      ),
      note: fc.oneof(fc.string(), fc.constant(undefined), fc.anything()),
      tags: fc.oneof(fc.array(fc.oneof(fc.string(), fc.constant(undefined), fc.constant(null)), { maxLength: 4 }), fc.constant(undefined)),
      discount: fc.oneof(fc.double(), fc.constant(null), fc.constant(undefined)),
    },
    { requiredKeys: ['items'] },
  ),
  event: fc.oneof(
    fc.record({ kind: fc.constant('click'), x: fc.oneof(fc.integer(), fc.double()), y: fc.oneof(fc.integer(), fc.double()) }),
    fc.record({ kind: fc.constantFrom('view', 'other'), page: fc.string(), ms: fc.oneof(fc.integer(), fc.constant(undefined)) }),
  ),
  anything: fc.jsonValue({ maxDepth: 4 }),
  meta: fc.record(
    {
      id: fc.string({ maxLength: 10 }),
      meta: fc.dictionary(fc.string({ maxLength: 6 }), fc.anything({ maxDepth: 2, withBigInt: true, withDate: true })),
      at: fc.date(),
    },
    { requiredKeys: ['id'] },
  ),
  scalar: fc.oneof(fc.double(), fc.integer(), fc.constantFrom(-0, Number.NaN, Infinity, 1e308)),
};

/** Anything at all, including what JSON cannot carry. */
const hostile = fc.oneof(
  fc.anything({
    maxDepth: 3,
    withBigInt: true,
    withBoxedValues: true,
    withDate: true,
    withMap: true,
    withSet: true,
    withTypedArray: true,
    withSparseArray: true,
    withNullPrototype: true,
  }),
  fc.constantFrom<unknown>(
    () => 1,
    Symbol('s'),
    { email: 'a@b.co', name: 'x', extra: () => 1 },
    { email: 'a@b.co', name: 'x', [Symbol('k')]: 1 },
    new (class Point {
      x = 1;
    })(),
    Object.assign(Object.create({ inherited: 1 }), { id: 'x' }),
    { id: 'x', meta: { when: new Date(0) } },
    { id: 'x', meta: { big: 10n } },
    { id: 'x', meta: { nan: Number.NaN, inf: -Infinity } },
    { id: 'x', meta: { u: undefined } },
    { items: [{ sku: 'a', qty: 1 }], tags: [undefined] },
    'x'.repeat(MAX_INPUT_BYTES + 10),
  ),
  fc.constant(null).map(() => {
    const cyclic: Record<string, unknown> = { id: 'x', meta: {} };
    (cyclic.meta as Record<string, unknown>).self = cyclic;
    return cyclic;
  }),
  fc.integer({ min: 200, max: 400 }).map((depth) => {
    let v: unknown = 'deep';
    for (let i = 0; i < depth; i++) v = i % 2 ? [v] : { id: 'x', meta: v };
    return v;
  }),
);

type Outcome = { ok: true; input: string } | { ok: false; error: unknown };

function prepare(task: Task, value: unknown): Outcome {
  try {
    return { ok: true, input: task.prepare(value, {}, Date.now(), MAX_INPUT_BYTES).input };
  } catch (error) {
    return { ok: false, error };
  }
}

function check(name: Name, value: unknown, outcome: Outcome): void {
  const shown = () => {
    try {
      return JSON.stringify(value, (_k, v) => (typeof v === 'bigint' ? `${v}n` : v))?.slice(0, 200) ?? String(value);
    } catch {
      return Object.prototype.toString.call(value);
    }
  };
  if (outcome.ok) {
    assert.ok(Buffer.byteLength(outcome.input) <= MAX_INPUT_BYTES, 'within the size limit');
    const stored = JSON.parse(outcome.input) as unknown;
    const again = schemas[name].safeParse(stored);
    assert.ok(again.success, `${name}: queued ${outcome.input.slice(0, 200)}, which the worker would refuse: ${again.error?.message}`);
    return;
  }
  const err = outcome.error;
  assert.ok(err instanceof InputError, `${name}: only InputError, got ${(err as Error)?.stack ?? String(err)} for ${shown()}`);
  assert.equal(err.root, 'input');
  assert.ok(err.issues.length > 0, 'at least one issue');
  for (const issue of err.issues) {
    assert.ok(Array.isArray(issue.path) && issue.path.every((p) => typeof p === 'string' || typeof p === 'number'), 'a path');
    assert.ok(typeof issue.message === 'string' && issue.message.length > 0, 'a message');
  }
}

describe('property: task inputs against schemas', () => {
  let app: Errand;
  const accepted: { task: Task; value: unknown }[] = [];
  after(async () => {
    await app?.close();
  });

  for (const name of Object.keys(schemas) as Name[]) {
    it(`${name}: accepted (and then valid JSON for the same schema) or an InputError; nothing else`, async () => {
      app ??= createErrand({ broker: `sqlite:${join(tempDir('errand-prop-input'), 'errand.db')}`, logger: quietLogger });
      const task = app.task(`prop_${name}`, { input: schemas[name], retries: 1 }, () => true) as unknown as Task;
      let kept = 0;
      fc.assert(
        fc.property(fc.oneof({ weight: 3, arbitrary: shaped[name] }, { weight: 2, arbitrary: hostile }), (value) => {
          const outcome = prepare(task, value);
          check(name, value, outcome);
          if (outcome.ok && kept < 8) {
            kept++;
            accepted.push({ task, value });
          }
        }),
        { numRuns: 250 },
      );
    });
  }

  it('a worker runs every accepted input to success (none refused later as invalid_input)', async () => {
    assert.ok(accepted.length >= 10, `enough accepted cases (${accepted.length})`);
    const handles = await Promise.all(accepted.map(({ task, value }) => task.enqueue(value as never)));
    const worker = app.worker({ concurrency: 8 });
    await worker.start();
    try {
      for (const [i, h] of handles.entries()) {
        const result = await h.result({ timeout: 30_000 }).catch((err: Error) => err);
        assert.equal(result, true, `run of ${JSON.stringify(accepted[i]!.value)?.slice(0, 200)}: ${String(result)}`);
      }
    } finally {
      await worker.stop();
    }
  });
});
