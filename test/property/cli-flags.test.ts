// Property: `errand worker` flags. Each case is a real `errand worker` process with one bad flag
// (a bad value, a missing value, an unknown or misspelt flag, a bad module argument) among
// otherwise valid ones, in any order. It must exit 2 at once with a message naming the flag (or the
// offending module argument), and never print a stack trace. Bounded: 30 cases, each with a time
// limit. (Found: --concurrency 99999999999999999999 and --lease-ms past 2^31-1 were accepted; a
// bad --broker or --queues value was not named as the flag.)
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import fc from 'fast-check';
import { z } from 'zod';
import { ConfigError, createErrand } from '../../src/index.ts';
import { quietLogger } from '../fixtures/brokers.ts';
import { CLI, exitOf, type Proc, spawnNode, stopProc } from '../fixtures/procs.ts';
import { tempDir } from '../helpers.ts';

const FIXTURE = new URL('../fixtures/echo-tasks.ts', import.meta.url).pathname;
const CASES = 30;
const EXIT_LIMIT_MS = 20_000;

interface Bad {
  /** Arguments after `worker`, the module included (or not). */
  args: string[];
  /** What the message must contain. */
  mention: string;
}

const valid = fc.record(
  {
    concurrency: fc.integer({ min: 1, max: 50 }).map((n) => ['--concurrency', String(n)]),
    lease: fc.integer({ min: 1000, max: 60_000 }).map((n) => [`--lease-ms=${n}`]),
    grace: fc.integer({ min: 0, max: 5000 }).map((n) => ['--grace-ms', String(n)]),
    queues: fc.subarray(['alpha', 'bravo', 'golf', 'delta'], { minLength: 1 }).map((q) => ['--queues', q.join(',')]),
  },
  { requiredKeys: [] },
);

const badNumber = fc.constantFrom('0', '-1', '1.5', 'abc', '', '1e3', ' 5', '0x10', '99999999999999999999', 'Infinity', 'NaN', '٣');

const bad: fc.Arbitrary<{ flags: string[]; mention: string; keep?: 'concurrency' | 'lease' | 'grace' | 'queues' }> = fc.oneof(
  fc
    .tuple(fc.constantFrom('concurrency', 'lease-ms', 'grace-ms'), badNumber, fc.boolean())
    // A grace of 0 is allowed (stop at once): bad for the other two only.
    .filter(([flag, v]) => !(flag === 'grace-ms' && v === '0'))
    .map(([flag, v, eq]) => ({
      flags: eq ? [`--${flag}=${v}`] : [`--${flag}`, v],
      mention: `--${flag}`,
      keep: flag === 'concurrency' ? ('concurrency' as const) : flag === 'lease-ms' ? ('lease' as const) : ('grace' as const),
    })),
  fc.constantFrom('--concurrency', '--lease-ms', '--grace-ms', '--queues', '--broker').map((flag) => ({ flags: [flag], mention: flag })),
  fc
    .constantFrom('--concurency', '--queue', '--lease', '-c', '--verbose', '--Broker', '--grace_ms')
    .map((flag) => ({ flags: [flag, '1'], mention: flag })),
  fc
    .constantFrom('', ',', ' , ', 'nope', 'alpha,nope', 'ALPHA')
    .map((q) => ({ flags: ['--queues', q], mention: '--queues', keep: 'queues' as const })),
  fc
    .constantFrom('http://127.0.0.1:6379', 'redis://', 'sqlite:', 'mysql://db/x', 'redis+cluster://a:1,,b:2', 'nonsense')
    .map((url) => ({ flags: ['--broker', url], mention: '--broker' })),
);

/** A case: the valid flags (minus the one the bad flag replaces), the bad flag, in any order; the module first or last. */
const caseArb: fc.Arbitrary<Bad> = fc
  .tuple(valid, bad, fc.nat(), fc.boolean(), fc.constantFrom('ok', 'missing', 'none', 'two'))
  .map(([good, b, at, moduleFirst, mod]) => {
    const groups = Object.entries(good)
      .filter(([k]) => k !== b.keep)
      .map(([, v]) => v);
    groups.splice(at % (groups.length + 1), 0, b.flags);
    const flags = groups.flat();
    if (mod === 'ok') return { args: moduleFirst ? [FIXTURE, ...flags] : [...flags, FIXTURE], mention: b.mention };
    // A bad module argument instead of a bad flag (the flags then all valid).
    const goodFlags = Object.values(good).flat();
    if (mod === 'missing') return { args: [...goodFlags, '/nonexistent/tasks.ts'], mention: '/nonexistent/tasks.ts' };
    if (mod === 'none') return { args: goodFlags, mention: 'exactly one task module' };
    return { args: [FIXTURE, ...goodFlags, FIXTURE], mention: 'exactly one task module' };
  });

describe('property: errand worker flags', () => {
  const procs: Proc[] = [];
  after(async () => {
    await Promise.all(procs.map((p) => stopProc(p, 2000)));
  });

  it(`${CASES} cases with one bad flag: exit 2, a message naming it, no stack trace`, async () => {
    // A broker that would work: only the bad flag can stop the worker.
    const broker = `sqlite:${join(tempDir('errand-prop-cli'), 'errand.db')}`;
    await fc.assert(
      fc.asyncProperty(caseArb, async ({ args, mention }) => {
        const p = spawnNode([CLI, 'worker', ...args], { ERRAND_BROKER_URL: broker, LOG_LEVEL: 'warn' });
        procs.push(p);
        const code = await exitOf(p, EXIT_LIMIT_MS, `errand worker ${args.join(' ')}`);
        const stderr = p.stderr();
        assert.equal(code, 2, `errand worker ${JSON.stringify(args)} exited ${code}:\n${stderr}`);
        assert.ok(stderr.startsWith('errand: '), `one "errand: ..." message first:\n${stderr}`);
        assert.ok(stderr.includes(mention), `the message names ${JSON.stringify(mention)}:\n${stderr}`);
        assert.doesNotMatch(stderr, /\n\s+at .+:\d+:\d+/, `no stack trace:\n${stderr}`);
      }),
      { numRuns: CASES, endOnFailure: true },
    );
  });

  it("the Worker refuses the values the flags refuse: timers past Node's limit, unsafe integers", () => {
    const app = createErrand({ broker: 'sqlite::memory:', logger: quietLogger });
    app.task('t', { input: z.object({}) }, () => null);
    for (const options of [
      { leaseMs: 2 ** 31 },
      { leaseMs: 1e12 },
      { renewEvery: 2 ** 31, leaseMs: 2 ** 31 - 1 },
      { pruneEvery: 2 ** 31 },
      { concurrency: 1e20 },
    ]) {
      assert.throws(() => app.worker(options), ConfigError, JSON.stringify(options));
    }
    assert.equal(app.worker({ leaseMs: 2 ** 31 - 1 }).renewEvery, Math.floor((2 ** 31 - 1) / 4));
  });
});
