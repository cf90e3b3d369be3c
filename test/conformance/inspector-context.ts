/**
 * What every section of the BrokerInspector conformance suite shares (see `inspector.ts`): the
 * inspector's methods, run and worker builders, the stats helpers spelled out from the contract,
 * and `inspectorContext`, which opens brokers for a test and closes them after it.
 */
import assert from 'node:assert/strict';
import {
  type Broker,
  type BrokerInspector,
  type BrokerOptions,
  LATENCY_BUCKETS_MS,
  type MinuteStats,
  type NewRun,
  type RunFilter,
  type RunPage,
  type RunRecord,
  type WorkerInfo,
} from '../../src/broker/types.ts';
import { newRunId } from '../../src/core/ids.ts';
import { type ConformanceOptions, type MakeBroker, missingHook, type Need, testNeeding, testResources } from './context.ts';
import { Peer } from './peer-host.ts';

export type Inspectable = Broker & BrokerInspector;

export const INSPECTOR_METHODS: readonly (keyof BrokerInspector)[] = [
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
  'flowCounts',
  'flowKeys',
];

/** As in context.ts: far above a test's duration, on a loaded machine too. */
export const TEST_TIMEOUT_MS = 60_000;
/** Safety net for wake-ups: far above what any broker needs, loaded machine included. */
export const NOTIFY_TIMEOUT_MS = 15_000;

export const MINUTE = 60_000;
export const HOUR = 60 * MINUTE;
export const LEASE = 30_000;
export const RETAIN = 3_600_000;
export const T1 = 'inspect.one';
export const T2 = 'inspect.two';

let inputSeq = 0;

/** A run to enqueue, due at `now` unless `over.runAt` says otherwise. Ids are made in call order, so they sort in enqueue order. */
export function newRun(queue: string, now: number, over: Partial<NewRun> = {}): NewRun {
  inputSeq++;
  return { id: newRunId(queue), task: T1, queue, input: JSON.stringify({ seq: inputSeq }), priority: 0, runAt: now, ...over };
}

export function ids(runs: readonly { id: string }[]): string[] {
  return runs.map((r) => r.id);
}

export function errorText(message: string): string {
  return JSON.stringify({ name: 'Error', message });
}

/** A histogram with the given counts by bucket index, zeros elsewhere. */
export function hist(counts: Record<number, number> = {}): number[] {
  const h = new Array<number>(LATENCY_BUCKETS_MS.length + 1).fill(0);
  for (const [i, n] of Object.entries(counts)) h[Number(i)] = n;
  return h;
}

/** The index of the bucket that holds `ms`, spelled out from the contract (not from any broker). */
export function bucket(ms: number): number {
  const i = LATENCY_BUCKETS_MS.findIndex((bound) => Math.max(0, ms) <= bound);
  return i === -1 ? LATENCY_BUCKETS_MS.length : i;
}

export function minuteOf(t: number): number {
  return Math.floor(t / MINUTE) * MINUTE;
}

export function minuteStats(minute: number, over: Partial<MinuteStats> = {}): MinuteStats {
  return { minute, enqueued: 0, succeeded: 0, failed: 0, retried: 0, wait: hist(), run: hist(), ...over };
}

/** The contract lets a broker leave out minutes with nothing counted (or list them as zeros): compare without them. */
export function counted(minutes: readonly MinuteStats[] | undefined): MinuteStats[] {
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
export function sumHist(hs: readonly number[][]): number[] {
  const out = hist();
  for (const h of hs) for (let i = 0; i < out.length; i++) out[i]! += h[i] ?? 0;
  return out;
}

export function filterLabel(f: Omit<RunFilter, 'limit' | 'cursor'>): string {
  return JSON.stringify(f);
}

/** The hooks and documented differences of `ConformanceOptions` that the inspector suite uses. */
export type InspectorOptions = Pick<ConformanceOptions, 'connection' | 'peerIn' | 'differences'>;

/** What a section gets: brokers to open (each checked to implement every inspector method) and the suite's helpers. */
export interface InspectorContext {
  readonly name: string;
  readonly options: InspectorOptions;
  /** A broker on fresh storage, closed after the test. */
  open(opts?: BrokerOptions): Promise<Inspectable>;
  /** Another instance on the storage of `b` (the test must be declared with `needs: 'sameStorage'`). */
  share(b: Broker, opts?: BrokerOptions): Promise<Inspectable>;
  /**
   * The others that read the storage of `b`: another instance in this process and, unless the broker
   * documents that no peer can open it, a peer (`peerOf`: a broker in a child process or a worker
   * thread, answering the same methods by messages). The test must be declared with `needs: 'sameStorage'`.
   */
  shares(b: Broker): Promise<{ label: string; other: Inspectable }[]>;
  /** A broker on the storage of `b`, in a child process or a worker thread (`peerIn`; the test must be declared with `needs: 'peer'`). */
  peerOf(b: Broker): Promise<Inspectable>;
  /** An AbortController aborted after the test. */
  controller(): AbortController;
  /** A test, with the suite's timeout; skipped, naming the difference, when the broker documents one for `needs`. */
  test(title: string, fn: () => Promise<void>, needs?: Need): void;
  getRun(b: Broker, id: string): Promise<RunRecord>;
  enqueueOne(b: Broker, now: number, queue: string, over?: Partial<NewRun>): Promise<string>;
  reserve(b: Broker, queues: string[], now: number, max?: number, leaseMs?: number, workerId?: string): ReturnType<Broker['reserve']>;
  /** Enqueues and fails runs (one reserve per queue, so that exactly these runs fail). */
  failedRuns(b: Broker, now: number, runs: NewRun[]): Promise<string[]>;
  /**
   * Pages through `filter` with `limit` and returns every run seen. Checks on the way: no page
   * over `limit`, every page but the last exactly `limit` runs, `next` null exactly at the end,
   * no run twice.
   */
  listAll(b: Inspectable, filter: Omit<RunFilter, 'limit' | 'cursor'>, limit: number): Promise<RunRecord[]>;
  worker(id: string, over?: Partial<WorkerInfo>): WorkerInfo;
}

/**
 * The context of one broker's run of the inspector suite; call inside its `describe`. Registers an
 * `afterEach` that aborts the controllers and closes every broker and peer process the test opened.
 */
export function inspectorContext(name: string, makeBroker: MakeBroker, options: InspectorOptions = {}): InspectorContext {
  const res = testResources(name);

  const asInspector = (b: Broker): Inspectable => {
    const missing = INSPECTOR_METHODS.filter((m) => typeof (b as Partial<Inspectable>)[m] !== 'function');
    assert.deepStrictEqual(missing, [], `the ${name} broker should implement every BrokerInspector method`);
    return b as Inspectable;
  };

  const share = async (b: Broker, opts?: BrokerOptions): Promise<Inspectable> => {
    return asInspector(res.track(await makeBroker({ ...opts, sameStorageAs: b })));
  };

  const peerOf = async (b: Broker): Promise<Inspectable> => {
    assert.ok(options.connection, missingHook(name, 'peer'));
    const peer = res.trackPeer(await Peer.start(options.connection(b), options.peerIn ?? 'process', INSPECTOR_METHODS));
    return peer.broker as unknown as Inspectable;
  };

  const getRun = async (b: Broker, id: string): Promise<RunRecord> => {
    const rec = await b.getRun(id);
    assert.ok(rec, `getRun(${id}) should find the run`);
    return rec;
  };

  const reserve = (b: Broker, queues: string[], now: number, max = 1000, leaseMs = LEASE, workerId = 'w1') =>
    b.reserve({ workerId, queues, max, leaseMs, now });

  return {
    name,
    options,
    open: async (opts) => asInspector(res.track(await makeBroker(opts))),
    share,
    shares: async (b) => {
      const out = [{ label: 'another instance', other: await share(b) }];
      if (!options.differences?.peer) out.push({ label: `another ${options.peerIn ?? 'process'}`, other: await peerOf(b) });
      return out;
    },
    peerOf,
    controller: res.controller,
    test: testNeeding(options),
    getRun,
    enqueueOne: async (b, now, queue, over = {}) => {
      const run = newRun(queue, now, over);
      const [res] = await b.enqueue([run], now);
      assert.ok(res?.created, 'enqueue should create the run');
      return res.id;
    },
    reserve,
    failedRuns: async (b, now, runs) => {
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
    },
    listAll: async (b, filter, limit) => {
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
    },
    worker: (id, over = {}) => ({
      id,
      host: `host-${id}`,
      pid: 4242,
      queues: ['qa', 'qb'],
      concurrency: 8,
      active: 3,
      startedAt: 1_700_000_000_000,
      ...over,
    }),
  };
}
