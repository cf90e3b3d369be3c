// A task's `output` schema (src/task/task.ts, src/worker/executor.ts): the handler's result is
// validated before it is stored (a mismatch fails the run for good, reason invalid_result), what is
// stored is what the schema parses to, and the result type (of result(), and of the workflow steps
// that take it) is the schema's output type.
import assert from 'node:assert/strict';
import { after, afterEach, describe, it } from 'node:test';
import { z } from 'zod';
import { chain, createErrand, RunFailedError, type ResultOf } from '../../src/index.ts';
import { createTesting } from '../../src/testing/index.ts';
import { quietLogger } from '../fixtures/brokers.ts';

const errand = createErrand({ broker: 'sqlite:/nonexistent/never-opened.db', logger: quietLogger });
const t = createTesting(errand);
afterEach(() => t.reset());
after(() => t.close());

const Page = z.object({ url: z.string(), bytes: z.number().int().nonnegative() });
const fetchPage = errand.task('out.fetch', { input: z.string(), output: Page }, (url) => ({ url, bytes: url.length }));
const liar = errand.task('out.liar', { input: z.string(), output: Page, retries: { maxAttempts: 3 } }, (url) => ({ url, bytes: -1 }));
const trimmed = errand.task('out.trim', { input: z.string(), output: z.string().transform((s) => s.trim().length) }, (s) => s);
const size = errand.task('out.size', { input: Page }, (p) => p.bytes);

describe('task output schemas', () => {
  it('validates the result: a matching one is stored and typed; a mismatch fails for good, naming the path', async () => {
    const ok = await fetchPage.enqueue('abc');
    const bad = await liar.enqueue('abc');
    await t.drain();
    const page: { url: string; bytes: number } = await ok.result();
    assert.deepEqual(page, { url: 'abc', bytes: 3 });
    await assert.rejects(bad.result(), (err: Error) => err instanceof RunFailedError && /output schema: result\.bytes/.test(err.message));
    const info = await bad.info();
    assert.equal(info.error?.reason, 'invalid_result');
    assert.equal(info.attempts, 1, 'not retried: the same handler would return the same');
  });

  it('stores what the schema parses to', async () => {
    const h = await trimmed.enqueue('  four  ');
    await t.drain();
    const n: number = await h.result();
    assert.equal(n, 4);
  });

  it('types the steps of a workflow by the output type', async () => {
    const flow = chain(fetchPage.step('hello'), size.next());
    const typed: ResultOf<typeof flow> = 0;
    assert.equal(typed, 0);
    // @ts-expect-error the output of out.trim is a number, out.size takes a page
    chain(trimmed.step('x'), size.next());
    // @ts-expect-error with an output schema, the handler must return its input type
    errand.task('out.wrong', { input: z.string(), output: Page }, (url) => ({ url }));
    const wf = await errand.workflow(flow);
    await t.drain();
    assert.equal(await wf.result(), 5);
  });
});
