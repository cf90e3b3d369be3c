/**
 * The seed's service as deployed, for the outage tests: an API process and two worker processes
 * (`test/faults/fixtures/service.ts`, i.e. `app/main.ts` with a faster sweep) on Redis, users in
 * DATA_DIR, emails to a real SMTP sink; a steady `POST /users/` load; a probe of the library's own
 * routes (`GET /readyz`, `POST /tasks/send_welcome_email`) every 200 ms.
 *
 * `verify()` waits until every accepted user has its email and the queue is idle, then checks the
 * outcome that every outage test wants:
 * - every answer is 201, or 503 with Retry-After: never a 500, never a dropped connection;
 * - every user the API accepted (201) gets exactly one email, with or without a run id in the answer
 *   (one more copy of the same message only for a run whose history records a lost lease: a worker
 *   stalled past its lease on a loaded machine, at-least-once);
 * - an address whose request was refused gets no email;
 * - the probe's answers are 200/202, or 503 with Retry-After.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createErrand, type Errand } from '../../src/index.ts';
import { quietLogger } from '../fixtures/brokers.ts';
import { waitFor } from '../helpers.ts';
import {
  type Answer,
  connected,
  freePort,
  type Proc,
  type Procs,
  ROOT,
  START_LIMIT_MS,
  startSmtpSink,
  type SmtpSink,
  UserLoad,
  waitHttp,
} from './harness.ts';

export const SERVICE = join(ROOT, 'test/faults/fixtures/service.ts');

export interface ProbeAnswer {
  route: 'readyz' | 'enqueue';
  status: number;
  retryAfter: string | null;
  at: number;
}

export class ServiceRig {
  readonly procs: Procs;
  readonly prefix: string;
  readonly dataDir: string;
  /** The Redis URL the service uses (a proxy's, or the server's). */
  readonly serviceRedisUrl: string;
  /** The Redis URL the test uses to read the queue (the server's, never through the proxy). */
  readonly directRedisUrl: string;
  smtp!: SmtpSink;
  api!: Proc;
  workers: Proc[] = [];
  base = '';
  load: UserLoad | undefined;
  readonly probes: ProbeAnswer[] = [];
  #probing: Promise<void> | undefined;
  #stopProbe = false;
  #reader: Errand | undefined;

  /** The entry point: the fixture (app/main.ts with a faster sweep) unless told otherwise. */
  readonly main: string;
  port = 0;

  constructor(procs: Procs, opts: { prefix: string; dataDir: string; serviceRedisUrl: string; directRedisUrl: string; main?: string }) {
    this.procs = procs;
    this.main = opts.main ?? SERVICE;
    this.prefix = opts.prefix;
    this.dataDir = opts.dataDir;
    this.serviceRedisUrl = opts.serviceRedisUrl;
    this.directRedisUrl = opts.directRedisUrl;
  }

  env(port: number): Record<string, string> {
    return {
      PORT: String(port),
      REDIS_URL: this.serviceRedisUrl,
      DATA_DIR: this.dataDir,
      SMTP_URL: this.smtp.url,
      ERRAND_PREFIX: this.prefix,
      WORKER_CONCURRENCY: '10',
      FAULT_SWEEP_EVERY_MS: '1000',
      FAULT_SWEEP_GRACE_MS: '2000',
    };
  }

  async start(): Promise<void> {
    this.smtp = await startSmtpSink();
    this.port = await freePort();
    this.base = `http://127.0.0.1:${this.port}`;
    this.api = this.procs.spawn('api', [this.main, 'api'], this.env(this.port));
    this.workers = [0, 1].map((i) => this.procs.spawn(`worker-${i}`, [this.main, 'worker'], this.env(this.port)));
    await waitHttp(this.base, this.api, '/readyz');
    this.#reader = createErrand({ broker: this.directRedisUrl, prefix: this.prefix, logger: quietLogger });
    await connected(this.#reader);
  }

  /** Starts the API again (same port), waits until it answers. */
  async restartApi(): Promise<void> {
    this.api = this.procs.spawn('api-again', [this.main, 'api'], this.env(this.port));
    await waitHttp(this.base, this.api, '/readyz');
  }

  restartWorker(i: number): void {
    this.workers[i] = this.procs.spawn(`worker-${i}-again`, [this.main, 'worker'], this.env(this.port));
  }

  /** Starts the load and the probe; resolves once `accepted` users got their email (the flow is up). */
  async startLoad(tag: string, accepted = 20): Promise<void> {
    this.load = new UserLoad(this.base, tag, { concurrency: 4, pauseMs: 20 });
    this.#probing = this.#probe();
    await waitFor(() => this.smtp.total() >= accepted, {
      timeoutMs: START_LIMIT_MS,
      intervalMs: 50,
      message: `${accepted} emails before the fault`,
    });
  }

  async #probe(): Promise<void> {
    const first = await waitFor(() => this.load!.answers.find((a) => a.status === 201), { timeoutMs: START_LIMIT_MS });
    const body = JSON.stringify({ userId: first.userId, email: first.email, username: 'probe' });
    while (!this.#stopProbe) {
      const at = Date.now();
      const failed = (route: ProbeAnswer['route']) => () => ({ route, status: 0, retryAfter: null, at });
      const calls: Promise<ProbeAnswer>[] = [
        fetch(`${this.base}/readyz`, { signal: AbortSignal.timeout(15_000) }).then(async (r) => {
          await r.arrayBuffer();
          return { route: 'readyz' as const, status: r.status, retryAfter: r.headers.get('retry-after'), at };
        }, failed('readyz')),
        // The first user's email again, through the library's route: the idempotency key collapses
        // it into that user's run (202, created false), or 503 while the broker is unreachable.
        fetch(`${this.base}/tasks/send_welcome_email`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body,
          signal: AbortSignal.timeout(15_000),
        }).then(async (r) => {
          await r.arrayBuffer();
          return { route: 'enqueue' as const, status: r.status, retryAfter: r.headers.get('retry-after'), at };
        }, failed('enqueue')),
      ];
      this.probes.push(...(await Promise.all(calls)));
      await sleep(200);
    }
  }

  async stopLoad(): Promise<void> {
    this.#stopProbe = true;
    await this.load?.stop();
    await this.#probing?.catch(() => undefined);
  }

  /** Runs of the email queue, read directly from Redis. */
  async counts() {
    const broker = await this.#reader!.broker();
    return (await broker.counts(['emails'])).emails!;
  }

  /**
   * Waits for every accepted user's email and an idle queue, then asserts the outcome. `faultEnd`:
   * when the last fault ended (for the figures). Returns figures for the report.
   */
  async verify(faultEnd: number): Promise<Record<string, unknown>> {
    const answers = this.load!.answers;
    const accepted = answers.filter((a) => a.status === 201);
    const missing = () => accepted.filter((a) => !this.smtp.perRecipient.has(a.email));
    await waitFor(() => missing().length === 0, { timeoutMs: START_LIMIT_MS, intervalMs: 100 }).catch((err: Error) => {
      throw new Error(`${missing().length} of ${accepted.length} accepted users never got their email: ${err.message}`);
    });
    await waitFor(
      async () => {
        const c = await this.counts();
        return c.queued + c.scheduled + c.active === 0;
      },
      { timeoutMs: START_LIMIT_MS, intervalMs: 100, message: 'the email queue to be idle' },
    );

    const bad = answers.filter((a) => a.status !== 201 && a.status !== 503);
    assert.deepEqual(
      bad.slice(0, 3).map((a) => ({ status: a.status, error: a.error })),
      [],
      `${bad.length} answer(s) neither 201 nor 503 (${JSON.stringify(this.load!.summary())})`,
    );
    for (const a of answers.filter((x) => x.status === 503)) assert.ok(a.retryAfter, '503 carries Retry-After');
    const refused = answers.filter((a) => a.status !== 201);
    for (const a of refused) assert.equal(this.smtp.perRecipient.get(a.email) ?? 0, 0, `no email for the refused request of ${a.email}`);
    const copies = await this.#copiesAfterLeaseLoss(accepted);
    assert.equal(this.smtp.total(), accepted.length + copies, 'one email per accepted user, none other');

    const probeBad = this.probes.filter((p) => !(p.status === 200 || p.status === 202 || (p.status === 503 && p.retryAfter)));
    assert.deepEqual(probeBad.slice(0, 3), [], 'the library routes answer 200/202, or 503 with Retry-After');
    for (const w of [this.api, ...this.workers]) assert.ok(w.alive, `${w.name} still running (reconnected by itself):\n${w.tail()}`);

    const afterFault = (t: number) => t >= faultEnd;
    const firstEnqueuedAfter = answers.filter((a) => a.status === 201 && a.runId && afterFault(a.at)).map((a) => a.doneAt);
    const firstEmailAfter = this.smtp.times.filter(afterFault);
    const probeOkAfter = this.probes.filter((p) => p.route === 'enqueue' && p.status === 202 && afterFault(p.at)).map((p) => p.at);
    return {
      requests: answers.length,
      accepted: accepted.length,
      acceptedWithoutRun: accepted.filter((a) => a.runId === null).length,
      refused503: answers.filter((a) => a.status === 503).length,
      status500: 0,
      emails: this.smtp.total(),
      duplicates: copies,
      lost: 0,
      probe503: this.probes.filter((p) => p.status === 503).length,
      apiEnqueuesAgainAfterMs: firstEnqueuedAfter.length ? Math.min(...firstEnqueuedAfter) - faultEnd : null,
      libraryRouteOkAfterMs: probeOkAfter.length ? Math.min(...probeOkAfter) - faultEnd : null,
      firstEmailAfterMs: firstEmailAfter.length ? firstEmailAfter[0]! - faultEnd : null,
      allEmailsOutAfterMs: this.smtp.times.at(-1)! - faultEnd,
      // The longest any accepted user waited for the email, from the API's answer.
      slowestEmailMs: Math.max(...accepted.map((a) => this.#firstDelivery(a.email) - a.doneAt)),
    };
  }

  /**
   * One email per accepted user; a second copy, of the same message (one Message-ID), only for a run
   * whose lease expired while its attempt was sending (a worker's event loop stalled past its lease
   * on a loaded machine: delivery is at least once, the window app/tasks.ts describes), at most one
   * per lease loss the run records. Returns the number of such copies.
   */
  async #copiesAfterLeaseLoss(accepted: Answer[]): Promise<number> {
    const wrong = accepted.filter((a) => (this.smtp.perRecipient.get(a.email) ?? 0) !== 1);
    let copies = 0;
    for (const a of wrong) {
      const n = this.smtp.perRecipient.get(a.email) ?? 0;
      assert.ok(n > 1, `accepted user ${a.email} without an email`);
      assert.equal(this.smtp.messageIds.get(a.email)?.size, 1, `the ${n} emails to ${a.email} are one message (one Message-ID)`);
      const user = (await (await fetch(`${this.base}/users/${a.userId}`)).json()) as { welcome_email: { run_id: string } };
      const run = await this.#reader!.getRun(user.welcome_email.run_id);
      assert.ok(run.leaseLosses >= n - 1, `${n} emails to ${a.email}, but its run ${run.id} lost its lease ${run.leaseLosses} time(s)`);
      copies += n - 1;
    }
    return copies;
  }

  #firstDelivery(address: string): number {
    return this.smtp.deliveries.find((d) => d.to === address)?.at ?? Number.NaN;
  }

  async close(): Promise<void> {
    this.#stopProbe = true;
    await this.load?.stop().catch(() => undefined);
    await this.#reader?.close().catch(() => undefined);
    await this.smtp?.close().catch(() => undefined);
  }
}
