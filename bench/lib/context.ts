/** What every scenario gets: the settings of this run, the benchmark's Redis, the peers, and where results go. */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { type Child, forkNode, waitReady } from './proc.ts';
import type { BenchRedis } from './redis-server.ts';
import { type Figure, failed, figure } from './stats.ts';

export type PeerId = 'errand-redis' | 'errand-sqlite' | 'bullmq' | 'bullmq-autopipe';

export interface Sizes {
  rounds: number;
  enqueueSerial: number;
  enqueueConcurrent: number;
  enqueueBatch: number;
  batchSize: number;
  processC1: number;
  processMany: number;
  latencyDurationMs: number;
  latencyWarmupMs: number;
  latencyRates: number[];
  httpDurationS: number;
  httpConnections: number;
  /** Users posted per round of the emails/s figure, the same for every service. */
  emails: number;
  /** Worker concurrency of every service in the emails/s figure (Celery: prefork processes). */
  serviceConcurrency: number;
  emailTimeoutMs: number;
  memoryRuns: number;
  rssRuns: number;
  rssBacklog: number;
  scaleRuns: number;
  scaleProcesses: number[];
  scaleConcurrency: number;
  /** Fan-out / fan-in (the flow scenario): flows of `flowChildren` children and one parent each, and one flow of `flowFanIn` children. */
  flows: number;
  flowChildren: number;
  flowFanIn: number;
  /** The limits scenario: runs per drain at concurrency 50, keys of the per-key limits, the global rate (starts/s) and runs per rate drain. */
  limitsRuns: number;
  limitsKeys: number;
  limitsRate: number;
  limitsRateRuns: number;
}

export const FULL: Sizes = {
  rounds: 5,
  enqueueSerial: 5_000,
  enqueueConcurrent: 10_000,
  enqueueBatch: 50_000,
  batchSize: 1_000,
  processC1: 2_000,
  processMany: 20_000,
  latencyDurationMs: 5_000,
  latencyWarmupMs: 1_000,
  latencyRates: [1_000, 5_000],
  httpDurationS: 5,
  httpConnections: 50,
  emails: 2_000,
  serviceConcurrency: 10,
  emailTimeoutMs: 600_000,
  memoryRuns: 50_000,
  rssRuns: 1_000_000,
  rssBacklog: 20_000,
  scaleRuns: 20_000,
  scaleProcesses: [1, 2, 4],
  scaleConcurrency: 50,
  flows: 100,
  flowChildren: 100,
  flowFanIn: 5_000,
  limitsRuns: 20_000,
  limitsKeys: 1_000,
  limitsRate: 2_000,
  limitsRateRuns: 10_000,
};

export const QUICK: Sizes = {
  rounds: 3,
  enqueueSerial: 300,
  enqueueConcurrent: 10_000,
  enqueueBatch: 5_000,
  batchSize: 1_000,
  processC1: 300,
  processMany: 2_000,
  latencyDurationMs: 800,
  latencyWarmupMs: 200,
  latencyRates: [1_000, 5_000],
  httpDurationS: 1,
  httpConnections: 50,
  emails: 300,
  serviceConcurrency: 10,
  emailTimeoutMs: 120_000,
  memoryRuns: 5_000,
  rssRuns: 20_000,
  rssBacklog: 5_000,
  scaleRuns: 2_000,
  scaleProcesses: [1, 2, 4],
  scaleConcurrency: 50,
  flows: 10,
  flowChildren: 50,
  flowFanIn: 1_000,
  limitsRuns: 2_000,
  limitsKeys: 1_000,
  limitsRate: 500,
  limitsRateRuns: 1_500,
};

export interface PeerDef {
  id: PeerId;
  label: string;
  /** Which child driver runs it. */
  driver: Driver;
  /** A broker URL for a fresh session on empty storage. */
  freshUrl(): Promise<string>;
  /** Only in these scenarios (absent: in all). */
  scenarios?: readonly string[];
}

/** `bullmq-autopipe`: BullMQ whose Queue connection has ioredis `enableAutoPipelining` on. */
export type Driver = 'errand' | 'bullmq' | 'bullmq-autopipe';

export interface ScenarioResult {
  title: string;
  /** metric -> peer -> figure */
  metrics: Record<string, Record<string, Figure>>;
  /**
   * CPU time per run, in µs, of the peer's process(es) and of redis-server, for the same metrics:
   * "<metric>" -> "<peer> client" / "<peer> redis" -> figure. Far less sensitive to a busy
   * machine than throughput: it says what each run costs, not how fast the machine delivered it.
   */
  cpu?: Record<string, Record<string, Figure>>;
  notes: string[];
  /** Anything else worth keeping in the raw JSON (samples, counters). */
  raw?: Record<string, unknown>;
  seconds?: number;
}

export interface Ctx {
  root: string;
  tmp: string;
  quick: boolean;
  sizes: Sizes;
  redis: BenchRedis;
  peers: PeerDef[];
  /** Services of the service scenario to run (null: all). */
  services: string[] | null;
  log(msg: string): void;
  /** Forks a benchmark child for a peer driver and waits until it is ready. */
  child(name: string, driver: Driver, execArgv?: string[]): Promise<Child>;
}

export function makePeers(redis: BenchRedis, tmp: string, wanted: readonly string[] | null): PeerDef[] {
  let seq = 0;
  let lastSqlite: string | undefined;
  const all: PeerDef[] = [
    {
      id: 'errand-redis',
      label: 'Errand (Redis)',
      driver: 'errand',
      async freshUrl() {
        await redis.flush();
        return redis.url;
      },
    },
    {
      id: 'errand-sqlite',
      label: 'Errand (SQLite)',
      driver: 'errand',
      async freshUrl() {
        if (lastSqlite) for (const suffix of ['', '-wal', '-shm']) rmSync(lastSqlite + suffix, { force: true });
        lastSqlite = join(tmp, `sqlite-${++seq}.db`);
        return `sqlite:${lastSqlite}`;
      },
    },
    {
      id: 'bullmq',
      label: 'BullMQ',
      driver: 'bullmq',
      async freshUrl() {
        await redis.flush();
        return redis.url;
      },
    },
    {
      // Where a producer's concurrent calls matter (Errand merges them), BullMQ at its best too:
      // ioredis auto-pipelining on its Queue connection.
      id: 'bullmq-autopipe',
      label: 'BullMQ (auto-pipelining)',
      driver: 'bullmq-autopipe',
      scenarios: ['enqueue', 'latency'],
      async freshUrl() {
        await redis.flush();
        return redis.url;
      },
    },
  ];
  return wanted ? all.filter((p) => wanted.includes(p.id)) : all;
}

export async function forkPeerChild(root: string, name: string, driver: Driver, logLevel: string, execArgv: string[] = []): Promise<Child> {
  const c = forkNode(
    name,
    join(root, 'bench/peers/child.ts'),
    [],
    { BENCH_PEER: driver, LOG_LEVEL: logLevel, ERRAND_PREFIX: 'errand' },
    undefined,
    execArgv,
  );
  await waitReady(c, 30_000);
  return c;
}

/** Collects per-round values for metric x peer, then turns them into figures. */
export class Collector {
  readonly #values = new Map<string, Map<string, number[]>>();
  readonly #errors = new Map<string, string>();
  readonly #extra = new Map<string, Record<string, unknown>>();
  readonly units = new Map<string, string>();

  add(metric: string, peer: string, value: number, unit: string): void {
    this.units.set(metric, unit);
    let m = this.#values.get(metric);
    if (!m) this.#values.set(metric, (m = new Map()));
    let v = m.get(peer);
    if (!v) m.set(peer, (v = []));
    v.push(value);
  }

  fail(metric: string, peer: string, error: string, unit: string): void {
    this.units.set(metric, unit);
    if (!this.#values.get(metric)?.get(peer)?.length) {
      let m = this.#values.get(metric);
      if (!m) this.#values.set(metric, (m = new Map()));
      if (!m.has(peer)) m.set(peer, []);
    }
    this.#errors.set(`${metric}\0${peer}`, error);
  }

  extra(metric: string, peer: string, data: Record<string, unknown>): void {
    const key = `${metric}\0${peer}`;
    this.#extra.set(key, { ...this.#extra.get(key), ...data });
  }

  figures(): Record<string, Record<string, Figure>> {
    const out: Record<string, Record<string, Figure>> = {};
    for (const [metric, peers] of this.#values) {
      out[metric] = {};
      for (const [peer, values] of peers) {
        const key = `${metric}\0${peer}`;
        const unit = this.units.get(metric) ?? '';
        const err = this.#errors.get(key);
        let f: Figure;
        if (values.length === 0) f = failed(unit, err ?? 'not measured');
        else {
          f = figure(values, unit, this.#extra.get(key));
          if (err) f.extra = { ...f.extra, partialError: err };
        }
        out[metric]![peer] = f;
      }
    }
    return out;
  }
}

export function errMessage(err: unknown): string {
  const m = err instanceof Error ? err.message : String(err);
  return m.split('\n')[0]!.slice(0, 300);
}
