/**
 * The broker conformance suite, section: notifications on one broker: `waitForWork`, `watch`,
 * `close()` waking a waiter. See `suite.ts`.
 */
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import { BrokerUnavailableError } from '../../src/core/errors.ts';
import { newRunId } from '../../src/core/ids.ts';
import { settledFlag, settleTurns, within } from '../helpers.ts';
import { type ConformanceContext, NOTIFY_TIMEOUT_MS, Q } from './context.ts';

export function notificationConformance(c: ConformanceContext): void {
  const { makeBroker, open, controller, test, reserveAll, enqueueOne } = c;
  describe('waitForWork and watch (one broker)', () => {
    test('waitForWork resolves when `until` is reached (or already past)', async () => {
      const b = await open();
      const c = controller();
      await within(b.waitForWork([Q], Date.now() + 50, c.signal), NOTIFY_TIMEOUT_MS, 'waitForWork until now+50ms');
      await within(b.waitForWork([Q], Date.now() - 1000, c.signal), NOTIFY_TIMEOUT_MS, 'waitForWork with until in the past');
    });

    test('waitForWork resolves (does not reject) when the signal aborts, or was already aborted', async () => {
      const b = await open();
      const c = controller();
      const waiting = b.waitForWork([Q], null, c.signal);
      c.abort();
      await within(waiting, NOTIFY_TIMEOUT_MS, 'waitForWork after abort');
      await within(b.waitForWork([Q], null, c.signal), NOTIFY_TIMEOUT_MS, 'waitForWork with an aborted signal');
      const d = controller();
      const far = b.waitForWork([Q], Date.now() + 3_600_000, d.signal);
      d.abort();
      await within(far, NOTIFY_TIMEOUT_MS, 'waitForWork with a far until, aborted');
    });

    test('waitForWork blocks until work arrives (no until), then an enqueue through the same broker wakes it', async () => {
      const b = await open();
      assert.deepStrictEqual((await reserveAll(b, 'w1', Date.now())).runs, [], 'nothing to reserve');
      const c = controller();
      const waiting = b.waitForWork([Q], null, c.signal);
      const woken = settledFlag(waiting);
      await b.ping();
      await settleTurns(200);
      assert.equal(woken.settled, false, 'no work since the last reserve: waitForWork is still waiting');
      await enqueueOne(b, Date.now());
      await within(waiting, NOTIFY_TIMEOUT_MS, 'waitForWork woken by an enqueue through the same broker');
    });

    test('waitForWork with a far `until` blocks too, until the signal aborts', async () => {
      const b = await open();
      await reserveAll(b, 'w1', Date.now());
      const c = controller();
      const waiting = b.waitForWork([Q], Date.now() + 3_600_000, c.signal);
      const woken = settledFlag(waiting);
      await settleTurns(200);
      assert.equal(woken.settled, false, 'nothing due for an hour: still waiting');
      c.abort();
      await within(waiting, NOTIFY_TIMEOUT_MS, 'waitForWork after abort');
    });

    test('an enqueue between the last reserve and waitForWork is not lost', async () => {
      const b = await open();
      await reserveAll(b, 'w1', Date.now());
      await enqueueOne(b, Date.now());
      await settleTurns(); // the notification comes and goes with nobody waiting
      const c = controller();
      // No until: only the wake-up of that enqueue can end this wait (the test's limit ends a lost one).
      await within(b.waitForWork([Q], null, c.signal), NOTIFY_TIMEOUT_MS, 'waitForWork after an enqueue it did not see happen');
    });

    test('close() resolves a pending waitForWork; a second close() resolves; ping then throws', async () => {
      const b = await makeBroker();
      let closed = false;
      try {
        await reserveAll(b, 'w1', Date.now());
        const c = controller();
        const waiting = b.waitForWork([Q], null, c.signal);
        const woken = settledFlag(waiting);
        await settleTurns();
        assert.equal(woken.settled, false, 'waiting before close()');
        await within(b.close(), NOTIFY_TIMEOUT_MS, 'close()');
        closed = true;
        await within(waiting, NOTIFY_TIMEOUT_MS, 'the pending waitForWork, resolved by close()');
        await within(b.close(), NOTIFY_TIMEOUT_MS, 'a second close()');
        await assert.rejects(b.ping(), BrokerUnavailableError, 'ping on a closed broker throws BrokerUnavailableError');
      } finally {
        if (!closed) await b.close();
      }
    });

    test('watch: stopping is safe and idempotent', async () => {
      const b = await open();
      const id = await enqueueOne(b, Date.now());
      const stop = await b.watch(id, () => {});
      stop();
      stop();
      const unknown = await b.watch(newRunId(Q), () => {});
      unknown();
    });
  });
}
