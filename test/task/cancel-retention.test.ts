// A task's `retention.cancelled` reaches the broker: it rides with each run from enqueue, so a
// cancel by run id (here the run handle's, as HTTP, the CLI and the dashboard do through
// `broker.cancel(id)`) keeps the run that long. (The broker side: test/conformance/cancel-retention.ts.)
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { z } from 'zod';
import { SqliteBroker } from '../../src/broker/sqlite/sqlite-broker.ts';
import { Errand } from '../../src/errand.ts';
import { quietLogger } from '../fixtures/brokers.ts';
import { tempDir } from '../helpers.ts';

test("retention.cancelled: a run cancelled by id is kept for its task's retention, not the broker's default", async () => {
  const broker = new SqliteBroker({ path: join(tempDir('errand-cancel-retention'), 'errand.db') });
  const app = new Errand({ broker, logger: quietLogger });
  try {
    const short = app.task('short', { input: z.object({}), retention: { cancelled: 5000 } }, async () => 1);
    const plain = app.task('plain', { input: z.object({}) }, async () => 1);
    assert.equal(short.prepare({}).cancelledRetentionMs, 5000, 'the NewRun carries it');
    const a = await short.enqueue({});
    const b = await plain.enqueue({});
    assert.equal(await a.cancel(), 'cancelled');
    assert.equal(await b.cancel(), 'cancelled');
    const ra = await app.getRun(a.id);
    const rb = await app.getRun(b.id);
    const kept = (r: typeof ra) => (r.expiresAt?.getTime() ?? Number.NaN) - (r.finishedAt?.getTime() ?? Number.NaN);
    assert.equal(kept(ra), 5000, "kept for the task's retention.cancelled from when it was cancelled");
    assert.equal(kept(rb), 86_400_000, 'the default task retention (1 day)');
    const after = rb.finishedAt!.getTime();
    assert.equal(await broker.prune(after + 6000), 1, 'the short one is pruned after 5 s');
  } finally {
    await app.close();
  }
});
