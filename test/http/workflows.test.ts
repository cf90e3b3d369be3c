// GET /workflows/{id} and POST /workflows/{id}/cancel (src/http/workflow-routes.ts): the state, the
// steps as run JSON, the edges, what each waiting step waits for; 404 for an unknown or malformed id.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { z } from 'zod';
import { chain, chord, createErrand, group } from '../../src/index.ts';
import { createServer } from '../../src/http/index.ts';
import { redisSetup, redisUnavailable } from '../fixtures/brokers.ts';
import { tempDir } from '../helpers.ts';
import { quiet } from './setup.ts';

describe('workflows over HTTP', async () => {
  const errand = createErrand({ broker: `sqlite:${join(tempDir('errand-http-wf'), 'wf.db')}`, logger: quiet });
  const double = errand.task('double', { input: z.number(), retention: 60_000 }, (n) => n * 2);
  const sum = errand.task('sum', { input: z.array(z.number()), retention: 60_000 }, (ns) => ns.reduce((a, b) => a + b, 0));
  const app = await createServer({ errand, logger: false });
  after(async () => {
    await app.close();
    await errand.close();
  });

  it('shows a workflow: state, steps, edges, and what a waiting step waits for', async () => {
    const wf = await errand.workflow(chord(group(double.step(1), double.step(2)), sum.next()));
    const res = await app.inject({ method: 'GET', url: `/workflows/${wf.id}` });
    assert.equal(res.statusCode, 200, res.body);
    const body = res.json();
    assert.equal(body.id, wf.id);
    assert.equal(body.state, 'running');
    assert.deepEqual(
      body.runs.map((r: { task: string; state: string }) => [r.task, r.state]),
      [
        ['double', 'queued'],
        ['double', 'queued'],
        ['sum', 'waiting'],
      ],
    );
    const [a, b, s] = wf.runIds;
    assert.deepEqual(body.edges, [
      { from: a, to: s, on_failure: 'cancel', name: null },
      { from: b, to: s, on_failure: 'cancel', name: null },
    ]);
    assert.deepEqual(body.waiting_for, { [s!]: [a, b] });

    const worker = errand.worker({ concurrency: 2 });
    await worker.start();
    try {
      assert.equal(await wf.result({ timeout: 10_000 }), 6);
    } finally {
      await worker.stop();
    }
    const done = (await app.inject({ method: 'GET', url: `/workflows/${wf.id}` })).json();
    assert.equal(done.state, 'succeeded');
    assert.deepEqual(done.runs[2].input, [2, 4]);
    assert.deepEqual(done.waiting_for, {});
  });

  it('cancels a workflow; 404 for an unknown or malformed id', async () => {
    const wf = await errand.workflow(chain(double.step(1), double.next()));
    const res = await app.inject({ method: 'POST', url: `/workflows/${wf.id}/cancel` });
    assert.equal(res.statusCode, 200, res.body);
    assert.deepEqual(res.json(), { id: wf.id, cancelled: 2 });
    assert.equal((await app.inject({ method: 'GET', url: `/workflows/${wf.id}` })).json().state, 'cancelled');
    const unknown = await app.inject({ method: 'GET', url: '/workflows/default.01ARZ3NDEKTSV4RRFFQ69G5FAV' });
    assert.equal(unknown.statusCode, 404);
    assert.match(unknown.json().detail, /Workflow "default\.01ARZ3NDEKTSV4RRFFQ69G5FAV" not found/);
    assert.equal((await app.inject({ method: 'GET', url: '/workflows/nope' })).statusCode, 404);
    assert.equal((await app.inject({ method: 'POST', url: '/workflows/nope/cancel' })).statusCode, 404);
  });
});

// A workflow whose steps are in several queues, on Redis (the relay between queues: docs/workflows.md).
describe('workflows over HTTP: steps in several queues, on Redis', async () => {
  const skip = await redisUnavailable();
  if (skip) {
    it('needs Redis', { skip }, () => {});
    return;
  }
  const setup = redisSetup('errand-http-wfq');
  const errand = setup.app();
  const double = errand.task('double', { input: z.number(), retention: 60_000, queue: 'wfq-a' }, (n) => n * 2);
  const sum = errand.task('sum', { input: z.array(z.number()), retention: 60_000, queue: 'wfq-b' }, (ns) => ns.reduce((a, b) => a + b, 0));
  // Steps below go to wfq-c too; a worker takes only the queues of its app's tasks, so this declares it.
  errand.task('on_wfq_c', { input: z.null(), queue: 'wfq-c' }, () => null);
  const app = await createServer({ errand, logger: false });
  after(async () => {
    await app.close();
    await errand.close();
    await setup.cleanup();
  });

  it('GET lists every step in every queue and what waits on what across queues; a worker on both queues runs it; POST cancel reaches every queue', async () => {
    const wf = await errand.workflow(chord(group(double.step(1), double.step(2, { queue: 'wfq-c' })), sum.next()));
    const [a, b, s] = wf.runIds;
    const body = (await app.inject({ method: 'GET', url: `/workflows/${wf.id}` })).json();
    assert.deepEqual(
      body.runs.map((r: { id: string; queue: string; state: string }) => [r.id, r.queue, r.state]),
      [
        [a, 'wfq-a', 'queued'],
        [b, 'wfq-c', 'queued'],
        [s, 'wfq-b', 'waiting'],
      ],
    );
    assert.deepEqual(body.waiting_for, { [s!]: [a, b] });
    const worker = errand.worker({ concurrency: 2, queues: ['wfq-a', 'wfq-b', 'wfq-c'] });
    await worker.start();
    try {
      assert.equal(await wf.result({ timeout: 10_000 }), 6);
    } finally {
      await worker.stop();
    }
    const done = (await app.inject({ method: 'GET', url: `/workflows/${wf.id}` })).json();
    assert.equal(done.state, 'succeeded');
    assert.deepEqual(done.runs[2].input, [2, 4]);

    const other = await errand.workflow(chain(double.step(1), sum.step([1], { queue: 'wfq-c' })));
    const res = await app.inject({ method: 'POST', url: `/workflows/${other.id}/cancel` });
    assert.deepEqual(res.json(), { id: other.id, cancelled: 2 });
    assert.deepEqual(
      (await app.inject({ method: 'GET', url: `/workflows/${other.id}` })).json().runs.map((r: { state: string }) => r.state),
      ['cancelled', 'cancelled'],
    );
  });
});
