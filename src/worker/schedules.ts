/**
 * Leaderless firing: every worker fires the schedules of the queues it serves. It asks the broker
 * for the schedules due within the lead time, plans each fire from the stored definition
 * (`planFire`), and calls the broker's atomic fire step, which applies only while the stored next
 * fire time is still the one it read. So however many workers do this at once, and however far
 * apart their clocks are, each nominal time is fired once: the losers get `stale` and move on. It
 * then sleeps until the earliest next fire time minus the lead time (or `pollMs`, so that schedules
 * created elsewhere are seen), or until stopped.
 *
 * Runs are created `leadMs` ahead, as scheduled runs at their nominal time: the broker's delayed-run
 * path releases them then, so a run starts within about a second of its time under normal load.
 */
import type { Logger } from 'pino';
import type { Broker, FlowSpec, NewRun, ScheduleDefinition, ScheduleMark, ScheduleRecord } from '../broker/types.ts';
import { newRunId } from '../core/ids.ts';
import { FIRE_KEY_TTL_MS } from '../schedule/manage.ts';
import { expiryOf, fireKey, limitsRecorded, planFire, readStored, type StoredSchedule } from '../schedule/plan.ts';
import { backOffMs, sleep } from './leases.ts';

/** How far ahead of its nominal time a run is created. */
export const SCHEDULE_LEAD_MS = 2000;
/** Longest sleep between two looks at the due schedules. */
export const SCHEDULE_POLL_MS = 5000;
/** Schedules fired per look (more are fired on the next look, at once). */
const BATCH = 100;

export interface FireEvent {
  schedule: string;
  queue: string;
  /** Runs created (0 when another worker fired it, or the policy created none). */
  created: number;
  missed: number;
  /** The nominal times of the runs created. */
  times: number[];
}

export interface ScheduleFirerOptions {
  broker: Broker;
  queues: readonly string[];
  logger: Logger;
  leadMs?: number;
  pollMs?: number;
  /** Definitions to upsert first (the app's declared schedules; those of other queues are left out). */
  declared?: readonly ScheduleDefinition[];
  /** Called after each fire step this worker applied. */
  onFire?: (event: FireEvent) => void;
  /**
   * The flow spec of a run of `task` with stored input `input` (docs/flow-control.md), as enqueue
   * computes it: a fired run is under its task's limits. Absent, or undefined: no limits. Null:
   * this worker does not define the task; a schedule recorded as having limits then does not fire
   * here (a worker that defines the task fires it), so that no run escapes its limits.
   */
  flowOf?: (task: string, input: string) => FlowSpec | undefined | null;
}

export class ScheduleFirer {
  readonly #o: ScheduleFirerOptions;
  readonly #stop = new AbortController();
  /** Compiled definitions by hash (a bad stored definition: its error, logged once). */
  readonly #compiled = new Map<string, StoredSchedule | Error>();
  /** Schedules of tasks with limits this worker does not define (logged once each). */
  readonly #unknown = new Set<string>();
  #done: Promise<void> | undefined;

  constructor(options: ScheduleFirerOptions) {
    this.#o = options;
  }

  /**
   * Upserts the declared definitions (a newer one stored by another deploy stays), then fires in
   * the background. Resolves once the declarations are stored, or at the first failure (the broker
   * unreachable): they are then retried in the background before firing starts.
   */
  async start(): Promise<void> {
    if (this.#done) return;
    const first = await this.#declare();
    this.#done = (async () => {
      for (let failures = 1; !first && !this.#stop.signal.aborted; failures++) {
        await sleep(backOffMs(failures), this.#stop.signal);
        if (await this.#declare()) break;
      }
      await this.#loop();
    })();
  }

  async #declare(): Promise<boolean> {
    const { broker, logger } = this.#o;
    try {
      for (const d of (this.#o.declared ?? []).filter((x) => this.#o.queues.includes(x.queue))) {
        const r = await broker.upsertSchedule(d, Date.now());
        if (r.outcome === 'older') {
          logger.warn(
            { schedule: d.id, queue: d.queue, version: d.version, stored: r.schedule.version },
            'a newer definition of this schedule is stored: it stays',
          );
        }
      }
      return true;
    } catch (err) {
      logger.warn({ err }, 'declaring schedules failed; retrying');
      return false;
    }
  }

  async stop(): Promise<void> {
    this.#stop.abort();
    await this.#done;
  }

  async #loop(): Promise<void> {
    const { broker, queues, logger } = this.#o;
    const lead = this.#o.leadMs ?? SCHEDULE_LEAD_MS;
    const poll = this.#o.pollMs ?? SCHEDULE_POLL_MS;
    let failures = 0;
    while (!this.#stop.signal.aborted) {
      let wait: number;
      try {
        const now = Date.now();
        const due = await broker.dueSchedules(queues, now + lead, BATCH);
        let moved = false;
        for (const s of due.schedules) {
          if (this.#stop.signal.aborted) return;
          // Fired here or by another worker: either way the schedule's next time moved.
          if ((await this.fire(s, Date.now())) !== 'skipped') moved = true;
        }
        failures = 0;
        // Something moved: look again at once (the next time may be due already); a schedule that
        // cannot fire (an unreadable definition) is not looked at in a loop.
        if (moved) continue;
        wait = due.nextAt === null ? poll : Math.min(poll, Math.max(0, due.nextAt - lead - Date.now()));
        if (due.schedules.length) wait = Math.max(wait, Math.min(poll, 1000));
      } catch (err) {
        failures++;
        wait = backOffMs(failures);
        if (failures === 1 || failures % 20 === 0) logger.warn({ err }, 'firing schedules failed; retrying');
      }
      await sleep(wait, this.#stop.signal);
    }
  }

  #read(s: ScheduleRecord): StoredSchedule | undefined {
    let c = this.#compiled.get(s.hash);
    if (!c) {
      try {
        c = readStored(s);
      } catch (err) {
        c = err as Error;
        this.#o.logger.error({ err, schedule: s.id, queue: s.queue }, 'a stored schedule cannot be read: it does not fire');
      }
      if (this.#compiled.size > 10_000) this.#compiled.clear();
      this.#compiled.set(s.hash, c);
    }
    return c instanceof Error ? undefined : c;
  }

  /**
   * One fire step of a due schedule, planned at `now`: `fired` when this call applied it, `stale`
   * when another worker had (or the schedule changed meanwhile), `skipped` when it cannot fire.
   */
  async fire(s: ScheduleRecord, now: number): Promise<'fired' | 'stale' | 'skipped'> {
    const { broker } = this.#o;
    const stored = this.#read(s);
    if (!stored || s.next === null || s.paused) return 'skipped';
    const plan = planFire(stored, s.next, now);
    const times = plan.runs;
    const flow = times.length ? this.#o.flowOf?.(s.task, s.input) : undefined;
    if (flow === null && limitsRecorded(s)) {
      if (!this.#unknown.has(s.id)) {
        this.#unknown.add(s.id);
        this.#o.logger.warn(
          { schedule: s.id, queue: s.queue, task: s.task },
          'a schedule of a task with limits that this worker does not define: it fires from a worker that defines the task',
        );
      }
      return 'skipped';
    }
    const runs: NewRun[] = times.map(({ at, backfilled }) => ({
      ...(flow ? { flow } : {}),
      id: newRunId(s.queue, now),
      task: s.task,
      queue: s.queue,
      input: s.input,
      priority: stored.policies.priority,
      runAt: at,
      idempotencyKey: fireKey(s.id, at),
      idempotencyTtl: FIRE_KEY_TTL_MS,
      schedule: withExpiry({ id: s.id, at, backfilled }, expiryOf(stored, at, backfilled ? Math.max(at, now) : at)),
    }));
    // Overlap (the previous run still due or running) is decided by the broker inside the fire step,
    // so two workers can never both see "no overlap" (FireRequest.overlap).
    const overlap = stored.policies.overlap;
    const out = await broker.fireSchedule({
      queue: s.queue,
      id: s.id,
      hash: s.hash,
      expect: s.next,
      next: plan.next,
      runs,
      missed: plan.missed,
      now,
      ...(overlap !== 'allow' ? { overlap } : {}),
    });
    if (out.outcome === 'stale') return 'stale';
    // buffered: no fire yet; the schedule stays due and is looked at again (about every second)
    // until the previous run ends, then fires once for the latest time.
    if (out.outcome !== 'fired') return 'skipped';
    // cancel: the previous run is cancelled once this fire is stored (a fire that loses the
    // compare-and-set, or finds the schedule paused or gone, leaves it running).
    if (out.overlapped !== undefined) await broker.cancel(out.overlapped, now);
    const created = out.runs.filter((r) => r.created).length;
    // The times the policy kept: all of them, none (skip), or the last (buffer).
    const kept = out.runs.length === times.length ? times : times.slice(times.length - out.runs.length);
    this.#o.onFire?.({ schedule: s.id, queue: s.queue, created, missed: out.missed, times: kept.map((t) => t.at) });
    return 'fired';
  }
}

function withExpiry(mark: ScheduleMark, expiresAt: number | undefined): ScheduleMark {
  if (expiresAt !== undefined) mark.expiresAt = expiresAt;
  return mark;
}
