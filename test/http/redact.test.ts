// GET /runs/{id} (and its event stream) hide the values at the configured redaction paths, and the
// secrets repeated in errors, while the handler still receives the real input.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { REDACTED } from '../../src/core/redact.ts';
import type { Errand } from '../../src/errand.ts';
import { createServer } from '../../src/http/index.ts';
import type { Worker } from '../../src/worker/worker.ts';
import { waitFor } from '../helpers.ts';
import { openEvents } from './setup.ts';
import { sqliteSetup } from '../fixtures/brokers.ts';

describe('redaction in the HTTP run JSON', () => {
  let errand: Errand;
  let app: FastifyInstance;
  let worker: Worker;
  let base: string;
  const seen: unknown[] = [];

  before(async () => {
    errand = sqliteSetup('errand-http').app({ redact: ['password'] });
    errand.task(
      'signup',
      {
        input: z.object({ user: z.string(), password: z.string(), card: z.object({ number: z.string(), exp: z.string() }) }),
        redact: ['card.number'],
        retries: 0,
      },
      async (input) => {
        seen.push(structuredClone(input));
        if (input.user === 'bob') throw new Error(`card ${input.card.number} declined for ${input.user}`);
        return { ok: true, user: input.user };
      },
    );
    errand.task('other', { input: z.object({ password: z.string(), token: z.string() }) }, async () => 'done');
    app = await createServer({ errand, logger: false, errorStacks: true });
    base = await app.listen({ port: 0, host: '127.0.0.1' });
    worker = errand.worker({ concurrency: 2 });
    await worker.start();
  });

  after(async () => {
    await worker.stop({ graceMs: 0 });
    await app.close();
    await errand.close();
  });

  const enqueue = async (task: string, payload: object) => {
    const res = await app.inject({ method: 'POST', url: `/tasks/${task}`, payload });
    assert.equal(res.statusCode, 202, res.body);
    return (res.json() as { id: string }).id;
  };
  const finished = (id: string) =>
    waitFor(async () => {
      const res = await app.inject({ method: 'GET', url: `/runs/${id}` });
      const run = res.json();
      return ['succeeded', 'failed'].includes(run.state) ? { run, body: res.body } : undefined;
    });

  it('shows "[redacted]" at the app and task paths while the handler saw the real values', async () => {
    const input = { user: 'ann', password: 'hunter2-secret', card: { number: '4111111111111111', exp: '12/30' } };
    const id = await enqueue('signup', input);
    const { run, body } = await finished(id);
    assert.equal(run.state, 'succeeded');
    assert.deepEqual(run.input, { user: 'ann', password: REDACTED, card: { number: REDACTED, exp: '12/30' } });
    assert.doesNotMatch(body, /hunter2-secret|4111111111111111/);
    assert.deepEqual(seen.at(-1), input);
    assert.deepEqual((await errand.getRun(id)).input, input, 'storage keeps the real input');
  });

  it('scrubs the secret from the error message, stack and history of a failed run', async () => {
    const id = await enqueue('signup', { user: 'bob', password: 'pw-bob-123', card: { number: '5500000000000004', exp: '01/31' } });
    const { run, body } = await finished(id);
    assert.equal(run.state, 'failed');
    assert.equal(run.error.message, `card ${REDACTED} declined for bob`);
    assert.ok(run.error.stack, 'stacks are on for this server');
    assert.doesNotMatch(body, /5500000000000004|pw-bob-123/);
  });

  it('applies only the app paths to a task without its own, and redacts the event stream too', async () => {
    const id = await enqueue('other', { password: 'p4ssw0rd', token: 'visible-token' });
    const { run } = await finished(id);
    assert.deepEqual(run.input, { password: REDACTED, token: 'visible-token' });
    const stream = await openEvents(`${base}/runs/${id}/events`);
    try {
      await waitFor(() => stream.ended || stream.events.some((e) => e.event === 'end'));
    } finally {
      stream.close();
    }
    const state = stream.events.find((e) => e.event === 'state');
    assert.ok(state, 'a state event');
    assert.deepEqual(JSON.parse(state.data).input, { password: REDACTED, token: 'visible-token' });
  });
});
