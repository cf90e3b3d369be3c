/**
 * The BrokerInspector part of the broker conformance suite: listing runs, queues and workers,
 * pausing, purging, bulk replays and per-minute stats, as the doc comments at the end of
 * `src/broker/types.ts` describe them. Every broker that implements BrokerInspector must pass it.
 *
 * Usage, from an entry file `test/conformance/<broker>.test.ts`, with the same factory as
 * `brokerConformance` (see `suite.ts`: fresh storage, or `sameStorageAs` another broker):
 *
 *   inspectorConformance('redis', makeBroker);
 *
 * A missing method is a failure, never a skip.
 *
 * Time is driven through the `now` arguments (stats minutes included); the only real waits are for
 * wake-ups, and the tests assert on what happens, never on how long it took.
 */
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import {
  type Broker,
  type BrokerInspector,
  type BrokerOptions,
  LATENCY_BUCKETS_MS,
  type MinuteStats,
  type NewRun,
  RUN_STATES,
  type RunFilter,
  type RunPage,
  type RunRecord,
  type WorkerInfo,
} from '../../src/broker/types.ts';
import { newRunId } from '../../src/core/ids.ts';
import { within } from '../helpers.ts';
import { type ConformanceOptions, type MakeBroker, PeerProcess, SharedStorageUnsupported } from './suite.ts';

type Inspectable = Broker & BrokerInspector;

const INSPECTOR_METHODS: readonly (keyof BrokerInspector)[] = [
  'listRuns',
  'listQueues',
  'heartbeat',
  'removeWorker',
  'listWorkers',
  'pause',
  'resume',
  'pausedQueues',
  'purge',
  'retryFailed',
  'stats',
];

const TEST_TIMEOUT_MS = 20_000;
/** Safety net for wake-ups: far above what any broker needs. */
const NOTIFY_TIMEOUT_MS = 5_000;

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const LEASE = 30_000;
const RETAIN = 3_600_000;
const T1 = 'inspect.one';
const T2 = 'inspect.two';

let inputSeq = 0;

/** A run to enqueue, due at `now` unless `over.runAt` says otherwise. Ids are made in call order, so they sort in enqueue order. */
function newRun(queue: string, now: number, over: Partial<NewRun> = {}): NewRun {
  inputSeq++;
  return { id: newRunId(queue), task: T1, queue, input: JSON.stringify({ seq: inputSeq }), priority: 0, runAt: now, ...over };
}

function ids(runs: readonly { id: string }[]): string[] {
  return runs.map((r) => r.id);
}

function errorText(message: string): string {
  return JSON.stringify({ name: 'Error', message });
}

/** A histogram with the given counts by bucket index, zeros elsewhere. */
function hist(counts: Record<number, number> = {}): number[] {
  const h = new Array<number>(LATENCY_BUCKETS_MS.length + 1).fill(0);
  for (const [i, n] of Object.entries(counts)) h[Number(i)] = n;
  return h;
}

/** The index of the bucket that holds `ms`, spelled out from the contract (not from any broker). */
function bucket(ms: number): number {
  const i = LATENCY_BUCKETS_MS.findIndex((bound) => Math.max(0, ms) <= bound);
  return i === -1 ? LATENCY_BUCKETS_MS.length : i;
}

function minuteOf(t: number): number {
  return Math.floor(t / MINUTE) * MINUTE;
}

function minuteStats(minute: number, over: Partial<MinuteStats> = {}): MinuteStats {
  return { minute, enqueued: 0, succeeded: 0, failed: 0, retried: 0, wait: hist(), run: hist(), ...over };
}

/** The contract lets a broker leave out minutes with nothing counted (or list them as zeros): compare without them. */
function counted(minutes: readonly MinuteStats[] | undefined): MinuteStats[] {
  assert.ok(Array.isArray(minutes), `stats should answer an array for every requested queue, got ${JSON.stringify(minutes)}`);
  const list: readonly MinuteStats[] = minutes;
  for (const m of list) {
    assert.equal(m.wait.length, LATENCY_BUCKETS_MS.length + 1, `minute ${m.minute}: wait has LATENCY_BUCKETS_MS.length + 1 entries`);
    assert.equal(m.run.length, LATENCY_BUCKETS_MS.length + 1, `minute ${m.minute}: run has LATENCY_BUCKETS_MS.length + 1 entries`);
    assert.equal(m.minute % MINUTE, 0, `minute ${m.minute} is the start of a minute`);
  }
  const minutes_ = list.map((m) => m.minute);
  assert.deepStrictEqual(
    minutes_,
    [...minutes_].sort((a, b) => a - b),
    'minutes oldest first',
  );
  assert.equal(new Set(minutes_).size, minutes_.length, 'each minute once');
  return list.filter(
    (m) => m.enqueued || m.succeeded || m.failed || m.retried || m.wait.some((n) => n !== 0) || m.run.some((n) => n !== 0),
  );
}

/** Bucket-wise sum of histograms. */
function sumHist(hs: readonly number[][]): number[] {
  const out = hist();
  for (const h of hs) for (let i = 0; i < out.length; i++) out[i]! += h[i] ?? 0;
  return out;
}

function filterLabel(f: Omit<RunFilter, 'limit' | 'cursor'>): string {
  return JSON.stringify(f);
}

/**
 * `options.connection` (as for `brokerConformance`): with it, what one broker writes is also read
 * back by a broker in another process (`peer.ts`), which shares nothing with it but storage.
 */
export function inspectorConformance(name: string, makeBroker: MakeBroker, options: Pick<ConformanceOptions, 'connection'> = {}): void {
  describe(`broker inspector conformance: ${name}`, () => {
    let opened: Broker[] = [];
    let peers: PeerProcess[] = [];
    let controllers: AbortController[] = [];

    afterEach(async () => {
      for (const c of controllers) c.abort();
      controllers = [];
      const brokers = opened;
      opened = [];
      const children = peers;
      peers = [];
      const results = await Promise.allSettled([
        ...brokers.map((b) => within(b.close(), 5_000, `${name} broker close()`)),
        ...children.map((p) => p.close()),
      ]);
      const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed.length) throw new Error(`close() failed: ${failed.map((f) => String(f.reason)).join('; ')}`);
    });

    const controller = (): AbortController => {
      const c = new AbortController();
      controllers.push(c);
      return c;
    };

    const asInspector = (b: Broker): Inspectable => {
      const missing = INSPECTOR_METHODS.filter((m) => typeof (b as Partial<Inspectable>)[m] !== 'function');
      assert.deepStrictEqual(missing, [], `the ${name} broker should implement every BrokerInspector method`);
      return b as Inspectable;
    };

    /** A broker on fresh storage. */
    const open = async (opts?: BrokerOptions): Promise<Inspectable> => {
      const b = await makeBroker(opts);
      opened.push(b);
      return asInspector(b);
    };
    /** Another instance on the storage of `b` (as another process would open it). */
    const share = async (b: Broker, opts?: BrokerOptions): Promise<Inspectable> => {
      const other = await makeBroker({ ...opts, sameStorageAs: b });
      opened.push(other);
      return asInspector(other);
    };

    /**
     * The others that read the storage of `b`: another instance in this process and, with
     * `options.connection`, a broker in another process (answering the same methods over IPC).
     */
    const shares = async (b: Broker): Promise<{ label: string; other: Inspectable }[]> => {
      const out = [{ label: 'another instance', other: await share(b) }];
      if (options.connection) {
        const peer = await PeerProcess.start(options.connection(b), INSPECTOR_METHODS);
        peers.push(peer);
        out.push({ label: 'another process', other: peer.broker as unknown as Inspectable });
      }
      return out;
    };

    const test = (title: string, fn: () => Promise<void>): void => {
      it(title, { timeout: TEST_TIMEOUT_MS }, async (t) => {
        try {
          await fn();
        } catch (err) {
          if (!(err instanceof SharedStorageUnsupported)) throw err;
          t.skip(err.message);
        }
      });
    };

    async function getRun(b: Broker, id: string): Promise<RunRecord> {
      const rec = await b.getRun(id);
      assert.ok(rec, `getRun(${id}) should find the run`);
      return rec;
    }

    async function enqueueOne(b: Broker, now: number, queue: string, over: Partial<NewRun> = {}): Promise<string> {
      const run = newRun(queue, now, over);
      const [res] = await b.enqueue([run], now);
      assert.ok(res?.created, 'enqueue should create the run');
      return res.id;
    }

    async function reserve(b: Broker, queues: string[], now: number, max = 1000, leaseMs = LEASE, workerId = 'w1') {
      return b.reserve({ workerId, queues, max, leaseMs, now });
    }

    /** Enqueues and fails runs (one reserve per queue, so that exactly these runs fail). */
    async function failedRuns(b: Broker, now: number, runs: NewRun[]): Promise<string[]> {
      await b.enqueue(runs, now);
      for (const queue of new Set(runs.map((r) => r.queue))) {
        const { runs: got } = await reserve(b, [queue], now);
        const mine = got.filter((r) => runs.some((x) => x.id === r.id));
        const statuses = await b.settle(
          'w1',
          mine.map((r) => ({ id: r.id, attempt: r.attempt, outcome: 'failed' as const, error: errorText('boom'), retentionMs: RETAIN })),
          now,
        );
        assert.ok(
          statuses.every((s) => s === 'ok'),
          'settling the runs as failed',
        );
      }
      for (const r of runs) assert.equal((await getRun(b, r.id)).state, 'failed', `run ${r.id} failed`);
      return ids(runs);
    }

    /**
     * Pages through `filter` with `limit` and returns every run seen. Checks on the way: no page
     * over `limit`, every page but the last exactly `limit` runs, `next` null exactly at the end,
     * no run twice.
     */
    async function listAll(b: Inspectable, filter: Omit<RunFilter, 'limit' | 'cursor'>, limit: number): Promise<RunRecord[]> {
      const seen: RunRecord[] = [];
      let cursor: string | undefined;
      for (let page = 0; ; page++) {
        assert.ok(page < 10_000, `listRuns(${filterLabel(filter)}, limit ${limit}) does not end`);
        const res: RunPage = await b.listRuns({ ...filter, limit, ...(cursor !== undefined ? { cursor } : {}) });
        const label = `listRuns(${filterLabel(filter)}, limit ${limit}) page ${page + 1}`;
        assert.ok(res.runs.length <= limit, `${label}: ${res.runs.length} runs, over the limit`);
        seen.push(...res.runs);
        if (res.next === null) break;
        assert.equal(typeof res.next, 'string', `${label}: next is a string or null`);
        assert.equal(res.runs.length, limit, `${label}: a page that is not the last holds exactly \`limit\` runs`);
        cursor = res.next;
      }
      const unique = new Set(ids(seen));
      assert.equal(unique.size, seen.length, `listRuns(${filterLabel(filter)}, limit ${limit}): a run listed twice`);
      return seen;
    }

    const worker = (id: string, over: Partial<WorkerInfo> = {}): WorkerInfo => ({
      id,
      host: `host-${id}`,
      pid: 4242,
      queues: ['qa', 'qb'],
      concurrency: 8,
      active: 3,
      startedAt: 1_700_000_000_000,
      ...over,
    });

    // ---------------------------------------------------------------------------------------------
    describe('listRuns', () => {
      test('fresh storage: an empty page, next null', async () => {
        const b = await open();
        assert.deepStrictEqual(await b.listRuns({ limit: 100 }), { runs: [], next: null });
      });

      test('newest first by enqueue time across queues (not by the text of the id, which starts with the queue)', async () => {
        const b = await open();
        const t0 = Date.now();
        // Queue names sort against time: ordering by id text would put every `zq` run first.
        const plan = ['zq', 'aq', 'zq', 'mq', 'aq', 'zq', 'aq'];
        const order: string[] = [];
        for (let i = 0; i < plan.length; i++) order.push(await enqueueOne(b, t0 + i, plan[i]!, { task: i % 2 ? T1 : T2 }));
        const page = await b.listRuns({ limit: 100 });
        assert.deepStrictEqual(ids(page.runs), [...order].reverse(), 'newest first');
        assert.equal(page.next, null, 'everything fits on one page: next null');
        const records = await Promise.all(order.map((id) => getRun(b, id)));
        assert.deepStrictEqual(page.runs, [...records].reverse(), 'listed records are what getRun returns');
      });

      test('each filter alone and combined (queue, task, state), paged and unpaged', async () => {
        const b = await open();
        const t0 = Date.now();
        // 36 runs over 2 queues x 2 tasks, enqueued interleaved, then spread over every state.
        const runs: NewRun[] = [];
        for (let i = 0; i < 36; i++) runs.push(newRun(i % 5 < 2 ? 'qb' : 'qa', t0, { task: i % 7 < 3 ? T1 : T2 }));
        await b.enqueue(runs, t0);
        const scheduledLater = [newRun('qa', t0, { runAt: t0 + HOUR, task: T2 }), newRun('qb', t0, { runAt: t0 + HOUR })];
        await b.enqueue(scheduledLater, t0);
        const { runs: leased } = await reserve(b, ['qa', 'qb'], t0 + 1);
        assert.equal(leased.length, 36, 'every due run leased');
        const byId = new Map(leased.map((r) => [r.id, r]));
        for (let i = 0; i < runs.length; i++) {
          const r = byId.get(runs[i]!.id);
          assert.ok(r, `run ${i} leased`);
          const lease = { id: r.id, attempt: r.attempt };
          switch (i % 6) {
            case 0:
              assert.deepStrictEqual(await b.settle('w1', [{ ...lease, outcome: 'succeeded', result: '1', retentionMs: RETAIN }], t0 + 2), [
                'ok',
              ]);
              break;
            case 1:
              assert.deepStrictEqual(
                await b.settle('w1', [{ ...lease, outcome: 'failed', error: errorText('x'), retentionMs: RETAIN }], t0 + 2),
                ['ok'],
              );
              break;
            case 2:
              assert.equal((await b.cancel(r.id, t0 + 2)).outcome, 'cancelled');
              break;
            case 3:
              await b.release('w1', [lease], t0 + 2);
              break;
            case 4:
              assert.deepStrictEqual(
                await b.settle('w1', [{ ...lease, outcome: 'retry', error: errorText('x'), runAt: t0 + HOUR }], t0 + 2),
                ['ok'],
              );
              break;
            default:
              break; // stays active
          }
        }
        const all = [...runs, ...scheduledLater];
        const records = await Promise.all(all.map((r) => getRun(b, r.id)));
        const newestFirst = [...records].reverse();
        const statesSeen = new Set(records.map((r) => r.state));
        assert.deepStrictEqual([...statesSeen].sort(), [...RUN_STATES].sort(), 'the setup covers every state');

        const filters: Omit<RunFilter, 'limit' | 'cursor'>[] = [];
        for (const queue of [undefined, 'qa', 'qb'])
          for (const task of [undefined, T1, T2])
            for (const state of [undefined, ...RUN_STATES]) {
              filters.push({
                ...(queue !== undefined && { queue }),
                ...(task !== undefined && { task }),
                ...(state !== undefined && { state }),
              });
            }
        for (const f of filters) {
          const expected = newestFirst.filter(
            (r) =>
              (f.queue === undefined || r.queue === f.queue) &&
              (f.task === undefined || r.task === f.task) &&
              (f.state === undefined || r.state === f.state),
          );
          const whole = await b.listRuns({ ...f, limit: 500 });
          assert.deepStrictEqual(ids(whole.runs), ids(expected), `listRuns(${filterLabel(f)}, limit 500): the matching runs, newest first`);
          assert.equal(whole.next, null, `listRuns(${filterLabel(f)}, limit 500): one page, next null`);
          assert.deepStrictEqual(whole.runs, expected, `listRuns(${filterLabel(f)}): records as getRun returns them`);
          assert.deepStrictEqual(ids(await listAll(b, f, 4)), ids(expected), `listRuns(${filterLabel(f)}) paged by 4`);
        }
        assert.deepStrictEqual(ids(await listAll(b, {}, 1)), ids(newestFirst), 'listRuns({}) paged by 1');
        assert.deepStrictEqual(
          ids(await listAll(b, { queue: 'qa', task: T2 }, 1)),
          ids(newestFirst.filter((r) => r.queue === 'qa' && r.task === T2)),
        );
      });

      test('pagination through 250 runs with limit 100: no duplicates, no gaps, next null at the end', async () => {
        const b = await open();
        const t0 = Date.now();
        const runs = Array.from({ length: 250 }, (_, i) => newRun('pg', t0, { task: i % 2 ? T1 : T2 }));
        await b.enqueue(runs, t0);
        // 50 leave `queued` (25 active, 25 succeeded), so that exactly 200 stay queued.
        const { runs: leased } = await reserve(b, ['pg'], t0 + 1, 50);
        assert.equal(leased.length, 50);
        await b.settle(
          'w1',
          leased
            .slice(0, 25)
            .map((r) => ({ id: r.id, attempt: r.attempt, outcome: 'succeeded' as const, result: '1', retentionMs: RETAIN })),
          t0 + 2,
        );
        const expected = ids(runs).reverse();

        const p1 = await b.listRuns({ limit: 100 });
        assert.deepStrictEqual(ids(p1.runs), expected.slice(0, 100), 'page 1: the 100 newest');
        assert.ok(p1.next, 'page 1 has a next cursor');
        // Runs enqueued while paging are newer than the cursor: they do not shift the older pages.
        const newer = Array.from({ length: 5 }, () => newRun('pg', t0 + 10));
        await b.enqueue(newer, t0 + 10);
        const p2 = await b.listRuns({ limit: 100, cursor: p1.next });
        assert.deepStrictEqual(ids(p2.runs), expected.slice(100, 200), 'page 2: the next 100, unaffected by newer runs');
        assert.ok(p2.next, 'page 2 has a next cursor');
        const p3 = await b.listRuns({ limit: 100, cursor: p2.next });
        assert.deepStrictEqual(ids(p3.runs), expected.slice(200), 'page 3: the oldest 50');
        assert.equal(p3.next, null, 'page 3 is the last: next null');

        const withNewer = [...ids(newer).reverse(), ...expected];
        assert.deepStrictEqual(ids(await listAll(b, {}, 100)), withNewer, 'all 255 runs, newest first');
        assert.deepStrictEqual(ids(await listAll(b, { queue: 'pg' }, 100)), withNewer, 'by queue (runs in several states)');
        assert.deepStrictEqual(
          ids(await listAll(b, { task: T1 }, 100)),
          withNewer.filter((id) => runs.find((r) => r.id === id)?.task === T1 || newer.some((r) => r.id === id)),
          'by task',
        );

        // The queued runs (200 of the first batch, and the 5 newer ones) over pages by state.
        const queued = expected.filter((id) => !leased.some((r) => r.id === id));
        assert.equal(queued.length, 200);
        const q1 = await b.listRuns({ queue: 'pg', state: 'queued', limit: 100 });
        assert.deepStrictEqual(ids(q1.runs), [...ids(newer).reverse(), ...queued].slice(0, 100));
        const q2 = await b.listRuns({ queue: 'pg', state: 'queued', limit: 100, cursor: q1.next ?? undefined });
        const q3 = q2.next ? await b.listRuns({ queue: 'pg', state: 'queued', limit: 100, cursor: q2.next }) : null;
        assert.deepStrictEqual(
          [...ids(q1.runs), ...ids(q2.runs), ...(q3 ? ids(q3.runs) : [])],
          [...ids(newer).reverse(), ...queued],
          'all 205 queued runs over three pages',
        );
        assert.equal(q3?.next, null, 'the last queued page: next null');

        // A listing of exactly `limit` runs ends on that page: next null, not a cursor to an empty page.
        const active = await b.listRuns({ state: 'active', limit: 25 });
        assert.equal(active.runs.length, 25);
        assert.equal(active.next, null, 'exactly `limit` matching runs: next null on the first page');
        const exact = await b.listRuns({ queue: 'pg', state: 'succeeded', limit: 5 });
        let cursor = exact.next;
        let pages = 1;
        while (cursor !== null) {
          const p = await b.listRuns({ queue: 'pg', state: 'succeeded', limit: 5, cursor });
          assert.equal(p.runs.length, 5, `succeeded page ${pages + 1}: 25 runs in pages of 5, never an empty page`);
          cursor = p.next;
          pages++;
        }
        assert.equal(pages, 5, '25 succeeded runs in exactly 5 pages of 5');
      });

      test('limit outside 1..500 is clamped: above 500 a page holds 500, below 1 it holds 1, and paging stays exact', async () => {
        // The contract declares `limit` "Page size, 1 to 500" without saying what a broker does with
        // anything else. The bound protects the broker ("cheap for 100,000 runs and more"), so the
        // broker enforces it itself rather than trust every caller, and a read answers rather than
        // throws (as getRun does for malformed ids): a limit is clamped into 1..500.
        const b = await open();
        const t0 = Date.now();
        const runs = Array.from({ length: 502 }, () => newRun('cl', t0));
        await b.enqueue(runs, t0);
        const expected = ids(runs).reverse();

        const big = await b.listRuns({ limit: 1000 });
        assert.equal(big.runs.length, 500, 'limit 1000: 500 runs');
        assert.deepStrictEqual(ids(big.runs), expected.slice(0, 500));
        assert.ok(big.next, 'and a cursor to the rest');
        const rest = await b.listRuns({ limit: 1000, cursor: big.next });
        assert.deepStrictEqual(ids(rest.runs), expected.slice(500), 'the next page: the last 2');
        assert.equal(rest.next, null);

        for (const limit of [0, -5]) {
          const small = await b.listRuns({ limit });
          assert.deepStrictEqual(ids(small.runs), expected.slice(0, 1), `limit ${limit}: clamped to 1, the newest run`);
          assert.ok(small.next, `limit ${limit}: a cursor to the rest`);
          const second = await b.listRuns({ limit, cursor: small.next });
          assert.deepStrictEqual(ids(second.runs), expected.slice(1, 2), `limit ${limit}: the second page is the next run`);
        }
        assert.equal((await b.listRuns({ limit: 500 })).runs.length, 500, 'limit 500 is allowed');
        assert.equal((await b.listRuns({ limit: 1 })).runs.length, 1, 'limit 1 is allowed');
      });

      test('filters naming nothing known (unknown queue, task, ids used as names) give an empty page, never a throw', async () => {
        const b = await open();
        const t0 = Date.now();
        const id = await enqueueOne(b, t0, 'known');
        const empty = { runs: [], next: null };
        const unknownId = newRunId('known');
        for (const f of [
          { queue: 'no-such-queue' },
          { task: 'no.such.task' },
          { queue: 'known', task: 'no.such.task' },
          { queue: 'no-such-queue', state: 'queued' as const },
          { task: 'no.such.task', state: 'queued' as const },
          { queue: 'known', state: 'failed' as const },
          { queue: id },
          { task: id },
          { queue: unknownId, task: unknownId, state: 'queued' as const },
          { queue: '*' },
          { task: '%' },
          { queue: "'; DROP TABLE runs; --" },
        ]) {
          assert.deepStrictEqual(await b.listRuns({ ...f, limit: 10 }), empty, `listRuns(${filterLabel(f)})`);
        }
        assert.deepStrictEqual(ids((await b.listRuns({ queue: 'known', limit: 10 })).runs), [id], 'the known run is still listed');
      });
    });

    // ---------------------------------------------------------------------------------------------
    describe('listQueues', () => {
      test('every queue the broker has seen, once each, still after its runs are gone', async () => {
        const b = await open();
        const t0 = Date.now();
        assert.deepStrictEqual(await b.listQueues(), [], 'fresh storage: no queue');
        await b.enqueue([newRun('qa', t0), newRun('qb', t0), newRun('qa', t0, { runAt: t0 + HOUR })], t0);
        await enqueueOne(b, t0, 'qc');
        assert.deepStrictEqual([...(await b.listQueues())].sort(), ['qa', 'qb', 'qc']);
        assert.equal(await b.purge('qc', t0 + 1), 1);
        for (const { label, other } of await shares(b))
          assert.deepStrictEqual([...(await other.listQueues())].sort(), ['qa', 'qb', 'qc'], `seen from ${label}, qc included`);
      });
    });

    // ---------------------------------------------------------------------------------------------
    describe('workers', () => {
      test('heartbeat -> listWorkers with every field, lastSeen and ttlMs; a second heartbeat updates the entry', async () => {
        const b = await open();
        const t0 = Date.now();
        const w1 = worker('w-1', { queues: ['qa', 'qb'], concurrency: 8, active: 3, startedAt: t0 - 5000 });
        const w2 = worker('w-2', { host: 'other-host', pid: 7, queues: ['qa'], concurrency: 1, active: 0, startedAt: t0 - 100 });
        assert.deepStrictEqual(await b.listWorkers(t0), [], 'fresh storage: no worker');
        await b.heartbeat(w1, 15_000, t0);
        await b.heartbeat(w2, 30_000, t0 + 100);
        const byId = (ws: { id: string }[]) => [...ws].sort((x, y) => (x.id < y.id ? -1 : x.id > y.id ? 1 : 0));
        assert.deepStrictEqual(byId(await b.listWorkers(t0 + 200)), [
          { ...w1, lastSeen: t0, ttlMs: 15_000 },
          { ...w2, lastSeen: t0 + 100, ttlMs: 30_000 },
        ]);
        const w1b = { ...w1, active: 8, queues: ['qa'] };
        await b.heartbeat(w1b, 20_000, t0 + 5000);
        const expected = [
          { ...w1b, lastSeen: t0 + 5000, ttlMs: 20_000 },
          { ...w2, lastSeen: t0 + 100, ttlMs: 30_000 },
        ];
        assert.deepStrictEqual(byId(await b.listWorkers(t0 + 5001)), expected, 'one entry per worker id, updated');
        for (const { label, other } of await shares(b))
          assert.deepStrictEqual(byId(await other.listWorkers(t0 + 5001)), expected, `seen from ${label}`);
      });

      test('a lost worker (lastSeen + ttl < now) is still listed; removeWorker removes it; after an hour it is forgotten', async () => {
        const b = await open();
        const t0 = Date.now();
        const w = worker('w-lost');
        const keep = worker('w-keep');
        await b.heartbeat(w, 15_000, t0);
        await b.heartbeat(keep, 15_000, t0);
        for (const now of [t0 + 15_001, t0 + 30 * MINUTE]) {
          const listed = (await b.listWorkers(now)).find((x) => x.id === 'w-lost');
          assert.deepStrictEqual(listed, { ...w, lastSeen: t0, ttlMs: 15_000 }, `lost worker listed at now = t0 + ${now - t0}`);
        }
        await b.removeWorker('w-lost');
        assert.deepStrictEqual(
          (await b.listWorkers(t0 + 15_001)).map((x) => x.id),
          ['w-keep'],
          'removed; the other worker stays',
        );
        await b.removeWorker('w-lost');
        await b.removeWorker('never-seen');
        assert.deepStrictEqual(await b.listWorkers(t0 + 2 * HOUR), [], 'a worker silent for over an hour is not listed');
      });
    });

    // ---------------------------------------------------------------------------------------------
    describe('pause and resume', () => {
      test('a paused queue accepts runs but reserve skips it (runs stay queued) until resumed; other queues are served', async () => {
        const b = await open();
        const t0 = Date.now();
        const a1 = await enqueueOne(b, t0, 'pq');
        const busy = await enqueueOne(b, t0, 'pq');
        const { runs: first } = await reserve(b, ['pq'], t0, 1);
        assert.deepStrictEqual(ids(first), [a1]);
        await b.pause('pq');
        await b.pause('pq');
        assert.deepStrictEqual(await b.pausedQueues(), ['pq'], 'listed once, however often paused');
        const a2 = await enqueueOne(b, t0 + 1, 'pq');
        const due = await enqueueOne(b, t0 + 1, 'pq', { runAt: t0 + 100 });
        const free = await enqueueOne(b, t0 + 1, 'free');

        const got = await reserve(b, ['pq', 'free'], t0 + 200);
        assert.deepStrictEqual(ids(got.runs), [free], 'only the run of the queue that is not paused');
        const others = await shares(b);
        for (const { label, other } of others)
          assert.deepStrictEqual((await reserve(other, ['pq'], t0 + 300)).runs, [], `${label} skips the paused queue too`);
        for (const id of [busy, a2]) assert.equal((await getRun(b, id)).state, 'queued', `run ${id} stays queued`);
        assert.ok(['queued', 'scheduled'].includes((await getRun(b, due)).state), 'the due scheduled run is not started');
        const along = await b.reserve({
          workerId: 'w1',
          queues: ['pq'],
          max: 5,
          leaseMs: 30_000,
          now: t0 + 300,
          settle: [{ id: a1, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: RETAIN }],
        });
        assert.deepStrictEqual(along.settled, ['ok'], 'a run active before the pause still settles, also along with a reserve');
        assert.deepStrictEqual(along.runs, [], 'and that reserve leases nothing');
        assert.equal((await getRun(b, a1)).state, 'succeeded');

        await b.resume('pq');
        assert.deepStrictEqual(await b.pausedQueues(), []);
        const after = await reserve(others.at(-1)!.other, ['pq'], t0 + 400);
        assert.deepStrictEqual(ids(after.runs), [busy, a2, due], 'resumed: every waiting run, in order');
        await b.resume('pq');
        await b.resume('never-paused');
        assert.deepStrictEqual(await b.pausedQueues(), [], 'resuming a queue that is not paused changes nothing');
      });

      test('pausedQueues lists every paused queue, also one without runs, from any instance', async () => {
        const b = await open();
        await enqueueOne(b, Date.now(), 'q1');
        await b.pause('q1');
        await b.pause('q2');
        await b.pause('q3');
        await b.resume('q2');
        for (const { label, other } of await shares(b))
          assert.deepStrictEqual([...(await other.pausedQueues())].sort(), ['q1', 'q3'], `seen from ${label}`);
        assert.deepStrictEqual([...(await b.pausedQueues())].sort(), ['q1', 'q3']);
      });

      test('resume wakes a worker waiting on the queue (its backlog is work again)', async () => {
        const b = await open();
        const t0 = Date.now();
        await enqueueOne(b, t0, 'pw');
        await b.pause('pw');
        assert.deepStrictEqual((await reserve(b, ['pw'], t0)).runs, [], 'paused: nothing reserved');
        const c = controller();
        const waiting = b.waitForWork(['pw'], null, c.signal);
        const other = await share(b);
        await other.resume('pw');
        await within(waiting, NOTIFY_TIMEOUT_MS, 'waitForWork woken by resume');
        assert.equal((await reserve(b, ['pw'], t0 + 1)).runs.length, 1);
      });

      if (options.connection) {
        const connection = options.connection;
        test('resume by a broker in another process wakes a worker waiting on the queue', async () => {
          const b = await open();
          const t0 = Date.now();
          await enqueueOne(b, t0, 'pw');
          await b.pause('pw');
          assert.deepStrictEqual((await reserve(b, ['pw'], t0)).runs, [], 'paused: nothing reserved');
          const peer = await PeerProcess.start(connection(b), INSPECTOR_METHODS);
          peers.push(peer);
          const c = controller();
          const waiting = b.waitForWork(['pw'], null, c.signal);
          await (peer.broker as unknown as Inspectable).resume('pw');
          await within(waiting, NOTIFY_TIMEOUT_MS, 'waitForWork woken by a resume in another process');
          assert.equal((await reserve(b, ['pw'], t0 + 1)).runs.length, 1);
        });
      }
    });

    // ---------------------------------------------------------------------------------------------
    describe('purge', () => {
      test('deletes the queued and scheduled runs of the queue and returns the count; active, finished and other queues stay', async () => {
        const b = await open();
        const t0 = Date.now();
        const done = [newRun('pu', t0), newRun('pu', t0), newRun('pu', t0), newRun('pu', t0)];
        await b.enqueue(done, t0);
        const { runs: leased } = await reserve(b, ['pu'], t0, 1000, 10 * HOUR);
        assert.equal(leased.length, 4);
        const [ok, ko, cancelled, active] = ids(done) as [string, string, string, string];
        await b.settle(
          'w1',
          [
            { id: ok, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: RETAIN },
            { id: ko, attempt: 1, outcome: 'failed', error: errorText('x'), retentionMs: RETAIN },
          ],
          t0 + 1,
        );
        await b.cancel(cancelled, t0 + 1);
        const queued = [await enqueueOne(b, t0 + 2, 'pu'), await enqueueOne(b, t0 + 2, 'pu', { priority: 5 })];
        const scheduled = [await enqueueOne(b, t0 + 2, 'pu', { runAt: t0 + HOUR })];
        const elsewhere = [await enqueueOne(b, t0 + 2, 'pu-other'), await enqueueOne(b, t0 + 2, 'pu-other', { runAt: t0 + HOUR })];

        assert.equal(await b.purge('pu', t0 + 3), 3, 'two queued and one scheduled');
        for (const id of [...queued, ...scheduled]) assert.equal(await b.getRun(id), null, `purged run ${id} is gone`);
        const states = await Promise.all([ok, ko, cancelled, active].map(async (id) => (await getRun(b, id)).state));
        assert.deepStrictEqual(states, ['succeeded', 'failed', 'cancelled', 'active'], 'active and finished runs stay');
        for (const id of elsewhere) assert.ok(await b.getRun(id), `run ${id} of another queue stays`);
        assert.deepStrictEqual(
          (await b.counts(['pu'])).pu,
          { queued: 0, scheduled: 0, active: 1, succeeded: 1, failed: 1, cancelled: 1 },
          'counts after the purge',
        );
        assert.deepStrictEqual(
          ids((await b.listRuns({ queue: 'pu', limit: 100 })).runs),
          [active, cancelled, ko, ok],
          'listed: what is left',
        );
        assert.deepStrictEqual((await reserve(b, ['pu'], t0 + 2 * HOUR)).runs, [], 'nothing purged is reserved later');
        assert.deepStrictEqual(
          await b.settle('w1', [{ id: active, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: RETAIN }], t0 + 4),
          ['ok'],
          'the active run finishes',
        );
        assert.equal(await b.purge('pu', t0 + 5), 0, 'purging again removes nothing');
        assert.equal(await b.purge('no-such-queue', t0 + 5), 0, 'an unknown queue: 0');
      });

      test('releases the idempotency keys of the runs it deletes: the same key then creates a new run', async () => {
        // Issue 20: pause, enqueue with a key, purge, resume; the same enqueue returned the purged id.
        const b = await open();
        const t0 = Date.now();
        const withKey = (k: string, runAt: number): NewRun => ({
          id: newRunId('pk'),
          task: 'inspector.echo',
          queue: 'pk',
          input: '{}',
          priority: 0,
          runAt,
          idempotencyKey: k,
          idempotencyTtl: 10 * HOUR,
        });
        await b.pause('pk');
        const created = await b.enqueue([withKey('purgeme', t0), withKey('purgeme-later', t0 + HOUR)], t0);
        assert.ok(created.every((r) => r.created));
        assert.equal(await b.purge('pk', t0 + 1), 2, 'the queued and the scheduled run of the paused queue');
        await b.resume('pk');
        const kept = withKey('kept', t0 + 1);
        await b.enqueue([kept], t0 + 1);
        assert.deepStrictEqual(ids((await reserve(b, ['pk'], t0 + 1, 1)).runs), [kept.id]);
        assert.equal(await b.purge('pk', t0 + 2), 0, 'the active run stays');
        for (const [k, runAt, state] of [
          ['purgeme', t0 + 3, 'queued'],
          ['purgeme-later', t0 + HOUR, 'scheduled'],
        ] as const) {
          const again = withKey(k, runAt);
          assert.deepStrictEqual(await b.enqueue([again], t0 + 3), [{ id: again.id, created: true, state }], `key ${k}: a new run`);
          assert.ok(await b.getRun(again.id), `the new run for ${k} exists`);
        }
        assert.deepStrictEqual(
          await b.enqueue([withKey('kept', t0 + 3)], t0 + 3),
          [{ id: kept.id, created: false, state: 'active' }],
          'the key of the active run still holds',
        );
      });
    });

    // ---------------------------------------------------------------------------------------------
    describe('retryFailed', () => {
      test('replays the failed runs of a queue, or of one task in it, and returns the count', async () => {
        const b = await open();
        const t0 = Date.now();
        const failedT1 = await failedRuns(b, t0, [newRun('rf', t0), newRun('rf', t0)]);
        const failedT2 = await failedRuns(b, t0, [newRun('rf', t0, { task: T2 })]);
        const failedOther = await failedRuns(b, t0, [newRun('rf-other', t0)]);
        const ok = await enqueueOne(b, t0 + 1, 'rf');
        await reserve(b, ['rf'], t0 + 1);
        await b.settle('w1', [{ id: ok, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: RETAIN }], t0 + 2);
        const queued = await enqueueOne(b, t0 + 3, 'rf');

        assert.equal(await b.retryFailed('rf', 'no.such.task', t0 + 10), 0, 'an unknown task: 0');
        assert.equal(await b.retryFailed('rf', T1, t0 + 10), 2, 'the failed runs of task T1');
        for (const id of failedT1) {
          const rec = await getRun(b, id);
          assert.equal(rec.state, 'queued', `replayed run ${id} is queued`);
          assert.equal(rec.attempts, 0, `replayed run ${id} has its attempts reset`);
          assert.equal(rec.error, undefined, `replayed run ${id} has no error`);
        }
        assert.equal((await getRun(b, failedT2[0]!)).state, 'failed', 'the failed run of task T2 is untouched');
        assert.equal((await getRun(b, failedOther[0]!)).state, 'failed', 'the failed run of another queue is untouched');
        assert.equal((await getRun(b, ok)).state, 'succeeded');

        const c = controller();
        const waiting = b.waitForWork(['rf'], null, c.signal);
        assert.equal(await b.retryFailed('rf', undefined, t0 + 20), 1, 'the rest of the queue: the T2 run');
        await within(waiting, NOTIFY_TIMEOUT_MS, 'waitForWork woken by retryFailed');
        assert.equal((await getRun(b, failedT2[0]!)).state, 'queued');
        assert.equal(await b.retryFailed('rf', undefined, t0 + 30), 0, 'nothing failed any more');
        assert.equal((await getRun(b, failedOther[0]!)).state, 'failed', 'other queues are never touched');

        const { runs } = await reserve(b, ['rf'], t0 + 40);
        assert.deepStrictEqual(new Set(ids(runs)), new Set([...failedT1, ...failedT2, queued]), 'replayed runs are reservable');
        for (const r of runs) assert.equal(r.attempt, 1, `run ${r.id} starts again at attempt 1`);
      });
    });

    // ---------------------------------------------------------------------------------------------
    describe('stats', () => {
      test('enqueue, succeed, fail and retry counts land in the minute of `now`; per queue; `since` filters older minutes', async () => {
        const b = await open();
        const m0 = minuteOf(Date.now());
        const [m1, m2] = [m0 + MINUTE, m0 + 2 * MINUTE];
        // Minute m0: 4 runs of `sa` created (the fifth enqueue is an idempotent repeat), 1 of `sx`; all start.
        const r = [newRun('sa', m0 + 1000), newRun('sa', m0 + 1000), newRun('sa', m0 + 1000)];
        const keyed = newRun('sa', m0 + 1000, { idempotencyKey: 'k', idempotencyTtl: HOUR });
        await b.enqueue([...r, keyed, newRun('sx', m0 + 1000)], m0 + 1000);
        const repeat = await b.enqueue([newRun('sa', m0 + 1500, { idempotencyKey: 'k', idempotencyTtl: HOUR })], m0 + 1500);
        assert.equal(repeat[0]?.created, false, 'the repeat is collapsed into the keyed run');
        const { runs: started } = await reserve(b, ['sa'], m0 + 2000);
        assert.equal(started.length, 4);
        // Minute m1: one of each settlement (one succeeded with retention 0).
        const [a, c, d] = ids(r) as [string, string, string];
        assert.deepStrictEqual(
          await b.settle(
            'w1',
            [
              { id: a, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: RETAIN },
              { id: c, attempt: 1, outcome: 'failed', error: errorText('x'), retentionMs: RETAIN },
              { id: d, attempt: 1, outcome: 'retry', error: errorText('x'), runAt: m2 },
              { id: keyed.id, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: 0 },
            ],
            m1 + 5,
          ),
          ['ok', 'ok', 'ok', 'ok'],
        );
        // Minute m2: the retry starts at its runAt and fails; a new run is enqueued and cancelled.
        assert.deepStrictEqual(ids((await reserve(b, ['sa'], m2)).runs), [d]);
        await b.settle('w1', [{ id: d, attempt: 2, outcome: 'failed', error: errorText('y'), retentionMs: RETAIN }], m2 + 2);
        const cancelled = await enqueueOne(b, m2 + 10, 'sa');
        await b.cancel(cancelled, m2 + 20);

        const expectedSa = [
          minuteStats(m0, { enqueued: 4, wait: hist({ [bucket(1000)]: 4 }) }),
          minuteStats(m1, { succeeded: 2, failed: 1, retried: 1, run: hist({ [bucket(MINUTE - 1995)]: 4 }) }),
          minuteStats(m2, { enqueued: 1, failed: 1, wait: hist({ [bucket(0)]: 1 }), run: hist({ [bucket(2)]: 1 }) }),
        ];
        const all = await b.stats(['sa', 'sx', 'never-seen'], m0);
        assert.deepStrictEqual(Object.keys(all).sort(), ['never-seen', 'sa', 'sx'], 'one entry per requested queue');
        assert.deepStrictEqual(counted(all.sa), expectedSa, 'sa, minute by minute');
        assert.deepStrictEqual(counted(all.sx), [minuteStats(m0, { enqueued: 1 })], 'sx counts only its own run');
        assert.deepStrictEqual(all['never-seen'], [], 'a queue never seen: []');

        assert.deepStrictEqual(counted((await b.stats(['sa'], m0 - HOUR)).sa), expectedSa, 'since an hour before: everything');
        assert.deepStrictEqual(counted((await b.stats(['sa'], m1)).sa), expectedSa.slice(1), 'since the start of m1: m1 on');
        assert.deepStrictEqual(
          counted((await b.stats(['sa'], m1 + 30_000)).sa),
          expectedSa.slice(1),
          'since inside m1: m1 (which contains since) on',
        );
        assert.deepStrictEqual(counted((await b.stats(['sa'], m2 + 59_999)).sa), expectedSa.slice(2), 'since the last ms of m2: m2');
        assert.deepStrictEqual(counted((await b.stats(['sa'], m2 + MINUTE)).sa), [], 'since after the last minute: nothing');
        assert.deepStrictEqual(await b.stats([], m0), {}, 'no queue asked, none answered');
        for (const { label, other } of await shares(b))
          assert.deepStrictEqual(counted((await other.stats(['sa'], m0)).sa), expectedSa, `the same from ${label}`);
      });

      test('run histogram: one entry per settled attempt, bucket bounds inclusive, overflow in the last bucket, negative in the first', async () => {
        const b = await open();
        const m0 = minuteOf(Date.now());
        const start = m0 + 1000;
        const durations = [0, 1, 2, 3, 250, 251, 59_999, 300_000, 300_001, -5];
        const runs = durations.map(() => newRun('sr', start));
        await b.enqueue(runs, start);
        const { runs: leased } = await reserve(b, ['sr'], start, 1000, 10 * MINUTE);
        assert.equal(leased.length, durations.length);
        for (let i = 0; i < runs.length; i++) {
          const outcome = i % 3;
          const id = runs[i]!.id;
          const now = start + durations[i]!;
          const s =
            outcome === 0
              ? { id, attempt: 1, outcome: 'succeeded' as const, result: '1', retentionMs: RETAIN }
              : outcome === 1
                ? { id, attempt: 1, outcome: 'failed' as const, error: errorText('x'), retentionMs: RETAIN }
                : { id, attempt: 1, outcome: 'retry' as const, error: errorText('x'), runAt: now + HOUR };
          assert.deepStrictEqual(await b.settle('w1', [s], now), ['ok'], `settle after ${durations[i]} ms`);
        }
        const minutes = counted((await b.stats(['sr'], m0 - MINUTE)).sr);
        const expectedRun = hist();
        for (const d of durations) expectedRun[bucket(d)]! += 1;
        assert.deepStrictEqual(
          expectedRun,
          hist({ 0: 3, 1: 1, 2: 1, 7: 1, 8: 1, 14: 1, 15: 1, 16: 1 }),
          'the expected buckets, spelled out: 0, 1 and -5 ms in [0, 1]; 2 in (1, 2]; 3 in (2, 5]; 250 in (100, 250]; 251 in (250, 500]; 59,999 in (30 s, 60 s]; 300,000 in (60 s, 300 s]; 300,001 above',
        );
        assert.deepStrictEqual(sumHist(minutes.map((m) => m.run)), expectedRun, 'run histogram over all minutes');
        assert.deepStrictEqual(sumHist(minutes.map((m) => m.wait)), hist({ 0: durations.length }), 'every run waited 0 ms');
        // Each settlement counts in the minute of its own `now`.
        const byMinute = new Map<number, number[]>();
        for (const d of durations) {
          const m = minuteOf(start + d);
          const h = byMinute.get(m) ?? hist();
          h[bucket(d)]! += 1;
          byMinute.set(m, h);
        }
        for (const [m, h] of byMinute) {
          assert.deepStrictEqual(minutes.find((x) => x.minute === m)?.run, h, `run histogram of minute ${m - m0} ms after m0`);
        }
      });

      test('wait: from when the run last became due (max of enqueuedAt and runAt; a retry runAt; a replay) to its start, counted per start', async () => {
        const b = await open();
        const m0 = minuteOf(Date.now());
        let expectedWait = hist();
        /** Reserves at `now`, expects `id` and one more wait entry of `ms` in minute m0. */
        const start = async (id: string, now: number, ms: number, what: string): Promise<void> => {
          assert.deepStrictEqual(ids((await reserve(b, ['sw'], now)).runs), [id], `${what}: the run starts`);
          expectedWait = [...expectedWait];
          expectedWait[bucket(ms)]! += 1;
          const [m] = counted((await b.stats(['sw'], m0)).sw);
          assert.deepStrictEqual(m?.wait, expectedWait, `${what}: waited ${ms} ms, counted in bucket ${bucket(ms)}`);
        };
        assert.deepStrictEqual(
          [bucket(1), bucket(3), bucket(30), bucket(700), bucket(4), bucket(9), bucket(10), bucket(300)],
          [0, 2, 5, 9, 2, 3, 3, 8],
          'buckets spelled out',
        );
        // Scheduled 10 s ahead, started 3 ms after it became due: waited 3 ms (not 10,003).
        const scheduled = await enqueueOne(b, m0 + 1000, 'sw', { runAt: m0 + 11_000 });
        // Due in the past (runAt before the enqueue): waits from its enqueue.
        const pastDue = await enqueueOne(b, m0 + 1000, 'sw', { runAt: m0 - 5000 });
        await start(pastDue, m0 + 1001, 1, 'a run due before its enqueue');
        await b.settle('w1', [{ id: pastDue, attempt: 1, outcome: 'retry', error: errorText('x'), runAt: m0 + 20_000 }], m0 + 1010);
        await start(scheduled, m0 + 11_003, 3, 'a scheduled run, from its runAt (not from its enqueue, 10,003 ms)');
        await start(pastDue, m0 + 20_030, 30, "a retry, from the retry's runAt");
        await b.settle('w1', [{ id: pastDue, attempt: 2, outcome: 'failed', error: errorText('x'), retentionMs: RETAIN }], m0 + 20_040);
        assert.equal(await b.retryFailed('sw', undefined, m0 + 30_000), 1);
        await start(pastDue, m0 + 30_700, 700, 'a run replayed by retryFailed, from the replay (not from its old runAt)');
        await b.settle('w1', [{ id: pastDue, attempt: 1, outcome: 'failed', error: errorText('x'), retentionMs: RETAIN }], m0 + 31_000);
        assert.deepStrictEqual(await b.retry(pastDue, m0 + 40_000), { outcome: 'queued' });
        await start(pastDue, m0 + 40_004, 4, 'a run replayed by retry, from the replay (not from its old runAt)');
        // `scheduled` and the run replayed last are still active: their starts count in `wait`, not (yet) in `run`.
        assert.deepStrictEqual(counted((await b.stats(['sw'], m0)).sw), [
          minuteStats(m0, {
            enqueued: 2,
            failed: 2,
            retried: 1,
            wait: hist({ 0: 1, 2: 2, 5: 1, 9: 1 }),
            run: hist({ 3: 2, 8: 1 }), // 9 ms (retry) and 10 ms (failed) in (5, 10]; 300 ms (failed) in (250, 500]
          }),
        ]);
      });

      test('runs the broker fails (lease lost maxLeaseLosses times) count as failed; cancellations count nowhere', async () => {
        const b = await open({ maxLeaseLosses: 1 });
        const m0 = minuteOf(Date.now());
        const m1 = m0 + MINUTE;
        const lost = await enqueueOne(b, m0 + 1000, 'sl');
        const cancelled = await enqueueOne(b, m0 + 1000, 'sl');
        assert.equal((await reserve(b, ['sl'], m0 + 1000, 10, 1000)).runs.length, 2);
        assert.deepStrictEqual(await b.cancel(cancelled, m0 + 1500), { outcome: 'cancelled', previous: 'active' });
        assert.deepStrictEqual((await reserve(b, ['sl'], m1 + 10_000)).runs, []);
        const rec = await getRun(b, lost);
        assert.equal(rec.state, 'failed', 'the lease expired once with maxLeaseLosses 1: failed');
        assert.deepStrictEqual(counted((await b.stats(['sl'], m0)).sl), [
          minuteStats(m0, { enqueued: 2, wait: hist({ 0: 2 }) }),
          minuteStats(m1, { failed: 1 }),
        ]);
      });
    });
  });
}
