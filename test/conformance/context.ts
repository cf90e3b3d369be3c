/**
 * What every section of the broker conformance suite shares: the factory and hook types an entry
 * file passes to `brokerConformance` (`suite.ts`), the documented differences that skip a test,
 * the run builders and assertions, and `conformanceContext`, which opens brokers for a test and
 * closes them after it.
 *
 * A section is a file exporting `(c: ConformanceContext) => void` that registers its `describe`
 * blocks; `suite.ts` calls each one, in order.
 */
import assert from 'node:assert/strict';
import { afterEach, it } from 'node:test';
import type {
  Broker,
  BrokerOptions,
  Dependency,
  InputFrom,
  NewRun,
  NewWorkflowRun,
  QueueCounts,
  Reservation,
  RunError,
  RunRecord,
} from '../../src/broker/types.ts';
import { newRunId } from '../../src/core/ids.ts';
import { within } from '../helpers.ts';
import { Peer, type PeerBroker, type PeerConnection, type PeerWhere } from './peer-host.ts';

export type { PeerBroker, PeerWhere } from './peer-host.ts';

export interface MakeBrokerOptions extends BrokerOptions {
  /** Open the new instance on the same storage as this broker (another instance on the same Redis / file / memory). */
  sameStorageAs?: Broker;
}

export type MakeBroker = (opts?: MakeBrokerOptions) => Promise<Broker>;

/**
 * What a test may need beyond one broker on fresh storage:
 * - `sameStorage`: a second instance on the same storage, in this process (`makeBroker({ sameStorageAs })`);
 * - `peer`: a broker on the same storage elsewhere, running concurrently with its own connection: in
 *   a child process, or in a worker thread for storage only this process can open (the `connection`
 *   hook, and `peerIn`);
 * - `editBehindBroker`: a change made to the storage directly, not through the broker (the
 *   `deleteRunBehindBroker` hook).
 */
export type Need = 'sameStorage' | 'peer' | 'editBehindBroker';

export interface ConformanceOptions {
  /**
   * How a peer reaches the storage of `broker`: a URL and options for `connectBroker`
   * (`src/broker/connect.ts`). With it, the suite also runs its cross-instance tests against a peer
   * (wake-ups, watch and onCancel must cross to a broker with modules, connection and wake hub of
   * its own, not just instances that happen to share an in-process event hub). A broker without it
   * must name the difference in `differences.peer`; else those tests fail.
   */
  connection?: (broker: Broker) => PeerConnection;
  /**
   * Where the peer runs: `'process'` (the default: a child process, for storage any process can
   * open), or `'thread'` (a worker thread of this process, for storage only this process can open,
   * such as the memory broker's shared-cache memory database).
   */
  peerIn?: PeerWhere;
  /**
   * Deletes run `id` from the storage of `broker` directly, behind the broker's back (as a hand
   * edit, or an earlier Errand that deleted runs and left their idempotency keys, would), leaving
   * everything else as it is. A broker without it must name the difference in
   * `differences.editBehindBroker`; else the test of a key that names a missing run fails.
   */
  deleteRunBehindBroker?: (broker: Broker, id: string) => Promise<void>;
  /**
   * Lets `ms` of real time pass for what the storage expires by its own clock, for a test that
   * moves `now` far ahead (the suite's times are the `now` arguments; a storage's own expiries, such
   * as Redis TTLs, count real time): on Redis, every key of the broker's prefix with a TTL has it
   * shortened by `ms`, deleted once past, as if that time had passed. A broker whose storage
   * expires nothing by itself (SQLite: every time is the caller's `now`) gives none.
   */
  elapse?: (broker: Broker, ms: number) => Promise<void>;
  /**
   * A broker whose storage cannot be reached (a Redis URL nothing listens on; for SQLite, a file in
   * a folder that does not exist, which already fails at construction). Its `ping` must throw.
   */
  unreachable?: () => Broker | Promise<Broker>;
  /**
   * The documented differences of this broker that make a test impossible, by what the test needs:
   * each a sentence saying what the broker does not do and where that is documented (its README or
   * docs section, its source's header). A test that needs it is skipped with that sentence as the
   * reason, so the run's summary groups the skips by difference. Nothing else skips a test.
   */
  differences?: Partial<Record<Need, string>>;
}

/**
 * How long a test may take before node:test fails it (a hang is a failure, not a stuck run). Far
 * above what a test takes on a quiet machine: on one at load 20 (2 cores) a process gets a tenth of
 * a core, and a deadline a few times the quiet duration fails tests that are not broken.
 */
export const TEST_TIMEOUT_MS = 60_000;
/** Safety net for asynchronous notifications (pub/sub, file watching): far above what any broker needs, loaded machine included. */
export const NOTIFY_TIMEOUT_MS = 15_000;

export const Q = 'conf';
export const TASK = 'conformance.echo';
export const LEASE = 30_000;
export const RETAIN = 60_000;

export const ZERO_COUNTS: QueueCounts = { waiting: 0, queued: 0, scheduled: 0, active: 0, succeeded: 0, failed: 0, cancelled: 0 };

let inputSeq = 0;

/** A run to enqueue, due at `now` unless `over.runAt` says otherwise. */
export function newRun(queue: string, now: number, over: Partial<NewRun> = {}): NewRun {
  inputSeq++;
  return { id: newRunId(queue), task: TASK, queue, input: JSON.stringify({ seq: inputSeq }), priority: 0, runAt: now, ...over };
}

/** A run of a workflow in `queue`, with its dependencies and how its input is built. */
export function workflowStep(
  queue: string,
  now: number,
  over: { dependsOn?: Dependency[]; inputFrom?: InputFrom; input?: string; runAt?: number } = {},
): NewWorkflowRun {
  const run: NewWorkflowRun = { ...newRun(queue, now), ...(over.input !== undefined ? { input: over.input } : {}) };
  if (over.runAt !== undefined) run.runAt = over.runAt;
  if (over.dependsOn) run.dependsOn = over.dependsOn;
  if (over.inputFrom) run.inputFrom = over.inputFrom;
  return run;
}

/** Dependencies on `runs` (the default policy, no names). */
export const on = (...runs: NewWorkflowRun[]): Dependency[] => runs.map((r) => ({ id: r.id }));

export function ids(runs: readonly { id: string }[]): string[] {
  return runs.map((r) => r.id);
}

/** Asserts each field of `expected` on `actual` (deep, strict), naming the field on failure. */
export function assertFields(actual: object | null | undefined, expected: Record<string, unknown>, label: string): void {
  assert.ok(actual, `${label}: expected a value, got ${String(actual)}`);
  const a = actual as Record<string, unknown>;
  for (const [key, value] of Object.entries(expected)) {
    assert.deepStrictEqual(a[key], value, `${label}.${key}: expected ${JSON.stringify(value)}, got ${JSON.stringify(a[key])}`);
  }
}

export function parseError(text: string | undefined): RunError {
  assert.ok(text !== undefined, 'the run should carry an error');
  return JSON.parse(text) as RunError;
}

export function errorText(message: string, reason?: string): string {
  const e: RunError = { name: 'Error', message, stack: `Error: ${message}\n    at handler (tasks.ts:1:1)` };
  if (reason) e.reason = reason;
  return JSON.stringify(e);
}

/** What a section gets: the broker under test's name and hooks, brokers to open, and the suite's helpers. */
export interface ConformanceContext {
  /** The broker's name, as given to `brokerConformance`. */
  readonly name: string;
  readonly options: ConformanceOptions;
  /** The entry file's factory itself: a broker on fresh storage that the test closes itself. */
  readonly makeBroker: MakeBroker;
  /** A broker on fresh storage, closed after the test. */
  open(opts?: BrokerOptions): Promise<Broker>;
  /** Another instance on the storage of `b` (the test must be declared with `needs: 'sameStorage'`). */
  share(b: Broker, opts?: BrokerOptions): Promise<Broker>;
  /** A broker on the storage of `b`, in a child process or a worker thread (`peerIn`; the test must be declared with `needs: 'peer'`). */
  peerOf(b: Broker): Promise<PeerBroker>;
  /** Deletes run `id` behind the broker's back (the test must be declared with `needs: 'editBehindBroker'`). */
  deleteRunBehindBroker(b: Broker, id: string): Promise<void>;
  /** Lets `ms` of real time pass for the storage's own expiries (the `elapse` hook; nothing without one). */
  elapse(b: Broker, ms: number): Promise<void>;
  /** Closes `b` after the test, as if opened here. */
  track(b: Broker): void;
  /** An AbortController aborted after the test. */
  controller(): AbortController;
  /** A test, with the suite's timeout; skipped, naming the difference, when the broker documents one for `needs`. */
  test(title: string, fn: () => Promise<void>, needs?: Need): void;
  getRun(b: PeerBroker, id: string): Promise<RunRecord>;
  reserveAll(
    b: PeerBroker,
    workerId: string,
    now: number,
    opts?: { queues?: string[]; max?: number; leaseMs?: number },
  ): ReturnType<Broker['reserve']>;
  reserveOne(b: PeerBroker, workerId: string, now: number, leaseMs?: number, queues?: string[]): Promise<Reservation>;
  /** Enqueues one run and returns its id. */
  enqueueOne(b: PeerBroker, now: number, over?: Partial<NewRun>, queue?: string): Promise<string>;
  /**
   * Reserves (from `queues`, default [Q]) and settles as succeeded every run that is ready, its
   * result `fn(run)`, until none is left (asserting each settle applied); returns what ran, in order.
   */
  drain(b: Broker, now: number, fn: (r: Reservation) => string | null, queues?: string[]): Promise<Reservation[]>;
}

/** The hook a need calls for, and what to say when a broker has neither the hook nor a documented difference. */
const NEED_HOOKS: Record<Need, string> = {
  sameStorage: 'a factory that honours `sameStorageAs`',
  peer: 'a `connection` hook',
  editBehindBroker: 'a `deleteRunBehindBroker` hook',
};

export function missingHook(name: string, need: Need): string {
  return `the ${name} broker has no ${NEED_HOOKS[need]}: give one to brokerConformance, or name its documented difference in \`differences.${need}\``;
}

/** What a test opened: brokers, peers and abort controllers, aborted and closed after each test. */
export interface TestResources {
  track<B extends Broker>(b: B): B;
  trackPeer(p: Peer): Peer;
  controller(): AbortController;
}

/** Registers the `afterEach` that aborts the controllers and closes every broker and peer a test opened. */
export function testResources(name: string): TestResources {
  let opened: Broker[] = [];
  let peers: Peer[] = [];
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
  return {
    track: (b) => {
      opened.push(b);
      return b;
    },
    trackPeer: (p) => {
      peers.push(p);
      return p;
    },
    controller: () => {
      const c = new AbortController();
      controllers.push(c);
      return c;
    },
  };
}

/** `it`, skipped with the broker's own sentence when the test needs what the broker documents it cannot do. */
export function testNeeding(options: { differences?: Partial<Record<Need, string>> }) {
  return (title: string, fn: () => Promise<void>, needs?: Need): void => {
    const difference = needs && options.differences?.[needs];
    it(title, { timeout: TEST_TIMEOUT_MS, ...(difference ? { skip: difference } : {}) }, fn);
  };
}

/**
 * The context of one broker's run of the suite; call inside its `describe`. Registers an
 * `afterEach` that aborts the controllers and closes every broker and peer the test opened.
 */
export function conformanceContext(name: string, makeBroker: MakeBroker, options: ConformanceOptions = {}): ConformanceContext {
  const res = testResources(name);

  const getRun = async (b: PeerBroker, id: string): Promise<RunRecord> => {
    const rec = await b.getRun(id);
    assert.ok(rec, `getRun(${id}) should find the run`);
    return rec;
  };

  return {
    name,
    options,
    makeBroker,
    open: async (opts) => res.track(await makeBroker(opts)),
    share: async (b, opts) => res.track(await makeBroker({ ...opts, sameStorageAs: b })),
    peerOf: async (b) => {
      assert.ok(options.connection, missingHook(name, 'peer'));
      return res.trackPeer(await Peer.start(options.connection(b), options.peerIn ?? 'process')).broker;
    },
    deleteRunBehindBroker: async (b, id) => {
      assert.ok(options.deleteRunBehindBroker, missingHook(name, 'editBehindBroker'));
      await options.deleteRunBehindBroker(b, id);
    },
    elapse: async (b, ms) => {
      await options.elapse?.(b, ms);
    },
    track: (b) => {
      res.track(b);
    },
    controller: res.controller,
    test: testNeeding(options),
    getRun,
    reserveAll: (b, workerId, now, opts = {}) =>
      b.reserve({ workerId, queues: opts.queues ?? [Q], max: opts.max ?? 100, leaseMs: opts.leaseMs ?? LEASE, now }),
    reserveOne: async (b, workerId, now, leaseMs = LEASE, queues = [Q]) => {
      const { runs } = await b.reserve({ workerId, queues, max: 1, leaseMs, now });
      assert.equal(runs.length, 1, `reserve by ${workerId} at now=${now} should return one run, got ${runs.length}`);
      return runs[0]!;
    },
    enqueueOne: async (b, now, over = {}, queue = Q) => {
      const run = newRun(queue, now, over);
      const [res] = await b.enqueue([run], now);
      assert.ok(res?.created, 'enqueue should create the run');
      return res.id;
    },
    drain: async (b, now, fn, queues = [Q]) => {
      const ran: Reservation[] = [];
      for (;;) {
        const { runs } = await b.reserve({ workerId: 'w', queues, max: 100, leaseMs: LEASE, now });
        if (runs.length === 0) return ran;
        ran.push(...runs);
        const settled = await b.settle(
          'w',
          runs.map((r) => ({ id: r.id, attempt: r.attempt, outcome: 'succeeded' as const, result: fn(r), retentionMs: RETAIN })),
          now,
        );
        assert.deepStrictEqual(
          settled,
          runs.map(() => 'ok'),
        );
      }
    },
  };
}
