/**
 * The broker conformance suite, section: `getRun` of odd ids and `ping`: reachable and unreachable
 * storage. See `suite.ts`.
 */
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import { newRunId } from '../../src/core/ids.ts';
import { within } from '../helpers.ts';
import { type ConformanceContext, TEST_TIMEOUT_MS, Q } from './context.ts';

export function connectionConformance(c: ConformanceContext): void {
  const { options, open, track, test, enqueueOne } = c;
  describe('getRun and ping', () => {
    test('getRun of an unknown or malformed id is null, never a throw', async () => {
      const b = await open();
      await enqueueOne(b, Date.now());
      const odd = [
        newRunId(Q),
        newRunId('other'),
        '',
        'x',
        'a.b',
        `${Q}.`,
        `.${'0'.repeat(26)}`,
        `${Q}.${'!'.repeat(26)}`,
        `{${Q}}.${'0'.repeat(26)}`,
        `${Q}:*`,
        '*',
        "'; DROP TABLE runs; --",
        'ü'.repeat(300),
        `${'q'.repeat(65)}.${'0'.repeat(26)}`,
        `${Q}.${'0'.repeat(26)}\n`,
      ];
      for (const id of odd) assert.equal(await b.getRun(id), null, `getRun(${JSON.stringify(id.slice(0, 40))})`);
    });

    test('ping resolves when storage is reachable', async () => {
      const b = await open();
      await b.ping();
    });

    test('ping throws when storage is unreachable', async () => {
      assert.ok(options.unreachable, 'brokerConformance needs an `unreachable` hook');
      const make = options.unreachable;
      await within(
        assert.rejects(async () => {
          const b = await make();
          track(b);
          await b.ping();
        }),
        TEST_TIMEOUT_MS / 2,
        'ping against unreachable storage',
      );
    });
  });
}
