/**
 * The broker conformance suite: the one set of tests that every Broker (Redis, SQLite, ...) must
 * pass. The facts checked here are the doc comments of `src/broker/types.ts`; when a broker fails
 * one of these tests, the broker is wrong (or the contract is ambiguous and must be clarified there).
 *
 * Usage, from an entry file `test/conformance/<broker>.test.ts`:
 *
 *   brokerConformance('redis', async (opts) => new RedisBroker({ url, prefix: opts?.sameStorageAs ? prefixOf(...) : fresh, ...opts }));
 *
 * `makeBroker()` opens a broker on FRESH, empty storage (its own Redis key prefix, its own SQLite
 * file); `makeBroker({ sameStorageAs: b })` opens a second instance on the storage of `b`, as another
 * process would. Every broker the suite opens is closed after each test.
 *
 * Time is driven through the `now` arguments; the only real waits are for the few things that are
 * real-time by nature (wake-ups, pub/sub, the Redis idempotency TTL), and the tests assert on what
 * happens, never on how long it took.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, fork } from 'node:child_process';
import { afterEach, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Broker, BrokerOptions, NewRun, QueueCounts, Reservation, RunError, RunRecord, RunState } from '../../src/broker/types.ts';
import { BrokerUnavailableError } from '../../src/core/errors.ts';
import { newRunId } from '../../src/core/ids.ts';
import { settledFlag, settleTurns, waitFor, within } from '../helpers.ts';
import { cancelRetentionConformance } from './cancel-retention.ts';
import { runErrorConformance } from './run-errors.ts';

export interface MakeBrokerOptions extends BrokerOptions {
  /** Open the new instance on the same storage as this broker (another process on the same Redis / file). */
  sameStorageAs?: Broker;
}

export type MakeBroker = (opts?: MakeBrokerOptions) => Promise<Broker>;

/**
 * Thrown by a `MakeBroker` asked for `sameStorageAs` when its broker's storage cannot be opened twice
 * (an in-memory broker): the tests that need a second instance are then skipped, saying so.
 */
export class SharedStorageUnsupported extends Error {
  override name = 'SharedStorageUnsupported';
}

export interface ConformanceOptions {
  /**
   * How another process reaches the storage of `broker`: a URL and options for `connectBroker`
   * (`src/broker/connect.ts`). With it, the suite also runs its cross-instance tests against a broker
   * in a child process (wake-ups, watch and onCancel must cross processes, not just instances that
   * happen to share an in-process event hub). Without it those tests are skipped.
   */
  connection?: (broker: Broker) => { url: string; options?: Record<string, unknown> };
  /**
   * Deletes run `id` from the storage of `broker` directly, behind the broker's back (as a hand
   * edit, or an earlier Errand that deleted runs and left their idempotency keys, would), leaving
   * everything else as it is. Without it the test of a key that names a missing run is skipped.
   */
  deleteRunBehindBroker?: (broker: Broker, id: string) => Promise<void>;
  /**
   * A broker whose storage cannot be reached (a Redis URL nothing listens on; for SQLite, a file in
   * a folder that does not exist, which already fails at construction). Its `ping` must throw.
   */
  unreachable?: () => Broker | Promise<Broker>;
}

/** The methods a peer process answers (everything but the callback-based ones). */
type PeerBroker = Pick<
  Broker,
  'enqueue' | 'reserve' | 'settle' | 'renew' | 'release' | 'progress' | 'getRun' | 'cancel' | 'retry' | 'counts' | 'prune'
>;

const PEER_SCRIPT = new URL('./peer.ts', import.meta.url);

/** A broker opened in a child process (`peer.ts`), driven over IPC. */
export class PeerProcess {
  readonly broker: PeerBroker;
  #child: ChildProcess;
  #seq = 0;
  #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; method: string }>();
  #exited: Promise<void>;

  private constructor(child: ChildProcess, extraMethods: readonly string[]) {
    this.#child = child;
    this.#exited = new Promise((resolve) => child.once('exit', () => resolve()));
    child.on('message', (msg: { seq?: number; ok?: boolean; value?: unknown; error?: string }) => {
      if (msg.seq === undefined) return;
      const p = this.#pending.get(msg.seq);
      if (!p) return;
      this.#pending.delete(msg.seq);
      if (msg.ok) p.resolve(msg.value);
      else p.reject(new Error(`peer process ${p.method}() failed: ${msg.error}`));
    });
    child.once('exit', (code, signal) => {
      for (const p of this.#pending.values())
        p.reject(new Error(`peer process exited (code ${code}, signal ${signal}) during ${p.method}()`));
      this.#pending.clear();
    });
    const call =
      (method: string) =>
      (...args: unknown[]): Promise<unknown> =>
        new Promise((resolve, reject) => {
          const seq = ++this.#seq;
          this.#pending.set(seq, { resolve, reject, method });
          child.send({ seq, method, args });
        });
    const methods = ['enqueue', 'reserve', 'settle', 'renew', 'release', 'progress', 'getRun', 'cancel', 'retry', 'counts', 'prune'];
    methods.push(...extraMethods);
    this.broker = Object.fromEntries(methods.map((m) => [m, call(m)])) as unknown as PeerBroker;
  }

  /** `extraMethods`: more methods the peer answers (the BrokerInspector ones, say), on `broker` too. */
  static async start(
    connection: { url: string; options?: Record<string, unknown> },
    extraMethods: readonly string[] = [],
  ): Promise<PeerProcess> {
    const child = fork(PEER_SCRIPT, [JSON.stringify(connection)], {
      execPath: process.execPath,
      execArgv: [],
      serialization: 'advanced',
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    const ready = new Promise<void>((resolve, reject) => {
      child.once('message', (msg: { ready?: boolean; error?: string }) => {
        if (msg.ready) resolve();
        else reject(new Error(`peer process could not open the broker: ${msg.error}`));
      });
      child.once('exit', (code) => reject(new Error(`peer process exited with code ${code} before it was ready`)));
      child.once('error', reject);
    });
    try {
      await within(ready, 15_000, 'peer process start');
    } catch (err) {
      child.kill();
      throw err;
    }
    return new PeerProcess(child, extraMethods);
  }

  async close(): Promise<void> {
    if (this.#child.exitCode !== null || this.#child.signalCode !== null) return;
    this.#child.send({ close: true });
    try {
      await within(this.#exited, 5_000, 'peer process exit');
    } catch (err) {
      this.#child.kill('SIGKILL');
      throw err;
    }
  }
}

/** How long a test may take before node:test fails it (a hang is a failure, not a stuck run). */
const TEST_TIMEOUT_MS = 20_000;
/** Safety net for asynchronous notifications (pub/sub, file watching): far above what any broker needs. */
const NOTIFY_TIMEOUT_MS = 5_000;

const Q = 'conf';
const TASK = 'conformance.echo';
const LEASE = 30_000;
const RETAIN = 60_000;

const ZERO_COUNTS: QueueCounts = { queued: 0, scheduled: 0, active: 0, succeeded: 0, failed: 0, cancelled: 0 };

let inputSeq = 0;

/** A run to enqueue, due at `now` unless `over.runAt` says otherwise. */
function newRun(queue: string, now: number, over: Partial<NewRun> = {}): NewRun {
  inputSeq++;
  return { id: newRunId(queue), task: TASK, queue, input: JSON.stringify({ seq: inputSeq }), priority: 0, runAt: now, ...over };
}

function ids(runs: readonly { id: string }[]): string[] {
  return runs.map((r) => r.id);
}

/** Asserts each field of `expected` on `actual` (deep, strict), naming the field on failure. */
function assertFields(actual: object | null | undefined, expected: Record<string, unknown>, label: string): void {
  assert.ok(actual, `${label}: expected a value, got ${String(actual)}`);
  const a = actual as Record<string, unknown>;
  for (const [key, value] of Object.entries(expected)) {
    assert.deepStrictEqual(a[key], value, `${label}.${key}: expected ${JSON.stringify(value)}, got ${JSON.stringify(a[key])}`);
  }
}

function parseError(text: string | undefined): RunError {
  assert.ok(text !== undefined, 'the run should carry an error');
  return JSON.parse(text) as RunError;
}

function errorText(message: string, reason?: string): string {
  const e: RunError = { name: 'Error', message, stack: `Error: ${message}\n    at handler (tasks.ts:1:1)` };
  if (reason) e.reason = reason;
  return JSON.stringify(e);
}

export function brokerConformance(name: string, makeBroker: MakeBroker, options: ConformanceOptions = {}): void {
  describe(`broker conformance: ${name}`, () => {
    let opened: Broker[] = [];
    let peers: PeerProcess[] = [];
    let controllers: AbortController[] = [];

    /** A broker on fresh storage. */
    const open = async (opts?: BrokerOptions): Promise<Broker> => {
      const b = await makeBroker(opts);
      opened.push(b);
      return b;
    };
    /** Another instance on the storage of `b`. */
    const share = async (b: Broker, opts?: BrokerOptions): Promise<Broker> => {
      const other = await makeBroker({ ...opts, sameStorageAs: b });
      opened.push(other);
      return other;
    };
    /** A broker on the storage of `b`, in a child process. */
    const peerOf = async (b: Broker): Promise<PeerBroker> => {
      assert.ok(options.connection, 'no connection hook');
      const peer = await PeerProcess.start(options.connection(b));
      peers.push(peer);
      return peer.broker;
    };
    const controller = (): AbortController => {
      const c = new AbortController();
      controllers.push(c);
      return c;
    };

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

    const test = (title: string, fn: () => Promise<void>, skip?: string): void => {
      it(title, { timeout: TEST_TIMEOUT_MS, ...(skip ? { skip } : {}) }, async (t) => {
        try {
          await fn();
        } catch (err) {
          if (!(err instanceof SharedStorageUnsupported)) throw err;
          t.skip(err.message);
        }
      });
    };

    async function getRun(b: PeerBroker, id: string): Promise<RunRecord> {
      const rec = await b.getRun(id);
      assert.ok(rec, `getRun(${id}) should find the run`);
      return rec;
    }

    async function reserveAll(
      b: PeerBroker,
      workerId: string,
      now: number,
      opts: { queues?: string[]; max?: number; leaseMs?: number } = {},
    ) {
      return b.reserve({ workerId, queues: opts.queues ?? [Q], max: opts.max ?? 100, leaseMs: opts.leaseMs ?? LEASE, now });
    }

    async function reserveOne(b: PeerBroker, workerId: string, now: number, leaseMs = LEASE, queues = [Q]): Promise<Reservation> {
      const { runs } = await b.reserve({ workerId, queues, max: 1, leaseMs, now });
      assert.equal(runs.length, 1, `reserve by ${workerId} at now=${now} should return one run, got ${runs.length}`);
      return runs[0]!;
    }

    /** Enqueues one run and returns its id. */
    async function enqueueOne(b: PeerBroker, now: number, over: Partial<NewRun> = {}, queue = Q): Promise<string> {
      const run = newRun(queue, now, over);
      const [res] = await b.enqueue([run], now);
      assert.ok(res?.created, 'enqueue should create the run');
      return res.id;
    }

    runErrorConformance(makeBroker, options);
    cancelRetentionConformance(makeBroker);

    // ---------------------------------------------------------------------------------------------
    describe('enqueue', () => {
      test('creates a queued run, storing every field as given (JSON text untouched)', async () => {
        const b = await open();
        const t0 = Date.now();
        const input = '{ "name" : "Zoë",  "tags": [1, 2.50, "✓"] }';
        const traceparent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
        const run = newRun(Q, t0, { input, priority: 7, traceparent });
        const res = await b.enqueue([run], t0);
        assert.deepStrictEqual(res, [{ id: run.id, created: true, state: 'queued' }]);
        const rec = await getRun(b, run.id);
        assertFields(
          rec,
          {
            id: run.id,
            task: TASK,
            queue: Q,
            state: 'queued',
            priority: 7,
            input,
            attempts: 0,
            leaseLosses: 0,
            enqueuedAt: t0,
            traceparent,
            history: [],
          },
          'run',
        );
        for (const field of ['result', 'error', 'progress', 'startedAt', 'finishedAt', 'expiresAt', 'worker', 'idempotencyKey'] as const) {
          assert.equal(
            rec[field],
            undefined,
            `run.${field} should be absent (undefined, not null) on a new run, got ${JSON.stringify(rec[field])}`,
          );
        }
      });

      test('runAt after now makes the run scheduled; at or before now, queued', async () => {
        const b = await open();
        const t0 = Date.now();
        const later = newRun(Q, t0, { runAt: t0 + 1000 });
        const atNow = newRun(Q, t0, { runAt: t0 });
        const past = newRun(Q, t0, { runAt: t0 - 1000 });
        const res = await b.enqueue([later, atNow, past], t0);
        assert.deepStrictEqual(
          res.map((r) => [r.id, r.created, r.state]),
          [
            [later.id, true, 'scheduled'],
            [atNow.id, true, 'queued'],
            [past.id, true, 'queued'],
          ],
        );
        assertFields(await getRun(b, later.id), { state: 'scheduled', runAt: t0 + 1000, attempts: 0 }, 'scheduled run');
        assertFields(await getRun(b, atNow.id), { state: 'queued' }, 'run due now');
        assertFields(await getRun(b, past.id), { state: 'queued' }, 'run due in the past');
      });

      test('a batch is created in order, one result per run, all created', async () => {
        const b = await open();
        const t0 = Date.now();
        const runs = Array.from({ length: 10 }, () => newRun(Q, t0));
        const res = await b.enqueue(runs, t0);
        assert.deepStrictEqual(ids(res), ids(runs));
        assert.ok(
          res.every((r) => r.created && r.state === 'queued'),
          'every result created=true, state queued',
        );
        const { runs: got } = await reserveAll(b, 'w1', t0 + 1);
        assert.deepStrictEqual(ids(got), ids(runs), 'reserved in enqueue order');
      });

      test('an empty batch does nothing', async () => {
        const b = await open();
        const t0 = Date.now();
        assert.deepStrictEqual(await b.enqueue([], t0), []);
        assert.deepStrictEqual(await b.settle('w1', [], t0), []);
        assert.deepStrictEqual(await b.renew('w1', [], LEASE, t0), []);
        await b.release('w1', [], t0);
      });

      test('stores the idempotency key on the run', async () => {
        const b = await open();
        const t0 = Date.now();
        const id = await enqueueOne(b, t0, { idempotencyKey: 'order-42', idempotencyTtl: 60_000 });
        assertFields(await getRun(b, id), { idempotencyKey: 'order-42' }, 'run');
      });
    });

    describe('enqueue: duplicate run ids', () => {
      test('a run id that exists already creates nothing and reports the stored run, in a later call or the same one', async () => {
        const b = await open();
        const t0 = Date.now();
        const first = newRun(Q, t0, { input: '"first"' });
        await b.enqueue([first], t0);
        const other = newRun(Q, t0);
        const res = await b.enqueue([{ ...first, input: '"again"', priority: 9 }, other, { ...other, input: '"twice"' }], t0 + 1);
        assert.deepStrictEqual(res, [
          { id: first.id, created: false, state: 'queued' },
          { id: other.id, created: true, state: 'queued' },
          { id: other.id, created: false, state: 'queued' },
        ]);
        assertFields(await getRun(b, first.id), { input: '"first"', priority: 0, enqueuedAt: t0 }, 'the stored run is unchanged');
        assertFields(await getRun(b, other.id), { input: other.input }, 'the first of the same call is kept');
        assert.deepStrictEqual((await b.counts([Q]))[Q], { ...ZERO_COUNTS, queued: 2 }, 'one run per id');
        await reserveAll(b, 'w1', t0 + 2);
        assert.deepStrictEqual(await b.enqueue([{ ...first, input: '"late"' }], t0 + 3), [
          { id: first.id, created: false, state: 'active' },
        ]);
      });
    });

    // ---------------------------------------------------------------------------------------------
    describe('reserve', () => {
      test('returns at most max runs', async () => {
        const b = await open();
        const t0 = Date.now();
        const runs = Array.from({ length: 5 }, () => newRun(Q, t0));
        await b.enqueue(runs, t0);
        const first = await b.reserve({ workerId: 'w1', queues: [Q], max: 2, leaseMs: LEASE, now: t0 });
        assert.deepStrictEqual(ids(first.runs), ids(runs.slice(0, 2)));
        const rest = await b.reserve({ workerId: 'w1', queues: [Q], max: 10, leaseMs: LEASE, now: t0 });
        assert.deepStrictEqual(ids(rest.runs), ids(runs.slice(2)));
        const none = await b.reserve({ workerId: 'w1', queues: [Q], max: 10, leaseMs: LEASE, now: t0 });
        assert.deepStrictEqual(none.runs, []);
      });

      test('marks runs active with attempt 1, startedAt = now and the worker; the reservation carries the run', async () => {
        const b = await open();
        const t0 = Date.now();
        const traceparent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
        const run = newRun(Q, t0, { priority: 3, input: '{"to":"a@example.com"}', traceparent });
        await b.enqueue([run], t0);
        const r = await reserveOne(b, 'w1', t0 + 10);
        assertFields(
          r,
          { id: run.id, task: TASK, queue: Q, input: run.input, attempt: 1, priority: 3, enqueuedAt: t0, startedAt: t0 + 10, traceparent },
          'reservation',
        );
        const rec = await getRun(b, run.id);
        assertFields(rec, { state: 'active', attempts: 1, startedAt: t0 + 10, worker: 'w1', leaseLosses: 0 }, 'run');
        assert.equal(rec.history.length, 1, 'one attempt in history');
        assertFields(rec.history[0], { attempt: 1, worker: 'w1', startedAt: t0 + 10 }, 'history[0]');
        assert.equal(rec.history[0]!.outcome, undefined, 'the running attempt has no outcome yet');
        assert.equal(rec.history[0]!.finishedAt, undefined, 'the running attempt has no finishedAt yet');
      });

      test('higher priority first, FIFO within a priority', async () => {
        const b = await open();
        const t0 = Date.now();
        const priorities = [0, 5, 0, -3, 5, 1000, -1000, 0];
        const runs = priorities.map((priority) => newRun(Q, t0, { priority }));
        await b.enqueue(runs, t0);
        const expected = runs
          .map((r, i) => ({ r, i }))
          .sort((x, y) => y.r.priority - x.r.priority || x.i - y.i)
          .map((x) => x.r.id);
        const { runs: got } = await reserveAll(b, 'w1', t0);
        assert.deepStrictEqual(ids(got), expected);
      });

      test('FIFO across separate enqueue calls', async () => {
        const b = await open();
        const t0 = Date.now();
        const order: string[] = [];
        for (let i = 0; i < 6; i++) order.push(await enqueueOne(b, t0 + i));
        const first = await b.reserve({ workerId: 'w1', queues: [Q], max: 3, leaseMs: LEASE, now: t0 + 10 });
        const second = await b.reserve({ workerId: 'w1', queues: [Q], max: 3, leaseMs: LEASE, now: t0 + 10 });
        assert.deepStrictEqual([...ids(first.runs), ...ids(second.runs)], order);
      });

      test('serves every requested queue, each in its own order, and nothing from other queues', async () => {
        const b = await open();
        const t0 = Date.now();
        const qa = [newRun('qa', t0), newRun('qa', t0, { priority: 2 }), newRun('qa', t0)];
        const qb = [newRun('qb', t0), newRun('qb', t0)];
        const qc = [newRun('qc', t0)];
        await b.enqueue([...qa, ...qb, ...qc], t0);

        const nothing = await reserveAll(b, 'w1', t0, { queues: ['qd'] });
        assert.deepStrictEqual(nothing.runs, [], 'a queue with no runs gives nothing');
        assert.equal(nothing.nextAt, null, 'and nothing pending');

        const { runs } = await reserveAll(b, 'w1', t0, { queues: ['qb', 'qa'] });
        assert.deepStrictEqual(new Set(ids(runs)), new Set(ids([...qa, ...qb])), 'every run of qa and qb, nothing else');
        assert.equal(runs.length, 5, 'no duplicates');
        assert.deepStrictEqual(
          ids(runs.filter((r) => r.queue === 'qa')),
          [qa[1]!.id, qa[0]!.id, qa[2]!.id],
          'qa in priority then FIFO order',
        );
        assert.deepStrictEqual(ids(runs.filter((r) => r.queue === 'qb')), ids(qb), 'qb in FIFO order');
        assertFields(await getRun(b, qc[0]!.id), { state: 'queued' }, 'qc run (not requested)');
      });

      test('a scheduled run is not reserved before runAt, and is reserved at runAt', async () => {
        const b = await open();
        const t0 = Date.now();
        const id = await enqueueOne(b, t0, { runAt: t0 + 1000 });
        const early = await reserveAll(b, 'w1', t0);
        assert.deepStrictEqual(early.runs, []);
        assert.equal(early.nextAt, t0 + 1000, 'nextAt is the scheduled runAt');
        assert.deepStrictEqual((await reserveAll(b, 'w1', t0 + 999)).runs, [], 'not reserved 1 ms before runAt');
        assertFields(await getRun(b, id), { state: 'scheduled' }, 'run before runAt');
        const due = await reserveAll(b, 'w1', t0 + 1000);
        assert.deepStrictEqual(ids(due.runs), [id], 'reserved at runAt');
        assertFields(due.runs[0], { attempt: 1, startedAt: t0 + 1000 }, 'reservation');
        assertFields(await getRun(b, id), { state: 'active', attempts: 1 }, 'run');
      });

      test('a due scheduled run takes its place by priority among queued runs', async () => {
        const b = await open();
        const t0 = Date.now();
        const low = await enqueueOne(b, t0, { priority: 0 });
        const high = await enqueueOne(b, t0, { priority: 10, runAt: t0 + 500 });
        const { runs } = await reserveAll(b, 'w1', t0 + 600);
        assert.deepStrictEqual(ids(runs), [high, low]);
      });

      test('nextAt: the earliest scheduled runAt or lease expiry in the requested queues; null when nothing is pending', async () => {
        const b = await open();
        const t0 = Date.now();
        assert.equal((await reserveAll(b, 'w1', t0)).nextAt, null, 'empty storage: nothing pending');

        await enqueueOne(b, t0, { runAt: t0 + 5000 });
        await enqueueOne(b, t0, { runAt: t0 + 3000 });
        await enqueueOne(b, t0, { runAt: t0 + 100 }, 'other-queue');
        const r1 = await reserveAll(b, 'w1', t0);
        assert.deepStrictEqual(r1.runs, []);
        assert.equal(r1.nextAt, t0 + 3000, 'earliest runAt of the requested queue (other queues ignored)');

        const active = await enqueueOne(b, t0);
        const r2 = await reserveAll(b, 'w1', t0, { leaseMs: 1000 });
        assert.deepStrictEqual(ids(r2.runs), [active]);
        const r3 = await reserveAll(b, 'w1', t0 + 1);
        assert.deepStrictEqual(r3.runs, []);
        assert.equal(r3.nextAt, t0 + 1000, 'the lease expiry is earlier than the scheduled runs');

        assert.deepStrictEqual(
          await b.settle('w1', [{ id: active, attempt: 1, outcome: 'succeeded', result: null, retentionMs: RETAIN }], t0 + 2),
          ['ok'],
        );
        const r4 = await reserveAll(b, 'w1', t0 + 3);
        assert.equal(r4.nextAt, t0 + 3000, 'a settled run no longer counts');

        const both = await reserveAll(b, 'w1', t0 + 4, { queues: [Q, 'other-queue'] });
        assert.equal(both.nextAt, t0 + 100, 'several queues: the earliest of all');
      });
    });

    // ---------------------------------------------------------------------------------------------
    describe('settle', () => {
      test('succeeded: result stored, finishedAt, expiresAt = now + retentionMs, history', async () => {
        const b = await open();
        const t0 = Date.now();
        const id = await enqueueOne(b, t0);
        await reserveOne(b, 'w1', t0 + 10);
        const result = '{ "sent" : true, "id": "m-1" }';
        assert.deepStrictEqual(await b.settle('w1', [{ id, attempt: 1, outcome: 'succeeded', result, retentionMs: RETAIN }], t0 + 20), [
          'ok',
        ]);
        const rec = await getRun(b, id);
        assertFields(
          rec,
          { state: 'succeeded', result, attempts: 1, startedAt: t0 + 10, finishedAt: t0 + 20, expiresAt: t0 + 20 + RETAIN, worker: 'w1' },
          'run',
        );
        assert.equal(rec.error, undefined, 'no error on a succeeded run');
        assert.equal(rec.history.length, 1);
        assertFields(
          rec.history[0],
          { attempt: 1, worker: 'w1', startedAt: t0 + 10, finishedAt: t0 + 20, outcome: 'succeeded' },
          'history[0]',
        );
        assert.deepStrictEqual((await reserveAll(b, 'w2', t0 + 10 * LEASE)).runs, [], 'a finished run is never reserved again');
      });

      test('succeeded with a null result', async () => {
        const b = await open();
        const t0 = Date.now();
        const id = await enqueueOne(b, t0);
        await reserveOne(b, 'w1', t0);
        assert.deepStrictEqual(
          await b.settle('w1', [{ id, attempt: 1, outcome: 'succeeded', result: null, retentionMs: RETAIN }], t0 + 1),
          ['ok'],
        );
        const rec = await getRun(b, id);
        assertFields(rec, { state: 'succeeded' }, 'run');
        assert.ok(
          rec.result === undefined || rec.result === 'null',
          `a null result reads back absent or as the JSON text "null", got ${rec.result}`,
        );
      });

      test('failed: error stored, finishedAt, expiresAt = now + retentionMs, history', async () => {
        const b = await open();
        const t0 = Date.now();
        const id = await enqueueOne(b, t0);
        await reserveOne(b, 'w1', t0 + 10);
        const error = errorText('SMTP refused');
        assert.deepStrictEqual(await b.settle('w1', [{ id, attempt: 1, outcome: 'failed', error, retentionMs: 5000 }], t0 + 30), ['ok']);
        const rec = await getRun(b, id);
        assertFields(rec, { state: 'failed', error, attempts: 1, finishedAt: t0 + 30, expiresAt: t0 + 30 + 5000, worker: 'w1' }, 'run');
        assert.equal(rec.result, undefined, 'no result on a failed run');
        assert.equal(rec.history.length, 1);
        assertFields(
          rec.history[0],
          { attempt: 1, worker: 'w1', startedAt: t0 + 10, finishedAt: t0 + 30, outcome: 'failed', error },
          'history[0]',
        );
        assert.deepStrictEqual((await reserveAll(b, 'w2', t0 + 10 * LEASE)).runs, [], 'a failed run is never reserved again');
      });

      test('retry: scheduled at runAt, then reserved again with attempt 2; history records each attempt', async () => {
        const b = await open();
        const t0 = Date.now();
        const id = await enqueueOne(b, t0);
        await reserveOne(b, 'w1', t0 + 10, 1000);
        const e1 = errorText('timeout talking to SMTP');
        assert.deepStrictEqual(await b.settle('w1', [{ id, attempt: 1, outcome: 'retry', error: e1, runAt: t0 + 5000 }], t0 + 20), ['ok']);
        const rec1 = await getRun(b, id);
        assertFields(rec1, { state: 'scheduled', runAt: t0 + 5000, attempts: 1 }, 'run waiting to retry');
        assertFields(
          rec1.history[0],
          { attempt: 1, worker: 'w1', startedAt: t0 + 10, finishedAt: t0 + 20, outcome: 'retry', error: e1 },
          'history[0]',
        );

        const early = await reserveAll(b, 'w2', t0 + 4999);
        assert.deepStrictEqual(early.runs, [], 'not reserved before the retry runAt (and the old lease expiry does not count)');
        assert.equal(early.nextAt, t0 + 5000, 'nextAt is the retry runAt');
        const r2 = await reserveOne(b, 'w2', t0 + 5000);
        assertFields(r2, { id, attempt: 2, startedAt: t0 + 5000 }, 'second reservation');
        assertFields(await getRun(b, id), { state: 'active', attempts: 2, worker: 'w2', leaseLosses: 0 }, 'run on its second attempt');

        const e2 = errorText('still failing');
        assert.deepStrictEqual(await b.settle('w2', [{ id, attempt: 2, outcome: 'failed', error: e2, retentionMs: RETAIN }], t0 + 5100), [
          'ok',
        ]);
        const rec = await getRun(b, id);
        assertFields(rec, { state: 'failed', error: e2, attempts: 2, finishedAt: t0 + 5100, worker: 'w2' }, 'run');
        assert.equal(rec.history.length, 2, 'two attempts in history');
        assertFields(rec.history[0], { attempt: 1, worker: 'w1', outcome: 'retry' }, 'history[0]');
        assertFields(
          rec.history[1],
          { attempt: 2, worker: 'w2', startedAt: t0 + 5000, finishedAt: t0 + 5100, outcome: 'failed', error: e2 },
          'history[1]',
        );
      });

      test('a settlement from another worker or for a stale attempt is lost and changes nothing', async () => {
        const b = await open();
        const t0 = Date.now();
        const id = await enqueueOne(b, t0);
        await reserveOne(b, 'w1', t0);
        const before = await getRun(b, id);
        assert.deepStrictEqual(await b.settle('w2', [{ id, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: RETAIN }], t0 + 1), [
          'lost',
        ]);
        assert.deepStrictEqual(
          await b.settle('w1', [{ id, attempt: 2, outcome: 'failed', error: errorText('x'), retentionMs: RETAIN }], t0 + 1),
          ['lost'],
        );
        assert.deepStrictEqual(await b.settle('w1', [{ id, attempt: 0, outcome: 'retry', error: errorText('x'), runAt: t0 + 9 }], t0 + 1), [
          'lost',
        ]);
        assert.deepStrictEqual(await getRun(b, id), before, 'the run is unchanged');
        assert.deepStrictEqual(await b.settle('w1', [{ id, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: RETAIN }], t0 + 2), [
          'ok',
        ]);
      });

      test('settling twice: the second settlement is lost and changes nothing', async () => {
        const b = await open();
        const t0 = Date.now();
        const id = await enqueueOne(b, t0);
        await reserveOne(b, 'w1', t0);
        assert.deepStrictEqual(
          await b.settle('w1', [{ id, attempt: 1, outcome: 'succeeded', result: '"a"', retentionMs: RETAIN }], t0 + 1),
          ['ok'],
        );
        const before = await getRun(b, id);
        assert.deepStrictEqual(
          await b.settle('w1', [{ id, attempt: 1, outcome: 'failed', error: errorText('late'), retentionMs: RETAIN }], t0 + 2),
          ['lost'],
        );
        assert.deepStrictEqual(await getRun(b, id), before);
      });

      test('a batch settles several runs with one status per item, in order', async () => {
        const b = await open();
        const t0 = Date.now();
        const runs = [newRun(Q, t0), newRun(Q, t0), newRun(Q, t0)];
        await b.enqueue(runs, t0);
        const got = await reserveAll(b, 'w1', t0);
        assert.equal(got.runs.length, 3);
        const [a, c, d] = ids(runs) as [string, string, string];
        const unknown = newRunId(Q);
        const statuses = await b.settle(
          'w1',
          [
            { id: a, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: RETAIN },
            { id: unknown, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: RETAIN },
            { id: c, attempt: 1, outcome: 'failed', error: errorText('no'), retentionMs: RETAIN },
            { id: d, attempt: 7, outcome: 'succeeded', result: '1', retentionMs: RETAIN },
            { id: d, attempt: 1, outcome: 'retry', error: errorText('again'), runAt: t0 + 1000 },
          ],
          t0 + 5,
        );
        assert.deepStrictEqual(statuses, ['ok', 'lost', 'ok', 'lost', 'ok']);
        assert.equal((await getRun(b, a)).state, 'succeeded');
        assert.equal((await getRun(b, c)).state, 'failed');
        assert.equal((await getRun(b, d)).state, 'scheduled');
        assert.equal(await b.getRun(unknown), null, 'settling an unknown id creates nothing');
      });
    });

    // ---------------------------------------------------------------------------------------------
    describe('reserve with outcomes sent along (settle)', () => {
      test('records the outcomes first, as settle does, then leases; statuses in order', async () => {
        const b = await open();
        const t0 = Date.now();
        const a = await enqueueOne(b, t0);
        const c = await enqueueOne(b, t0 + 1);
        const d = await enqueueOne(b, t0 + 2);
        assert.deepStrictEqual(ids((await reserveAll(b, 'w1', t0 + 10, { max: 2 })).runs), [a, c]);
        const error = errorText('refused');
        const res = await b.reserve({
          workerId: 'w1',
          queues: [Q],
          max: 5,
          leaseMs: LEASE,
          now: t0 + 20,
          settle: [
            { id: a, attempt: 1, outcome: 'succeeded', result: '{"ok":1}', retentionMs: RETAIN },
            { id: c, attempt: 1, outcome: 'failed', error, retentionMs: RETAIN },
          ],
        });
        assert.deepStrictEqual(res.settled, ['ok', 'ok']);
        assert.deepStrictEqual(ids(res.runs), [d], 'then leases what is queued');
        assertFields(await getRun(b, a), { state: 'succeeded', result: '{"ok":1}', finishedAt: t0 + 20, expiresAt: t0 + 20 + RETAIN }, 'a');
        assertFields(await getRun(b, c), { state: 'failed', error, finishedAt: t0 + 20 }, 'c');
        assertFields(await getRun(b, d), { state: 'active', worker: 'w1', attempts: 1, startedAt: t0 + 20 }, 'd');
        const counts = (await b.counts([Q]))[Q];
        assertFields(counts, { queued: 0, active: 1, succeeded: 1, failed: 1 }, 'counts');
      });

      test('a retry due at once can be leased again by the same call, attempt 2', async () => {
        const b = await open();
        const t0 = Date.now();
        const a = await enqueueOne(b, t0);
        await reserveOne(b, 'w1', t0 + 10);
        const res = await b.reserve({
          workerId: 'w1',
          queues: [Q],
          max: 1,
          leaseMs: LEASE,
          now: t0 + 20,
          settle: [{ id: a, attempt: 1, outcome: 'retry', error: errorText('again'), runAt: t0 + 20 }],
        });
        assert.deepStrictEqual(res.settled, ['ok']);
        assert.equal(res.runs.length, 1);
        assertFields(res.runs[0], { id: a, attempt: 2 }, 'the retried run');
        const rec = await getRun(b, a);
        assertFields(rec, { state: 'active', attempts: 2 }, 'run');
        assert.equal(rec.history[0]?.outcome, 'retry', 'the first attempt is in the history');
      });

      test('outcomes of leases not held are lost; outcomes of queues not reserved from are recorded', async () => {
        const b = await open();
        const t0 = Date.now();
        const x = await enqueueOne(b, t0);
        const y = await enqueueOne(b, t0, {}, 'conf_other');
        await reserveOne(b, 'w1', t0 + 10);
        await reserveOne(b, 'w1', t0 + 10, LEASE, ['conf_other']);
        const res = await b.reserve({
          workerId: 'w1',
          queues: [Q],
          max: 1,
          leaseMs: LEASE,
          now: t0 + 20,
          settle: [
            { id: y, attempt: 1, outcome: 'succeeded', result: null, retentionMs: RETAIN },
            { id: x, attempt: 2, outcome: 'succeeded', result: null, retentionMs: RETAIN },
            { id: 'not a run id', attempt: 1, outcome: 'succeeded', result: null, retentionMs: RETAIN },
          ],
        });
        assert.deepStrictEqual(res.settled, ['ok', 'lost', 'lost']);
        assert.deepStrictEqual(res.runs, [], 'nothing queued');
        assert.equal((await getRun(b, y)).state, 'succeeded', "the other queue's run is settled");
        assertFields(await getRun(b, x), { state: 'active', attempts: 1, worker: 'w1' }, 'a wrong attempt changes nothing');
        const other = await b.reserve({
          workerId: 'w2',
          queues: [Q],
          max: 1,
          leaseMs: LEASE,
          now: t0 + 30,
          settle: [{ id: x, attempt: 1, outcome: 'succeeded', result: null, retentionMs: RETAIN }],
        });
        assert.deepStrictEqual(other.settled, ['lost'], "another worker cannot settle w1's lease");
        assert.equal((await getRun(b, x)).state, 'active');
      });

      test('a call whose reply was lost, sent again: its outcomes report lost (recorded once), the runs it leased come back after their lease', async () => {
        const b = await open();
        const t0 = Date.now();
        const a = await enqueueOne(b, t0);
        const c = await enqueueOne(b, t0 + 1);
        const d = await enqueueOne(b, t0 + 2);
        await reserveOne(b, 'w1', t0 + 10);
        const request = {
          workerId: 'w1',
          queues: [Q],
          max: 1,
          leaseMs: LEASE,
          settle: [{ id: a, attempt: 1, outcome: 'succeeded' as const, result: '"once"', retentionMs: RETAIN }],
        };
        // The first call went through, but its reply never reached the worker, which sends it again.
        await b.reserve({ ...request, now: t0 + 20 });
        const again = await b.reserve({ ...request, now: t0 + 1000 });
        assert.deepStrictEqual(again.settled, ['lost'], 'the outcome was recorded by the first call: settling it again is harmless');
        assert.deepStrictEqual(ids(again.runs), [d], 'the run the lost reply leased is not leased twice');
        const rec = await getRun(b, a);
        assertFields(rec, { state: 'succeeded', result: '"once"', finishedAt: t0 + 20 }, 'recorded once, by the first call');
        assert.equal(rec.history.length, 1);
        const after = await reserveAll(b, 'w2', t0 + 20 + LEASE + 1);
        assert.deepStrictEqual(
          after.runs.map((r) => [r.id, r.attempt]),
          [[c, 2]],
          'the run leased by the lost reply is recovered when its lease expires',
        );
        assert.deepStrictEqual((await b.counts([Q]))[Q], { ...ZERO_COUNTS, active: 2, succeeded: 1 });
      });

      test('without outcomes, no statuses', async () => {
        const b = await open();
        const res = await reserveAll(b, 'w1', Date.now());
        assert.equal(res.settled, undefined);
      });
    });

    // ---------------------------------------------------------------------------------------------
    describe('retention', () => {
      test('retentionMs 0: the run is gone right after settle', async () => {
        const b = await open();
        const t0 = Date.now();
        const ok = await enqueueOne(b, t0);
        const ko = await enqueueOne(b, t0);
        await reserveAll(b, 'w1', t0);
        const statuses = await b.settle(
          'w1',
          [
            { id: ok, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: 0 },
            { id: ko, attempt: 1, outcome: 'failed', error: errorText('x'), retentionMs: 0 },
          ],
          t0 + 1,
        );
        assert.deepStrictEqual(statuses, ['ok', 'ok']);
        assert.equal(await b.getRun(ok), null, 'succeeded run with retention 0 is gone');
        assert.equal(await b.getRun(ko), null, 'failed run with retention 0 is gone');
        assert.deepStrictEqual((await b.counts([Q]))[Q], ZERO_COUNTS, 'and not counted');
      });

      test('prune removes finished runs past their retention, returns the count, keeps the rest', async () => {
        const b = await open();
        const t0 = Date.now();
        const short = await enqueueOne(b, t0);
        const long = await enqueueOne(b, t0);
        const active = await enqueueOne(b, t0);
        await reserveAll(b, 'w1', t0, { leaseMs: 10 * RETAIN });
        const queued = await enqueueOne(b, t0);
        const scheduled = await enqueueOne(b, t0, { runAt: t0 + 10 * RETAIN });
        await b.settle(
          'w1',
          [
            { id: short, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: 1000 },
            { id: long, attempt: 1, outcome: 'failed', error: errorText('x'), retentionMs: 100_000 },
          ],
          t0,
        );
        assert.equal(await b.prune(t0 + 500), 0, 'nothing has expired yet');
        assert.ok(await b.getRun(short), 'unexpired run kept');

        assert.equal(await b.prune(t0 + 5000), 1, 'one run expired');
        assert.equal(await b.getRun(short), null, 'the expired run is gone');
        for (const id of [long, active, queued, scheduled]) assert.ok(await b.getRun(id), `run ${id} kept`);
        assert.equal(await b.prune(t0 + 5000), 0, 'pruning again removes nothing');

        assert.equal(await b.prune(t0 + 200_000), 1, 'the failed run expired too');
        assert.equal(await b.getRun(long), null);
        for (const id of [active, queued, scheduled]) assert.ok(await b.getRun(id), `unfinished run ${id} is never pruned`);
        assertFields((await b.counts([Q]))[Q], { succeeded: 0, failed: 0, active: 1, queued: 1, scheduled: 1 }, 'counts after prune');
      });
    });

    // ---------------------------------------------------------------------------------------------
    describe('idempotency', () => {
      test('same task and key: the same run, created=false, nothing new stored', async () => {
        const b = await open();
        const t0 = Date.now();
        const first = newRun(Q, t0, { idempotencyKey: 'k1', idempotencyTtl: 60_000 });
        const second = newRun(Q, t0 + 10, { idempotencyKey: 'k1', idempotencyTtl: 60_000 });
        assert.deepStrictEqual(await b.enqueue([first], t0), [{ id: first.id, created: true, state: 'queued' }]);
        assert.deepStrictEqual(await b.enqueue([second], t0 + 10), [{ id: first.id, created: false, state: 'queued' }]);
        assert.equal(await b.getRun(second.id), null, 'the duplicate is not stored');
        assert.deepStrictEqual((await b.counts([Q]))[Q], { ...ZERO_COUNTS, queued: 1 });
      });

      test('within one batch, runs sharing a key collapse into the first', async () => {
        const b = await open();
        const t0 = Date.now();
        const a = newRun(Q, t0, { idempotencyKey: 'k', idempotencyTtl: 60_000 });
        const dup = newRun(Q, t0, { idempotencyKey: 'k', idempotencyTtl: 60_000 });
        const other = newRun(Q, t0, { idempotencyKey: 'k2', idempotencyTtl: 60_000 });
        const plain = newRun(Q, t0);
        const res = await b.enqueue([a, dup, other, plain], t0);
        assert.deepStrictEqual(res, [
          { id: a.id, created: true, state: 'queued' },
          { id: a.id, created: false, state: 'queued' },
          { id: other.id, created: true, state: 'queued' },
          { id: plain.id, created: true, state: 'queued' },
        ]);
        assert.equal(await b.getRun(dup.id), null);
        const { runs } = await reserveAll(b, 'w1', t0);
        assert.deepStrictEqual(ids(runs), [a.id, other.id, plain.id]);
      });

      test("a duplicate reports the existing run's current state", async () => {
        const b = await open();
        const t0 = Date.now();
        const key = { idempotencyKey: 'state-key', idempotencyTtl: 600_000 };
        const id = await enqueueOne(b, t0, { ...key, runAt: t0 + 100 });
        assert.deepStrictEqual(await b.enqueue([newRun(Q, t0, key)], t0 + 1), [{ id, created: false, state: 'scheduled' }]);
        await reserveOne(b, 'w1', t0 + 100);
        assert.deepStrictEqual(await b.enqueue([newRun(Q, t0, key)], t0 + 101), [{ id, created: false, state: 'active' }]);
        await b.settle('w1', [{ id, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: RETAIN }], t0 + 102);
        assert.deepStrictEqual(await b.enqueue([newRun(Q, t0, key)], t0 + 103), [{ id, created: false, state: 'succeeded' }]);
      });

      test('the key is scoped to the task: another task with the same key gets its own run', async () => {
        const b = await open();
        const t0 = Date.now();
        const a = newRun(Q, t0, { idempotencyKey: 'shared', idempotencyTtl: 60_000 });
        const other = newRun(Q, t0, { task: 'conformance.other', idempotencyKey: 'shared', idempotencyTtl: 60_000 });
        const res = await b.enqueue([a, other], t0);
        assert.deepStrictEqual(res, [
          { id: a.id, created: true, state: 'queued' },
          { id: other.id, created: true, state: 'queued' },
        ]);
        const noKey = [newRun(Q, t0), newRun(Q, t0)];
        assert.ok(
          (await b.enqueue(noKey, t0)).every((r) => r.created),
          'runs without a key never collapse',
        );
      });

      test('the key is scoped to the task within its queue: the same task and key on another queue creates another run', async () => {
        // Keys live with their queue, so that Redis Cluster never needs a cross-slot operation.
        const b = await open();
        const t0 = Date.now();
        const first = newRun('qa', t0, { idempotencyKey: 'per-queue', idempotencyTtl: 60_000 });
        const again = newRun('qa', t0, { idempotencyKey: 'per-queue', idempotencyTtl: 60_000 });
        const other = newRun('qb', t0, { idempotencyKey: 'per-queue', idempotencyTtl: 60_000 });
        assert.deepStrictEqual(await b.enqueue([first], t0), [{ id: first.id, created: true, state: 'queued' }]);
        assert.deepStrictEqual(await b.enqueue([again], t0 + 1), [{ id: first.id, created: false, state: 'queued' }]);
        assert.deepStrictEqual(await b.enqueue([other], t0 + 2), [{ id: other.id, created: true, state: 'queued' }]);
      });

      test('after the TTL, the same key creates a new run', async () => {
        const b = await open();
        // A broker may keep the key with a storage-side expiry (Redis PX, counted from when its script
        // ran) or compare against the caller's `now` (SQLite). Both clocks are moved past the TTL, and
        // the real-time wait is measured from when the first enqueue *returned*: its storage-side
        // expiry started before that instant, so once the real clock is past it plus the TTL the key is
        // gone, however late the call reached the broker on a loaded machine. The TTL is long enough
        // that the duplicate enqueue just after it lands well inside the window, stalls included.
        const ttl = 1_000;
        const t0 = Date.now();
        const first = newRun(Q, t0, { idempotencyKey: 'ttl-key', idempotencyTtl: ttl });
        await b.enqueue([first], t0);
        const firstReturned = Date.now();
        const dup = await b.enqueue([newRun(Q, t0, { idempotencyKey: 'ttl-key', idempotencyTtl: ttl })], t0 + 1);
        // Both scripts ran between t0 and now; only if that span is under the TTL must the key have held
        // (a stall longer than the TTL would rightly let it lapse; the 60 s keys above cover holding).
        if (Date.now() - t0 < ttl) assert.deepStrictEqual(dup, [{ id: first.id, created: false, state: 'queued' }]);
        const expiredBy = firstReturned + ttl + 5; // 5 ms for the storage clock's millisecond rounding
        while (Date.now() <= expiredBy) await sleep(Math.max(1, expiredBy + 1 - Date.now()));
        const t1 = Math.max(Date.now(), t0 + ttl + 1);
        const again = newRun(Q, t1, { idempotencyKey: 'ttl-key', idempotencyTtl: ttl });
        assert.deepStrictEqual(await b.enqueue([again], t1), [{ id: again.id, created: true, state: 'queued' }], 'a new run after the TTL');
        const third = newRun(Q, t1 + 1, { idempotencyKey: 'ttl-key', idempotencyTtl: 60_000 });
        assert.deepStrictEqual(
          await b.enqueue([third], t1 + 1),
          [{ id: again.id, created: false, state: 'queued' }],
          'the key now maps to the new run',
        );
        assert.ok(await b.getRun(first.id), 'the first run is still there');
      });

      // A key never names a run that no longer exists: the same key then creates a new run, which
      // the key names from then on (issue 20: a purged run's key used to outlive it).
      async function assertKeyCreatesNewRun(b: Broker, gone: string, key: Partial<NewRun>, now: number, why: string) {
        assert.equal(await b.getRun(gone), null, `${why}: the first run is gone`);
        const again = newRun(Q, now, key);
        assert.deepStrictEqual(await b.enqueue([again], now), [{ id: again.id, created: true, state: 'queued' }], `${why}: a new run`);
        assertFields(await getRun(b, again.id), { state: 'queued', idempotencyKey: key.idempotencyKey }, `${why}: the new run`);
        assert.deepStrictEqual(
          await b.enqueue([newRun(Q, now + 1, key)], now + 1),
          [{ id: again.id, created: false, state: 'queued' }],
          `${why}: the key now names the new run`,
        );
      }

      test('a run deleted at once by retention 0 releases its key: the same key creates a new run', async () => {
        const b = await open();
        const t0 = Date.now();
        const key = { idempotencyKey: 'gone', idempotencyTtl: 600_000 };
        const ok = await enqueueOne(b, t0, key);
        const koKey = { idempotencyKey: 'gone-failed', idempotencyTtl: 600_000 };
        const ko = await enqueueOne(b, t0, koKey);
        await reserveAll(b, 'w1', t0);
        await b.settle(
          'w1',
          [
            { id: ok, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: 0 },
            { id: ko, attempt: 1, outcome: 'failed', error: errorText('x'), retentionMs: 0 },
          ],
          t0 + 1,
        );
        await assertKeyCreatesNewRun(b, ok, key, t0 + 2, 'succeeded with retention 0');
        await assertKeyCreatesNewRun(b, ko, koKey, t0 + 4, 'failed with retention 0');
      });

      test('a run deleted at once by retention 0 in a reserve that settles it releases its key', async () => {
        const b = await open();
        const t0 = Date.now();
        const key = { idempotencyKey: 'gone-along', idempotencyTtl: 600_000 };
        const id = await enqueueOne(b, t0, key);
        await reserveOne(b, 'w1', t0);
        const { settled } = await b.reserve({
          workerId: 'w1',
          queues: [Q],
          max: 0,
          leaseMs: LEASE,
          now: t0 + 1,
          settle: [{ id, attempt: 1, outcome: 'succeeded', result: null, retentionMs: 0 }],
        });
        assert.deepStrictEqual(settled, ['ok']);
        await assertKeyCreatesNewRun(b, id, key, t0 + 2, 'settled along with a reserve');
      });

      test('prune releases the keys of the runs it deletes; a key whose run is kept still holds', async () => {
        const b = await open();
        const t0 = Date.now();
        const key = { idempotencyKey: 'pruned', idempotencyTtl: 10 * RETAIN };
        const keptKey = { idempotencyKey: 'kept', idempotencyTtl: 10 * RETAIN };
        const cancelledKey = { idempotencyKey: 'pruned-cancelled', idempotencyTtl: 10 * RETAIN };
        const id = await enqueueOne(b, t0, key);
        const kept = await enqueueOne(b, t0, keptKey);
        const cancelled = await enqueueOne(b, t0, cancelledKey);
        await reserveAll(b, 'w1', t0, { max: 2 });
        await b.settle(
          'w1',
          [
            { id, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: 1000 },
            { id: kept, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: 5 * RETAIN },
          ],
          t0 + 1,
        );
        await b.cancel(cancelled, t0 + 1);
        // Past the short retention and the default retention of cancelled runs (1 day), within every key's TTL.
        const later = t0 + 2 * 86_400_000;
        assert.ok((await b.prune(t0 + 5000)) >= 1);
        await assertKeyCreatesNewRun(b, id, key, t0 + 5001, 'pruned');
        assert.deepStrictEqual(
          await b.enqueue([newRun(Q, t0 + 5002, keptKey)], t0 + 5002),
          [{ id: kept, created: false, state: 'succeeded' }],
          'the key of a kept run holds',
        );
        assert.ok((await b.prune(later)) >= 1);
        assert.equal(await b.getRun(cancelled), null, 'the cancelled run is pruned after its retention');
        const again = newRun(Q, later, cancelledKey);
        assert.deepStrictEqual(await b.enqueue([again], later), [{ id: again.id, created: true, state: 'queued' }], 'its key too');
      });

      test(
        'a key that names a run deleted behind the broker is taken by a new run (never a dangling id)',
        async () => {
          const b = await open();
          const t0 = Date.now();
          const key = { idempotencyKey: 'dangling', idempotencyTtl: 600_000 };
          const id = await enqueueOne(b, t0, key);
          await options.deleteRunBehindBroker?.(b, id);
          await assertKeyCreatesNewRun(b, id, key, t0 + 1, 'deleted by hand');
        },
        options.deleteRunBehindBroker ? undefined : 'no deleteRunBehindBroker hook for this broker',
      );
    });

    // ---------------------------------------------------------------------------------------------
    describe('cancel', () => {
      test('a queued run: cancelled, never reserved', async () => {
        const b = await open();
        const t0 = Date.now();
        const id = await enqueueOne(b, t0);
        const keep = await enqueueOne(b, t0);
        assert.deepStrictEqual(await b.cancel(id, t0 + 5), { outcome: 'cancelled', previous: 'queued' });
        assertFields(await getRun(b, id), { state: 'cancelled', finishedAt: t0 + 5 }, 'run');
        const { runs } = await reserveAll(b, 'w1', t0 + 10);
        assert.deepStrictEqual(ids(runs), [keep], 'only the other run is reserved');
      });

      test('a scheduled run: cancelled, never reserved, even past its runAt', async () => {
        const b = await open();
        const t0 = Date.now();
        const id = await enqueueOne(b, t0, { runAt: t0 + 1000 });
        assert.deepStrictEqual(await b.cancel(id, t0 + 5), { outcome: 'cancelled', previous: 'scheduled' });
        const { runs } = await reserveAll(b, 'w1', t0 + 5000);
        assert.deepStrictEqual(runs, []);
        assertFields(await getRun(b, id), { state: 'cancelled' }, 'run');
      });

      test('an active run: cancelled; its worker renews to learn it, settles lost, onCancel fires; never recovered', async () => {
        const b = await open();
        const t0 = Date.now();
        const seen: string[] = [];
        const stop = b.onCancel((cancelled) => seen.push(...cancelled));
        try {
          const id = await enqueueOne(b, t0);
          await reserveOne(b, 'w1', t0, 1000);
          assert.deepStrictEqual(await b.cancel(id, t0 + 5), { outcome: 'cancelled', previous: 'active' });
          const rec = await getRun(b, id);
          assertFields(rec, { state: 'cancelled', finishedAt: t0 + 5 }, 'run');
          assertFields(rec.history.at(-1), { attempt: 1, worker: 'w1', outcome: 'cancelled' }, 'history of the cancelled attempt');
          await waitFor(() => seen.includes(id), { timeoutMs: NOTIFY_TIMEOUT_MS, message: `onCancel listener called with ${id}` });

          assert.deepStrictEqual(await b.renew('w1', [{ id, attempt: 1 }], 1000, t0 + 10), [id], 'renew reports the cancelled run');
          assert.equal(await b.progress('w1', { id, attempt: 1 }, '50'), 'lost');
          const before = await getRun(b, id);
          assert.deepStrictEqual(
            await b.settle('w1', [{ id, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: RETAIN }], t0 + 20),
            ['lost'],
          );
          assert.deepStrictEqual(await getRun(b, id), before, 'the late settlement changes nothing');

          const later = await reserveAll(b, 'w2', t0 + 10_000);
          assert.deepStrictEqual(later.runs, [], 'the expired lease of a cancelled run is not recovered');
          assertFields(await getRun(b, id), { state: 'cancelled', leaseLosses: 0 }, 'run after the lease time');
        } finally {
          stop();
        }
      });

      test('a finished run: outcome finished with its state', async () => {
        const b = await open();
        const t0 = Date.now();
        const ok = await enqueueOne(b, t0);
        const ko = await enqueueOne(b, t0);
        const cancelled = await enqueueOne(b, t0);
        await reserveAll(b, 'w1', t0, { max: 2 });
        await b.settle(
          'w1',
          [
            { id: ok, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: RETAIN },
            { id: ko, attempt: 1, outcome: 'failed', error: errorText('x'), retentionMs: RETAIN },
          ],
          t0 + 1,
        );
        await b.cancel(cancelled, t0 + 2);
        const okBefore = await getRun(b, ok);
        assert.deepStrictEqual(await b.cancel(ok, t0 + 3), { outcome: 'finished', state: 'succeeded' });
        assert.deepStrictEqual(await b.cancel(ko, t0 + 3), { outcome: 'finished', state: 'failed' });
        assert.deepStrictEqual(await b.cancel(cancelled, t0 + 3), { outcome: 'finished', state: 'cancelled' });
        assert.deepStrictEqual(await getRun(b, ok), okBefore, 'cancelling a finished run changes nothing');
      });

      test('an unknown or malformed id: not_found', async () => {
        const b = await open();
        const t0 = Date.now();
        for (const id of [newRunId(Q), newRunId('never-used'), 'nope', '', 'a.b', `${Q}.${'!'.repeat(26)}`, `{${Q}}.${'0'.repeat(26)}`]) {
          assert.deepStrictEqual(await b.cancel(id, t0), { outcome: 'not_found' }, `cancel(${JSON.stringify(id)})`);
        }
      });
    });

    // ---------------------------------------------------------------------------------------------
    describe('retry (replay of a failed or cancelled run)', () => {
      test('a failed run goes back to queued with attempts reset, and is reserved again from attempt 1', async () => {
        const b = await open();
        const t0 = Date.now();
        const id = await enqueueOne(b, t0);
        await reserveOne(b, 'w1', t0);
        await b.settle('w1', [{ id, attempt: 1, outcome: 'failed', error: errorText('boom'), retentionMs: 1000 }], t0 + 1);
        assert.deepStrictEqual(await b.retry(id, t0 + 2), { outcome: 'queued' });
        const rec = await getRun(b, id);
        assertFields(rec, { state: 'queued', attempts: 0 }, 'replayed run');
        assert.equal(rec.expiresAt, undefined, 'a replayed run no longer expires');
        assert.equal(await b.prune(t0 + 10_000), 0, 'and is not pruned at its old expiry');
        const r = await reserveOne(b, 'w2', t0 + 20_000);
        assertFields(r, { id, attempt: 1 }, 'reservation after replay');
        assertFields(await getRun(b, id), { state: 'active', attempts: 1, worker: 'w2' }, 'run');
      });

      test('a cancelled run (queued, scheduled or active when cancelled) goes back to queued, keeps its key, and runs from attempt 1', async () => {
        const b = await open();
        const t0 = Date.now();
        const key = { idempotencyKey: 'cancelled-then-retried', idempotencyTtl: 10 * 86_400_000 };
        const fromQueued = await enqueueOne(b, t0, key);
        const fromActive = await enqueueOne(b, t0);
        await reserveAll(b, 'w1', t0, { max: 1 });
        const fromScheduled = await enqueueOne(b, t0, { runAt: t0 + 1000 });
        await reserveAll(b, 'w1', t0, { max: 1 });
        for (const id of [fromQueued, fromActive, fromScheduled]) assert.equal((await b.cancel(id, t0 + 1)).outcome, 'cancelled');
        for (const id of [fromQueued, fromActive, fromScheduled]) {
          assert.deepStrictEqual(await b.retry(id, t0 + 2), { outcome: 'queued' }, `retry of ${id}`);
          const rec = await getRun(b, id);
          assertFields(rec, { state: 'queued', attempts: 0, leaseLosses: 0 }, 'replayed cancelled run');
          assert.equal(rec.expiresAt, undefined, 'a replayed run no longer expires');
          assert.equal(rec.finishedAt, undefined, 'nor has it finished');
        }
        assert.equal(await b.prune(t0 + 3 * 86_400_000), 0, 'none is pruned at its old expiry');
        assert.deepStrictEqual(
          await b.enqueue([newRun(Q, t0 + 3, key)], t0 + 3),
          [{ id: fromQueued, created: false, state: 'queued' }],
          'its key still names it',
        );
        const { runs } = await reserveAll(b, 'w2', t0 + 4);
        assert.deepStrictEqual(ids(runs).sort(), [fromQueued, fromActive, fromScheduled].sort());
        for (const r of runs) assert.equal(r.attempt, 1, `${r.id} starts again from attempt 1`);
        assert.deepStrictEqual(
          await b.settle('w1', [{ id: fromActive, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: RETAIN }], t0 + 5),
          ['lost'],
          'the worker that held it before the cancel cannot settle the new attempt',
        );
        assertFields(
          (await getRun(b, fromActive)).history[0],
          { attempt: 1, worker: 'w1', outcome: 'cancelled' },
          'the cancelled attempt is kept',
        );
      });

      test('a run that is neither failed nor cancelled: not_failed with its state, unchanged', async () => {
        const b = await open();
        const t0 = Date.now();
        const active = await enqueueOne(b, t0);
        const succeeded = await enqueueOne(b, t0);
        await reserveAll(b, 'w1', t0);
        await b.settle('w1', [{ id: succeeded, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: RETAIN }], t0);
        const queued = await enqueueOne(b, t0);
        const scheduled = await enqueueOne(b, t0, { runAt: t0 + 1000 });
        const cases: [string, RunState][] = [
          [queued, 'queued'],
          [scheduled, 'scheduled'],
          [active, 'active'],
          [succeeded, 'succeeded'],
        ];
        for (const [id, state] of cases) {
          const before = await getRun(b, id);
          assert.deepStrictEqual(await b.retry(id, t0 + 1), { outcome: 'not_failed', state }, `retry of a ${state} run`);
          assert.deepStrictEqual(await getRun(b, id), before, `the ${state} run is unchanged`);
        }
      });

      test('an unknown or malformed id: not_found', async () => {
        const b = await open();
        const t0 = Date.now();
        for (const id of [newRunId(Q), 'nope', '', `${Q}.${'!'.repeat(26)}`]) {
          assert.deepStrictEqual(await b.retry(id, t0), { outcome: 'not_found' }, `retry(${JSON.stringify(id)})`);
        }
      });
    });

    // ---------------------------------------------------------------------------------------------
    describe('leases', () => {
      test('renew extends the lease: the run is not recovered at the old expiry', async () => {
        const b = await open();
        const t0 = Date.now();
        const id = await enqueueOne(b, t0);
        await reserveOne(b, 'w1', t0, 1000);
        assert.deepStrictEqual(await b.renew('w1', [{ id, attempt: 1 }], 1000, t0 + 900), [], 'the lease is still held');
        const mid = await reserveAll(b, 'w2', t0 + 1500);
        assert.deepStrictEqual(mid.runs, [], 'not recovered at the old expiry');
        assert.equal(mid.nextAt, t0 + 1900, 'nextAt is the renewed expiry');
        assertFields(await getRun(b, id), { state: 'active', worker: 'w1', leaseLosses: 0 }, 'run');
        const late = await reserveOne(b, 'w2', t0 + 2000);
        assertFields(late, { id, attempt: 2 }, 'recovered after the renewed expiry');
      });

      test('an expired lease: another worker recovers the run (attempt 2, leaseLosses 1, history lost); the old worker is told', async () => {
        const b = await open();
        const t0 = Date.now();
        const id = await enqueueOne(b, t0);
        await reserveOne(b, 'w1', t0, 1000);
        assert.deepStrictEqual((await reserveAll(b, 'w2', t0 + 500)).runs, [], 'not recovered while the lease holds');
        const r = await reserveOne(b, 'w2', t0 + 1001);
        assertFields(r, { id, attempt: 2, startedAt: t0 + 1001 }, 'recovered reservation');
        const rec = await getRun(b, id);
        assertFields(rec, { state: 'active', attempts: 2, leaseLosses: 1, worker: 'w2' }, 'run');
        assert.equal(rec.history.length, 2);
        assertFields(rec.history[0], { attempt: 1, worker: 'w1', startedAt: t0, outcome: 'lost' }, 'history[0]');
        assertFields(rec.history[1], { attempt: 2, worker: 'w2', startedAt: t0 + 1001 }, 'history[1]');

        assert.deepStrictEqual(await b.renew('w1', [{ id, attempt: 1 }], 1000, t0 + 1002), [id], 'the old worker learns on renew');
        assert.equal(await b.progress('w1', { id, attempt: 1 }, '1'), 'lost');
        assert.deepStrictEqual(
          await b.settle('w1', [{ id, attempt: 1, outcome: 'succeeded', result: '"old"', retentionMs: RETAIN }], t0 + 1003),
          ['lost'],
        );
        assertFields(await getRun(b, id), { state: 'active', worker: 'w2', attempts: 2 }, 'unchanged by the old worker');
        assert.deepStrictEqual(
          await b.settle('w2', [{ id, attempt: 2, outcome: 'succeeded', result: '"new"', retentionMs: RETAIN }], t0 + 1004),
          ['ok'],
        );
        assertFields(await getRun(b, id), { state: 'succeeded', result: '"new"' }, 'settled by the new worker');
      });

      test('renew by the wrong worker or for a stale attempt does not extend the lease', async () => {
        const b = await open();
        const t0 = Date.now();
        const id = await enqueueOne(b, t0);
        await reserveOne(b, 'w1', t0, 1000);
        assert.deepStrictEqual(await b.renew('w2', [{ id, attempt: 1 }], 10_000, t0 + 500), [id]);
        assert.deepStrictEqual(await b.renew('w1', [{ id, attempt: 2 }], 10_000, t0 + 500), [id]);
        const unknown = newRunId(Q);
        assert.deepStrictEqual(
          await b.renew('w1', [{ id: unknown, attempt: 1 }], 10_000, t0 + 500),
          [unknown],
          'an unknown run is not held',
        );
        assertFields(await reserveOne(b, 'w3', t0 + 1001), { id, attempt: 2 }, 'recovered at the original expiry');
      });

      test('a run whose lease expires maxLeaseLosses times is failed with reason lease_lost', async () => {
        const b = await open({ maxLeaseLosses: 2, failedRetentionMs: 5000 });
        const t0 = Date.now();
        const id = await enqueueOne(b, t0);
        await reserveOne(b, 'w1', t0, 1000);
        await reserveOne(b, 'w2', t0 + 1001, 1000); // first loss: recovered, attempt 2
        assertFields(await getRun(b, id), { leaseLosses: 1, attempts: 2 }, 'after the first loss');
        const t2 = t0 + 2002;
        const after = await reserveAll(b, 'w3', t2, { leaseMs: 1000 });
        assert.deepStrictEqual(after.runs, [], 'the second loss fails the run instead of requeueing it');
        const rec = await getRun(b, id);
        assertFields(
          rec,
          { state: 'failed', leaseLosses: 2, attempts: 2, finishedAt: t2, expiresAt: t2 + 5000 },
          'run failed by the broker',
        );
        assert.equal(parseError(rec.error).reason, 'lease_lost', 'error reason');
        assertFields(rec.history.at(-1), { attempt: 2, worker: 'w2', outcome: 'lost' }, 'last attempt');
        assert.deepStrictEqual(await b.retry(id, t2 + 1), { outcome: 'queued' }, 'a lease_lost run can be replayed');
      });

      test('maxLeaseLosses defaults to 3', async () => {
        const b = await open();
        const t0 = Date.now();
        const id = await enqueueOne(b, t0);
        await reserveOne(b, 'w1', t0, 1000);
        assertFields(await reserveOne(b, 'w2', t0 + 1001, 1000), { id, attempt: 2 }, 'after one loss');
        assertFields(await reserveOne(b, 'w3', t0 + 2002, 1000), { id, attempt: 3 }, 'after two losses');
        assert.deepStrictEqual((await reserveAll(b, 'w4', t0 + 3003)).runs, [], 'the third loss fails the run');
        const rec = await getRun(b, id);
        assertFields(rec, { state: 'failed', leaseLosses: 3 }, 'run');
        assert.equal(parseError(rec.error).reason, 'lease_lost');
      });
    });

    // ---------------------------------------------------------------------------------------------
    describe('release', () => {
      test('back to queued at once, reservable, the attempt not counted', async () => {
        const b = await open();
        const t0 = Date.now();
        const id = await enqueueOne(b, t0);
        await reserveOne(b, 'w1', t0, LEASE);
        await b.release('w1', [{ id, attempt: 1 }], t0 + 10);
        const rec = await getRun(b, id);
        assertFields(rec, { state: 'queued', attempts: 0, leaseLosses: 0 }, 'released run');
        assert.ok(
          rec.history.some((h) => h.attempt === 1 && h.worker === 'w1' && h.outcome === 'released'),
          `history records the released attempt: ${JSON.stringify(rec.history)}`,
        );
        const again = await reserveOne(b, 'w2', t0 + 11); // long before the old lease would expire
        assertFields(again, { id, attempt: 1 }, 'the same attempt number again');
        assertFields(await getRun(b, id), { state: 'active', attempts: 1, worker: 'w2' }, 'run');
      });

      test('a release by the wrong worker or for a stale attempt changes nothing', async () => {
        const b = await open();
        const t0 = Date.now();
        const id = await enqueueOne(b, t0);
        await reserveOne(b, 'w1', t0);
        const before = await getRun(b, id);
        await b.release('w2', [{ id, attempt: 1 }], t0 + 1);
        await b.release('w1', [{ id, attempt: 2 }], t0 + 1);
        await b.release('w1', [{ id: newRunId(Q), attempt: 1 }], t0 + 1);
        assert.deepStrictEqual(await getRun(b, id), before);
        assert.deepStrictEqual((await reserveAll(b, 'w2', t0 + 2)).runs, []);
      });
    });

    // ---------------------------------------------------------------------------------------------
    describe('progress', () => {
      test('stored on the run while its lease is held; lost for another worker, a stale attempt or after settle', async () => {
        const b = await open();
        const t0 = Date.now();
        const id = await enqueueOne(b, t0);
        await reserveOne(b, 'w1', t0);
        assert.equal(await b.progress('w1', { id, attempt: 1 }, '{"pct":10}'), 'ok');
        assert.equal((await getRun(b, id)).progress, '{"pct":10}');
        assert.equal(await b.progress('w1', { id, attempt: 1 }, '{ "pct" : 50 }'), 'ok');
        assert.equal((await getRun(b, id)).progress, '{ "pct" : 50 }', 'the latest value, text untouched');
        assert.equal(await b.progress('w2', { id, attempt: 1 }, '{"pct":99}'), 'lost', 'another worker');
        assert.equal(await b.progress('w1', { id, attempt: 2 }, '{"pct":99}'), 'lost', 'a stale attempt');
        assert.equal(await b.progress('w1', { id: newRunId(Q), attempt: 1 }, '1'), 'lost', 'an unknown run');
        assert.equal((await getRun(b, id)).progress, '{ "pct" : 50 }', 'unchanged by rejected progress');
        await b.settle('w1', [{ id, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: RETAIN }], t0 + 1);
        assert.equal(await b.progress('w1', { id, attempt: 1 }, '{"pct":100}'), 'lost', 'after settle');
      });
    });

    // ---------------------------------------------------------------------------------------------
    // Several brokers on one storage: another instance in this process (which may share in-process
    // machinery with the first), and a broker in another process (which shares nothing but storage).
    const modes: { label: string; other: (b: Broker) => Promise<PeerBroker>; skip?: string }[] = [
      { label: 'another instance in this process', other: (b) => share(b) },
      {
        label: 'another process',
        other: (b) => peerOf(b),
        ...(options.connection ? {} : { skip: 'no connection hook given to brokerConformance' }),
      },
    ];
    for (const mode of modes) {
      describe(`several brokers on the same storage: ${mode.label}`, () => {
        const t = (title: string, fn: () => Promise<void>) => test(title, fn, mode.skip);

        t('both read the same run', async () => {
          const a = await open();
          const other = await mode.other(a);
          const t0 = Date.now();
          const id = await enqueueOne(other, t0, { input: '{"from":"other"}', priority: 4 });
          assert.deepStrictEqual(await a.getRun(id), await other.getRun(id));
          assertFields(await getRun(a, id), { state: 'queued', input: '{"from":"other"}', priority: 4 }, 'run seen by the first broker');
        });

        t('concurrent reserves never hand out a run twice and together hand out every run', async () => {
          const a = await open();
          const other = await mode.other(a);
          const t0 = Date.now();
          const runs = Array.from({ length: 60 }, (_, i) => newRun(Q, t0, { priority: i % 3 }));
          for (let i = 0; i < runs.length; i += 20) await a.enqueue(runs.slice(i, i + 20), t0);
          const calls = Array.from({ length: 24 }, (_, i) =>
            (i % 2 ? a : other).reserve({ workerId: `w${i % 4}`, queues: [Q], max: 5, leaseMs: LEASE, now: t0 + 1 }),
          );
          const results = await Promise.all(calls);
          const got = results.flatMap((r) => ids(r.runs));
          assert.equal(new Set(got).size, got.length, 'no run handed out twice');
          assert.deepStrictEqual(new Set(got), new Set(ids(runs)), 'every run handed out');
          assert.ok(
            results.every((r) => r.runs.every((x) => x.attempt === 1)),
            'every reservation is a first attempt',
          );
          assert.deepStrictEqual((await a.counts([Q]))[Q], { ...ZERO_COUNTS, active: 60 });
        });

        t('concurrent settles and cancels: each run ends in exactly one state', async () => {
          const a = await open();
          const other = await mode.other(a);
          const t0 = Date.now();
          const runs = Array.from({ length: 30 }, () => newRun(Q, t0));
          await a.enqueue(runs, t0);
          assert.equal((await reserveAll(a, 'w1', t0)).runs.length, 30);
          const [settles, cancels] = await Promise.all([
            Promise.all(
              runs.map((r) => a.settle('w1', [{ id: r.id, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: RETAIN }], t0 + 1)),
            ),
            Promise.all(runs.map((r) => other.cancel(r.id, t0 + 1))),
          ]);
          for (const [i, r] of runs.entries()) {
            const settled = settles[i]![0] === 'ok';
            const cancel = cancels[i]!;
            const rec = await getRun(a, r.id);
            if (settled) {
              assert.deepStrictEqual(
                cancel,
                { outcome: 'finished', state: 'succeeded' },
                `${r.id}: settled, so the cancel found it finished`,
              );
              assert.equal(rec.state, 'succeeded');
            } else {
              assert.deepStrictEqual(cancel, { outcome: 'cancelled', previous: 'active' }, `${r.id}: settle lost, so the cancel won`);
              assert.equal(rec.state, 'cancelled');
            }
          }
        });

        t('waitForWork blocks until the other broker enqueues, then resolves', async () => {
          const waiter = await open();
          const producer = await mode.other(waiter);
          await reserveAll(waiter, 'w1', Date.now());
          const c = controller();
          const waiting = waiter.waitForWork([Q], null, c.signal);
          const woken = settledFlag(waiting);
          await producer.counts([Q]);
          await settleTurns(200);
          assert.equal(woken.settled, false, 'no work yet: still waiting');
          await enqueueOne(producer, Date.now());
          await within(waiting, NOTIFY_TIMEOUT_MS, 'waitForWork woken by an enqueue from the other broker');
        });

        t('an enqueue by the other broker between the last reserve and waitForWork is not lost', async () => {
          const waiter = await open();
          const producer = await mode.other(waiter);
          await reserveAll(waiter, 'w1', Date.now());
          await enqueueOne(producer, Date.now());
          await settleTurns(200); // the notification comes and goes with nobody waiting
          const c = controller();
          await within(waiter.waitForWork([Q], null, c.signal), NOTIFY_TIMEOUT_MS, 'waitForWork after an enqueue it did not see happen');
          assert.equal((await reserveAll(waiter, 'w1', Date.now())).runs.length, 1, 'and the run is there');
        });

        t('transitions are atomic as seen by a concurrent reader on the other broker', async () => {
          const a = await open();
          const reader = await mode.other(a);
          const t0 = Date.now();
          const runs = Array.from({ length: 40 }, () => newRun(Q, t0));
          await a.enqueue(runs, t0);
          assert.equal((await reserveAll(a, 'w1', t0)).runs.length, runs.length);
          const total = runs.length;
          let writing = true;
          const seen: string[] = [];
          const read = async () => {
            let observations = 0;
            while (writing || observations < 2) {
              const [counts, rec] = await Promise.all([reader.counts([Q]), reader.getRun(runs[observations % total]!.id)]);
              const c = counts[Q]!;
              const sum = c.queued + c.scheduled + c.active + c.succeeded + c.failed + c.cancelled;
              if (sum !== total) seen.push(`counts ${JSON.stringify(c)} sum to ${sum}, not ${total}`);
              if (rec) {
                const done = rec.state === 'succeeded' || rec.state === 'failed' || rec.state === 'cancelled';
                if (done !== (rec.finishedAt !== undefined)) seen.push(`${rec.id} ${rec.state} with finishedAt ${rec.finishedAt}`);
                if (rec.state === 'succeeded' && (rec.result !== '1' || rec.history.at(-1)?.outcome !== 'succeeded'))
                  seen.push(`${rec.id} succeeded with result ${rec.result} and history ${JSON.stringify(rec.history)}`);
                if (rec.state === 'active' && rec.history.at(-1)?.outcome !== undefined)
                  seen.push(`${rec.id} active with a finished attempt ${JSON.stringify(rec.history)}`);
                if (rec.state === 'cancelled' && rec.history.at(-1)?.outcome !== 'cancelled')
                  seen.push(`${rec.id} cancelled, its attempt ${JSON.stringify(rec.history.at(-1))}`);
              } else seen.push(`${runs[observations % total]!.id} not found`);
              observations++;
            }
            return observations;
          };
          const write = async () => {
            try {
              for (let i = 0; i < total; i += 4) {
                const batch = runs.slice(i, i + 4);
                // Half settled, half cancelled, each in one call of its own kind.
                if ((i / 4) % 2) await Promise.all(batch.map((r) => a.cancel(r.id, t0 + 1 + i)));
                else
                  await a.settle(
                    'w1',
                    batch.map((r) => ({ id: r.id, attempt: 1, outcome: 'succeeded' as const, result: '1', retentionMs: RETAIN })),
                    t0 + 1 + i,
                  );
              }
            } finally {
              writing = false;
            }
          };
          const [observations] = await Promise.all([read(), write()]);
          assert.deepStrictEqual(seen.slice(0, 5), [], `${seen.length} half-done transitions seen in ${observations} reads`);
          assert.deepStrictEqual((await a.counts([Q]))[Q], { ...ZERO_COUNTS, succeeded: 20, cancelled: 20 });
        });

        t('waitForWork resolves on a replay (retry) made by the other broker', async () => {
          const waiter = await open();
          const api = await mode.other(waiter);
          const t0 = Date.now();
          const id = await enqueueOne(api, t0);
          await reserveOne(api, 'w1', t0);
          await api.settle('w1', [{ id, attempt: 1, outcome: 'failed', error: errorText('x'), retentionMs: RETAIN }], t0);
          // The enqueue's wake-up (a worker takes it, finds nothing to reserve, and waits again).
          await within(waiter.waitForWork([Q], Date.now() + 1000, controller().signal), NOTIFY_TIMEOUT_MS, 'the enqueue wake-up');
          assert.deepStrictEqual((await reserveAll(waiter, 'w2', Date.now())).runs, [], 'nothing queued: the run failed');
          const c = controller();
          const waiting = waiter.waitForWork([Q], null, c.signal);
          const woken = settledFlag(waiting);
          await settleTurns(200);
          assert.equal(woken.settled, false, 'no work before the retry: still waiting');
          assert.deepStrictEqual(await api.retry(id, Date.now()), { outcome: 'queued' });
          await within(waiting, NOTIFY_TIMEOUT_MS, 'waitForWork woken by a retry from the other broker');
        });

        t('watch: the listener is called after the run is settled or cancelled by the other broker', async () => {
          const watcher = await open();
          const other = await mode.other(watcher);
          const t0 = Date.now();
          const settled = await enqueueOne(other, t0);
          const cancelled = await enqueueOne(other, t0);
          let settledCalls = 0;
          let cancelledCalls = 0;
          const stop1 = await watcher.watch(settled, () => settledCalls++);
          const stop2 = await watcher.watch(cancelled, () => cancelledCalls++);
          try {
            await reserveAll(other, 'w1', t0, { max: 1 });
            const base = settledCalls;
            assert.deepStrictEqual(
              await other.settle('w1', [{ id: settled, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: RETAIN }], t0 + 1),
              ['ok'],
            );
            await waitFor(() => settledCalls > base, { timeoutMs: NOTIFY_TIMEOUT_MS, message: 'watch listener called after settle' });
            assert.equal((await getRun(watcher, settled)).state, 'succeeded', 'the watcher reads the new state');

            const base2 = cancelledCalls;
            await other.cancel(cancelled, t0 + 2);
            await waitFor(() => cancelledCalls > base2, { timeoutMs: NOTIFY_TIMEOUT_MS, message: 'watch listener called after cancel' });
            assert.equal((await getRun(watcher, cancelled)).state, 'cancelled');
          } finally {
            stop1();
            stop2();
          }
        });

        t("onCancel fires on the worker's broker when the other broker cancels its active run", async () => {
          const worker = await open();
          const api = await mode.other(worker);
          const t0 = Date.now();
          const seen: string[] = [];
          const stop = worker.onCancel((cancelled) => seen.push(...cancelled));
          try {
            const id = await enqueueOne(api, t0);
            const keep = await enqueueOne(api, t0);
            await reserveAll(worker, 'w1', t0);
            assert.deepStrictEqual(await api.cancel(id, t0 + 5), { outcome: 'cancelled', previous: 'active' });
            await waitFor(() => seen.includes(id), {
              timeoutMs: NOTIFY_TIMEOUT_MS,
              message: `onCancel on the worker's broker called with ${id}`,
            });
            assert.ok(!seen.includes(keep), 'only the cancelled run is reported');
            assert.deepStrictEqual(await worker.renew('w1', [{ id, attempt: 1 }], LEASE, t0 + 10), [id]);
          } finally {
            stop();
          }
        });
      });
    }

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

    // ---------------------------------------------------------------------------------------------
    describe('counts', () => {
      test('per queue, by state', async () => {
        const b = await open();
        const t0 = Date.now();
        const [a, bb, c, e] = [newRun('q1', t0), newRun('q1', t0), newRun('q1', t0), newRun('q1', t0)];
        await b.enqueue([a, bb, c, e], t0);
        await enqueueOne(b, t0, { runAt: t0 + 10_000 }, 'q1');
        const got = await reserveAll(b, 'w1', t0, { queues: ['q1'], max: 3 });
        assert.deepStrictEqual(ids(got.runs), [a.id, bb.id, c.id]);
        await b.settle(
          'w1',
          [
            { id: a.id, attempt: 1, outcome: 'succeeded', result: '1', retentionMs: RETAIN },
            { id: bb.id, attempt: 1, outcome: 'failed', error: errorText('x'), retentionMs: RETAIN },
          ],
          t0 + 1,
        );
        await b.cancel(e.id, t0 + 2);
        await enqueueOne(b, t0, {}, 'q1');
        await b.enqueue([newRun('q2', t0), newRun('q2', t0)], t0);

        const expected: Record<string, QueueCounts> = {
          q1: { queued: 1, scheduled: 1, active: 1, succeeded: 1, failed: 1, cancelled: 1 },
          q2: { ...ZERO_COUNTS, queued: 2 },
        };
        assert.deepStrictEqual(await b.counts(['q1', 'q2']), expected);
        assert.deepStrictEqual(await b.counts(['q2']), { q2: expected.q2 }, 'only the requested queues');
        assert.deepStrictEqual(
          await b.counts(['q1', 'no-such-queue']),
          { q1: expected.q1, 'no-such-queue': ZERO_COUNTS },
          'an unknown queue counts zero',
        );
        const all = await b.counts();
        assert.deepStrictEqual(all.q1, expected.q1, 'counts() includes q1');
        assert.deepStrictEqual(all.q2, expected.q2, 'counts() includes q2');
      });
    });

    // ---------------------------------------------------------------------------------------------
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
            opened.push(b);
            await b.ping();
          }),
          TEST_TIMEOUT_MS / 2,
          'ping against unreachable storage',
        );
      });
    });
  });
}
