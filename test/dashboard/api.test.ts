// The dashboard's JSON API, headers, auth, event stream, /metrics and the `errand dashboard` command,
// against real brokers (no browser needed).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer as createNetServer } from 'node:net';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import Fastify, { type FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import { z } from 'zod';
import { type Broker, type BrokerInspector, LATENCY_BUCKETS_MS, type MinuteStats } from '../../src/broker/types.ts';
import type { Overview, RunDetail, RunList, Session, SignedOut, WorkerList } from '../../src/dashboard/api-types.ts';
import { metricsPlugin } from '../../src/dashboard/metrics-route.ts';
import { dashboardPlugin } from '../../src/dashboard/plugin.ts';
import { buildSeries, quantile, summarise } from '../../src/dashboard/stats.ts';
import { createErrand, type Errand, type RunHandle, type Worker } from '../../src/index.ts';
import { brokerSetup, dropRedisPrefix, quietLogger, REDIS_URL } from '../fixtures/brokers.ts';
import { tempDir, uniquePrefix, waitFor } from '../helpers.ts';
import { ensureDashboardBuilt } from './helpers.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));
const READ = 'read-token-123';
const ADMIN = 'admin-token-456';

describe('latency percentiles from histograms', () => {
  const hist = (entries: Record<number, number>) => {
    const h = new Array(LATENCY_BUCKETS_MS.length + 1).fill(0);
    for (const [i, n] of Object.entries(entries)) h[Number(i)] = n;
    return h;
  };

  test('empty histogram: no percentile', () => {
    assert.equal(quantile([], 0.5), null);
    assert.equal(quantile(hist({}), 0.99), null);
  });

  test('interpolates inside the bucket that holds the rank', () => {
    // 100 runs in the (100, 250] bucket (index 7): p50 is half way through it.
    const h = hist({ 7: 100 });
    assert.equal(quantile(h, 0.5), 175);
    assert.equal(quantile(h, 1), 250);
    // 90 fast (<= 1 ms) and 10 slow in (1000, 2500]: p50 fast, p95 in the slow bucket.
    const h2 = hist({ 0: 90, 10: 10 });
    assert.ok(quantile(h2, 0.5)! <= 1);
    const p95 = quantile(h2, 0.95)!;
    assert.ok(p95 > 1000 && p95 <= 2500, `p95 ${p95}`);
  });

  test('a quantile in the overflow bucket is reported as the last bound', () => {
    const h = hist({ [LATENCY_BUCKETS_MS.length]: 5 });
    assert.equal(quantile(h, 0.5), LATENCY_BUCKETS_MS.at(-1));
  });

  test('series: one point per minute, gaps as zeros; summary: throughput over 5 minutes, failure rate', () => {
    const now = Date.UTC(2030, 0, 1, 12, 30, 20);
    const minute = (m: number, succeeded: number, failed: number): MinuteStats => ({
      minute: Date.UTC(2030, 0, 1, 12, m),
      enqueued: succeeded + failed,
      succeeded,
      failed,
      retried: 0,
      wait: hist({ 3: succeeded + failed }),
      run: hist({ 6: succeeded + failed }),
    });
    const stats = { a: [minute(28, 10, 0), minute(30, 5, 5)], b: [minute(0, 100, 0)] };
    const s = buildSeries(stats, now - 10 * 60_000, now);
    assert.equal(s.minutes.length, 11);
    assert.equal(s.minutes.at(-1), Date.UTC(2030, 0, 1, 12, 30));
    assert.deepEqual(s.succeeded.slice(-3), [10, 0, 5]);
    assert.deepEqual(s.failed.slice(-3), [0, 0, 5]);
    assert.equal(s.waitP95.at(-2), null, 'a minute without runs has no latency');
    const sum = summarise(stats.a, now);
    assert.equal(sum.finished, 20);
    assert.equal(sum.failureRate, 0.25);
    assert.equal(sum.throughputPerMin, 20 / 5);
  });
});

for (const kind of ['sqlite', 'redis'] as const) {
  describe(`dashboard API (${kind} broker)`, () => {
    let errand: Errand;
    let worker: Worker;
    let app: FastifyInstance;
    let secured: FastifyInstance;
    const control = { failing: true };
    let failed: RunHandle;
    let succeeded: RunHandle;
    let secret: RunHandle;
    const setup = brokerSetup(kind, 'errand-dash-api');

    before(async () => {
      ensureDashboardBuilt();
      errand = setup.app();
      const ok = errand.task('ok', { input: z.object({ n: z.number() }), queue: 'work' }, async ({ n }) => n * 2);
      const flaky = errand.task('flaky', { input: z.object({}), queue: 'work', retries: { maxAttempts: 1 } }, async () => {
        if (control.failing) throw new RangeError('flaky failed');
        return 'fine';
      });
      errand.task('idle', { input: z.object({ i: z.number() }), queue: 'idle' }, async () => null);
      const login = errand.task(
        'login',
        { input: z.object({ user: z.string(), password: z.string() }), queue: 'secure', retries: { maxAttempts: 1 }, redact: ['password'] },
        async ({ user, password }) => {
          throw new Error(`bad password ${password} for ${user}`);
        },
      );
      worker = errand.worker({ queues: ['work', 'secure'], concurrency: 2 });
      await worker.start();
      succeeded = await ok.enqueue({ n: 21 });
      await succeeded.result({ timeout: 20_000 });
      failed = await flaky.enqueue({});
      await assert.rejects(failed.result({ timeout: 20_000 }));
      secret = await login.enqueue({ user: 'ada', password: 'hunter2-very-secret' });
      await assert.rejects(secret.result({ timeout: 20_000 }));
      await errand.tasks.get('idle')!.enqueueMany(Array.from({ length: 30 }, (_, i) => ({ input: { i } })));
      app = Fastify();
      await app.register(dashboardPlugin, { errand });
      await app.register(metricsPlugin, { errand });
      secured = Fastify();
      await secured.register(dashboardPlugin, { errand, auth: { read: [READ], admin: [ADMIN] } });
      await secured.register(metricsPlugin, { errand, auth: { read: [READ], admin: [ADMIN] } });
    });

    after(async () => {
      await worker?.stop({ graceMs: 500 });
      await app?.close();
      await secured?.close();
      await errand?.close();
      await setup.cleanup();
    });

    const post = (url: string, payload: unknown = {}, headers: Record<string, string> = {}) =>
      app.inject({ method: 'POST', url, payload: JSON.stringify(payload), headers: { 'content-type': 'application/json', ...headers } });

    test('session: the scope and the task names', async () => {
      const r = await app.inject('/dashboard/api/session');
      assert.equal(r.statusCode, 200);
      assert.deepEqual(r.json<Session>(), {
        authenticated: true,
        auth: false,
        scope: 'admin',
        tasks: ['flaky', 'idle', 'login', 'ok'],
        broker: kind,
      });
    });

    test('overview: each queue with counts by state, paused flag, throughput, failure rate, percentiles', async () => {
      const o = (await app.inject('/dashboard/api/overview')).json<Overview>();
      const work = o.queues.find((q) => q.name === 'work')!;
      const idle = o.queues.find((q) => q.name === 'idle')!;
      assert.equal(work.counts.succeeded, 1);
      assert.equal(work.counts.failed, 1);
      assert.equal(idle.counts.queued, 30);
      assert.equal(idle.paused, false);
      assert.equal(work.finished, 2);
      assert.equal(work.failureRate, 0.5);
      assert.ok(work.throughputPerMin > 0);
      assert.ok(work.wait.count >= 2 && work.wait.p50 !== null && work.wait.p99! >= work.wait.p50);
      assert.ok(work.run.p95 !== null);
      assert.equal(o.totals.queued, 30);
      assert.equal(o.series.minutes.length, 61);
      assert.ok(o.series.succeeded.reduce((a, b) => a + b, 0) >= 1);
      assert.equal(o.workers.alive, 1);
    });

    test('runs: newest first, every run exactly once across cursor pages, filters, total, id search', async () => {
      const seen: string[] = [];
      let cursor: string | null = '';
      let pages = 0;
      while (cursor !== null) {
        const r: RunList = (
          await app.inject(`/dashboard/api/runs?queue=idle&limit=7${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`)
        ).json();
        assert.equal(r.total, 30);
        seen.push(...r.runs.map((x) => x.id));
        cursor = r.next;
        pages++;
      }
      assert.equal(pages, 5);
      assert.equal(new Set(seen).size, 30);
      assert.deepEqual(seen, [...seen].sort().reverse(), 'newest first');

      const f = (await app.inject('/dashboard/api/runs?state=failed&queue=work')).json<RunList>();
      assert.deepEqual(
        f.runs.map((x) => x.id),
        [failed.id],
      );
      assert.equal(f.total, 1);
      assert.match(f.runs[0]!.error!, /^RangeError: flaky failed/);
      const byTask = (await app.inject('/dashboard/api/runs?task=ok')).json<RunList>();
      assert.deepEqual(
        byTask.runs.map((x) => x.id),
        [succeeded.id],
      );
      assert.equal(byTask.total, null, 'no count by task');
      const blank = await app.inject('/dashboard/api/runs?queue=&task=&state=');
      assert.equal(blank.statusCode, 200, 'blank filters mean no filter');
      const badCursor = await app.inject('/dashboard/api/runs?cursor=zzz');
      assert.equal(badCursor.statusCode, 400, "a cursor not from a previous page is the request's fault, not the broker's");
      assert.match(badCursor.json().detail, /^Invalid cursor "zzz"/);

      const one = (await app.inject(`/dashboard/api/runs?id=${succeeded.id}`)).json<RunList>();
      assert.deepEqual(
        one.runs.map((x) => x.id),
        [succeeded.id],
      );
      const none = (await app.inject(`/dashboard/api/runs?id=work.01ARZ3NDEKTSV4RRFFQ69G5FAV`)).json<RunList>();
      assert.deepEqual(none.runs, []);

      const bad = await app.inject('/dashboard/api/runs?state=done');
      assert.equal(bad.statusCode, 400);
      assert.match(bad.json().detail, /state/);
      assert.equal((await app.inject('/dashboard/api/runs?limit=0')).statusCode, 400);
      // Too big for the page and for a safe integer: the page's bound is the one named.
      const huge = await app.inject('/dashboard/api/runs?limit=1e20');
      assert.equal(huge.statusCode, 400);
      assert.equal(huge.json().detail, 'Invalid query parameter "limit": Too big: expected number to be <=200');
      assert.equal((await app.inject('/dashboard/api/runs?id=nope')).statusCode, 400);
      assert.equal((await app.inject('/dashboard/api/runs?queue=has%20space')).statusCode, 400);
    });

    test('run: input, error with stack, attempts with worker and duration, timeline', async () => {
      const d = (await app.inject(`/dashboard/api/runs/${failed.id}`)).json<RunDetail>();
      assert.equal(d.state, 'failed');
      assert.deepEqual(d.input, {});
      assert.equal(d.runError?.name, 'RangeError');
      assert.match(d.runError?.stack ?? '', /RangeError: flaky failed\n\s+at /);
      assert.equal(d.history.length, 1);
      assert.equal(d.history[0]!.worker, worker.id);
      assert.equal(d.history[0]!.outcome, 'failed');
      assert.ok(d.history[0]!.durationMs! >= 0);
      assert.deepEqual(
        d.timeline.map((e) => e.kind),
        ['enqueued', 'started', 'attempt', 'failed', 'expires'],
      );
      const s = (await app.inject(`/dashboard/api/runs/${succeeded.id}`)).json<RunDetail>();
      assert.equal(s.result, 42);
      assert.equal((await app.inject('/dashboard/api/runs/work.01ARZ3NDEKTSV4RRFFQ69G5FAV')).statusCode, 404);
      assert.equal((await app.inject('/dashboard/api/runs/not-a-run')).statusCode, 404);
    });

    test('secrets in inputs (redact paths) are shown redacted and scrubbed from errors, in the list and on the run', async () => {
      const d = (await app.inject(`/dashboard/api/runs/${secret.id}`)).json<RunDetail>();
      assert.deepEqual(d.input, { user: 'ada', password: '[redacted]' });
      const list = await app.inject('/dashboard/api/runs?task=login');
      for (const body of [JSON.stringify(d), list.body]) assert.doesNotMatch(body, /hunter2/);
      assert.match(d.runError?.message ?? '', /bad password \[redacted\] for ada/);
    });

    test('workers: id, host, pid, queues, concurrency, active, heartbeat age; silent ones lost', async () => {
      const broker = (await errand.broker()) as unknown as BrokerInspector;
      await broker.heartbeat(
        { id: 'old:1:x', host: 'old', pid: 1, queues: ['work'], concurrency: 1, active: 0, startedAt: Date.now() - 99_000 },
        5000,
        Date.now() - 60_000,
      );
      const w = (await app.inject('/dashboard/api/workers')).json<WorkerList>();
      const me = w.workers.find((x) => x.id === worker.id)!;
      assert.equal(me.pid, process.pid);
      assert.deepEqual(me.queues, ['work', 'secure']);
      assert.equal(me.concurrency, 2);
      assert.equal(me.lost, false);
      assert.ok(me.heartbeatAgeMs >= 0);
      const old = w.workers.find((x) => x.id === 'old:1:x')!;
      assert.equal(old.lost, true);
      assert.ok(old.heartbeatAgeMs >= 60_000);
      assert.equal(w.workers.at(-1)!.id, 'old:1:x', 'lost workers last');
    });

    test('actions: retry, cancel, pause/resume, purge with confirmation, retry all failed', async () => {
      assert.equal((await post(`/dashboard/api/runs/${succeeded.id}/retry`)).statusCode, 409);
      assert.equal((await post(`/dashboard/api/runs/${succeeded.id}/cancel`)).statusCode, 409);
      assert.equal((await post('/dashboard/api/runs/work.01ARZ3NDEKTSV4RRFFQ69G5FAV/retry')).statusCode, 404);

      control.failing = false;
      const r = await post(`/dashboard/api/runs/${failed.id}/retry`);
      assert.equal(r.statusCode, 200);
      assert.deepEqual(r.json(), { id: failed.id, outcome: 'queued' });
      await waitFor(async () => (await failed.status()) === 'succeeded', { timeoutMs: 20_000, message: 'the retried run succeeds' });

      const idleRuns = (await app.inject('/dashboard/api/runs?queue=idle&limit=1')).json<RunList>();
      const c = await post(`/dashboard/api/runs/${idleRuns.runs[0]!.id}/cancel`);
      assert.equal(c.statusCode, 200);
      assert.equal(c.json().previous, 'queued');

      assert.deepEqual((await post('/dashboard/api/queues/idle/pause')).json(), { queue: 'idle', paused: true });
      let o = (await app.inject('/dashboard/api/overview')).json<Overview>();
      assert.equal(o.queues.find((q) => q.name === 'idle')!.paused, true);
      assert.deepEqual((await post('/dashboard/api/queues/idle/resume')).json(), { queue: 'idle', paused: false });
      const typo = await post('/dashboard/api/queues/idel/pause');
      assert.equal(typo.statusCode, 404, 'a queue no task uses and the broker never saw is not paused');
      assert.match(typo.json().detail, /^Queue "idel" is not known/);
      o = (await app.inject('/dashboard/api/overview')).json<Overview>();
      assert.equal(
        o.queues.some((q) => q.name === 'idel'),
        false,
        'and it does not appear',
      );

      const noConfirm = await post('/dashboard/api/queues/idle/purge');
      assert.equal(noConfirm.statusCode, 400);
      const wrong = await post('/dashboard/api/queues/idle/purge', { confirm: 'work' });
      assert.equal(wrong.statusCode, 400);
      assert.match(wrong.json().detail, /confirm/);
      const purged = await post('/dashboard/api/queues/idle/purge', { confirm: 'idle' });
      assert.deepEqual(purged.json(), { queue: 'idle', removed: 29 });
      o = (await app.inject('/dashboard/api/overview')).json<Overview>();
      assert.equal(o.queues.find((q) => q.name === 'idle')!.counts.queued, 0);
      assert.equal(o.queues.find((q) => q.name === 'idle')!.counts.cancelled, 1, 'finished runs stay');

      control.failing = true;
      const again = await errand.tasks.get('flaky')!.enqueue({});
      await assert.rejects(again.result({ timeout: 20_000 }));
      control.failing = false;
      const all = await post('/dashboard/api/retry-failed', { queue: 'work', task: 'flaky' });
      assert.deepEqual(all.json(), { retried: 1 });
      await waitFor(async () => (await again.status()) === 'succeeded', { timeoutMs: 20_000, message: 'bulk-retried run succeeds' });
      assert.equal((await post('/dashboard/api/retry-failed', { queue: 'bad queue' })).statusCode, 400);
      assert.equal((await post('/dashboard/api/retry-failed', { extra: 1 })).statusCode, 400);
    });

    test('actions refuse what another site could send: non-JSON bodies, cross-site fetches, foreign origins', async () => {
      const form = await app.inject({
        method: 'POST',
        url: '/dashboard/api/queues/idle/pause',
        payload: 'x=1',
        headers: { 'content-type': 'text/plain' },
      });
      assert.equal(form.statusCode, 415);
      assert.equal((await post('/dashboard/api/queues/idle/pause', {}, { 'sec-fetch-site': 'cross-site' })).statusCode, 403);
      assert.equal((await post('/dashboard/api/queues/idle/pause', {}, { origin: 'https://evil.example' })).statusCode, 403);
      assert.equal((await post('/dashboard/api/queues/idle/pause', {}, { 'sec-fetch-site': 'same-origin' })).statusCode, 200);
      await post('/dashboard/api/queues/idle/resume');
    });

    test('auth: no token 401, read token sees but may not act (403), admin acts; the page itself loads', async () => {
      const none = await secured.inject('/dashboard/api/overview');
      assert.equal(none.statusCode, 401);
      assert.match(String(none.headers['www-authenticate']), /^Bearer/);
      assert.equal((await secured.inject({ url: '/dashboard/api/overview', headers: { authorization: 'Bearer wrong' } })).statusCode, 401);
      const read = { authorization: `Bearer ${READ}` };
      const admin = { authorization: `Bearer ${ADMIN}` };
      assert.equal((await secured.inject({ url: '/dashboard/api/overview', headers: read })).statusCode, 200);
      assert.equal((await secured.inject({ url: '/dashboard/api/session', headers: read })).json().scope, 'read');
      // The sign-in form's probe answers 200 without a token or with a wrong one (no error in the
      // browser's console for the normal way in), and tells nothing but that: no task, no broker.
      const probe = await secured.inject('/dashboard/api/session');
      assert.equal(probe.statusCode, 200);
      assert.deepEqual(probe.json<SignedOut>(), {
        authenticated: false,
        auth: true,
        reason: 'missing',
        detail: 'Not authenticated: sign in with a read or admin token',
      });
      const wrong = await secured.inject({ url: '/dashboard/api/session', headers: { authorization: 'Bearer wrong' } });
      assert.equal(wrong.statusCode, 200);
      assert.deepEqual(wrong.json<SignedOut>(), { authenticated: false, auth: true, reason: 'invalid', detail: 'Invalid token' });
      for (const url of ['/dashboard/api/runs', '/dashboard/api/workers', '/dashboard/api/stream', '/dashboard/api/schedules'])
        assert.equal((await secured.inject(url)).statusCode, 401, `${url} without a token`);
      const json = { 'content-type': 'application/json' };
      const denied = await secured.inject({
        method: 'POST',
        url: '/dashboard/api/queues/idle/pause',
        payload: '{}',
        headers: { ...read, ...json },
      });
      assert.equal(denied.statusCode, 403);
      assert.match(denied.json().detail, /admin/);
      assert.equal(
        (await secured.inject({ method: 'POST', url: '/dashboard/api/queues/idle/pause', payload: '{}', headers: json })).statusCode,
        401,
      );
      const ok = await secured.inject({
        method: 'POST',
        url: '/dashboard/api/queues/idle/resume',
        payload: '{}',
        headers: { ...admin, ...json },
      });
      assert.equal(ok.statusCode, 200);
      assert.equal((await secured.inject('/dashboard/')).statusCode, 200, 'the page (no data in it) loads without a token');
      assert.equal((await secured.inject('/metrics')).statusCode, 401);
      assert.equal((await secured.inject({ url: '/metrics', headers: read })).statusCode, 200);
    });

    test('security headers on pages, assets and API answers; assets cached, pages revalidated', async () => {
      const page = await app.inject('/dashboard/runs/work.01ARZ3NDEKTSV4RRFFQ69G5FAV');
      assert.equal(page.statusCode, 200, 'deep links are pages (run ids contain dots)');
      assert.match(String(page.headers['content-type']), /^text\/html/);
      const csp = String(page.headers['content-security-policy']);
      assert.match(csp, /script-src 'self'/);
      assert.match(csp, /frame-ancestors 'none'/);
      assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
      assert.equal(page.headers['x-content-type-options'], 'nosniff');
      assert.equal(page.headers['referrer-policy'], 'no-referrer');
      assert.equal(page.headers['cache-control'], 'no-cache');
      assert.doesNotMatch(page.body, /<script>|<script(?![^>]*\bsrc=)[^>]*>/, 'no inline script in the page');
      const asset = /src="(\/dashboard\/assets\/[^"]+\.js)"/.exec(page.body)![1]!;
      const a = await app.inject(asset);
      assert.equal(a.statusCode, 200);
      assert.match(String(a.headers['content-type']), /^text\/javascript/);
      assert.match(String(a.headers['cache-control']), /immutable/);
      assert.ok(a.headers['content-security-policy']);
      assert.equal((await app.inject({ url: asset, headers: { 'if-none-match': String(a.headers.etag) } })).statusCode, 304);
      assert.equal((await app.inject('/dashboard/assets/missing.js')).statusCode, 404);
      const api = await app.inject('/dashboard/api/overview');
      assert.equal(api.headers['cache-control'], 'no-store');
      assert.equal(api.headers['x-content-type-options'], 'nosniff');
      assert.equal((await app.inject('/dashboard/api/nothing')).statusCode, 404);
    });

    test('/metrics: Prometheus text with broker gauges', async () => {
      const m = await app.inject('/metrics');
      assert.equal(m.statusCode, 200);
      assert.match(String(m.headers['content-type']), /^text\/plain; version=0\.0\.4/);
      assert.match(m.body, /errand_queue_runs\{queue="work",state="succeeded"\} \d+/);
      assert.match(m.body, /errand_workers_alive 1/);
    });

    test('event stream: an overview now and every interval; a token is needed when auth is on', async () => {
      const live = Fastify();
      await live.register(dashboardPlugin, { errand, streamIntervalMs: 150, auth: { read: [READ] } });
      const base = await live.listen({ port: 0, host: '127.0.0.1' });
      try {
        assert.equal((await fetch(`${base}/dashboard/api/stream`)).status, 401);
        const ac = new AbortController();
        const res = await fetch(`${base}/dashboard/api/stream`, { headers: { authorization: `Bearer ${READ}` }, signal: ac.signal });
        assert.equal(res.status, 200);
        assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/);
        assert.match(res.headers.get('content-security-policy') ?? '', /frame-ancestors 'none'/);
        const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
        let text = '';
        while ((text.match(/event: overview/g) ?? []).length < 2) {
          const { value, done } = await reader.read();
          if (done) break;
          text += value;
        }
        ac.abort();
        const first = /event: overview\ndata: (.*)\n\n/.exec(text)!;
        const o = JSON.parse(first[1]!) as Overview;
        assert.ok(o.queues.some((q) => q.name === 'work'));
      } finally {
        await live.close();
      }
    });
  });
}

describe('dashboard plugin edge cases', () => {
  test('a broker without inspection answers 501 with a reason; an unbuilt front end a 503 page', async () => {
    const errand = createErrand({ broker: `sqlite:${join(tempDir('errand-dash-edge'), 'e.db')}`, logger: quietLogger });
    const real = await errand.broker();
    // Only the core Broker methods: what a third-party broker without BrokerInspector offers.
    const plain: Broker = {
      kind: real.kind,
      maxLeaseLosses: real.maxLeaseLosses,
      enqueue: real.enqueue.bind(real),
      reserve: real.reserve.bind(real),
      settle: real.settle.bind(real),
      recordFinished: real.recordFinished.bind(real),
      renew: real.renew.bind(real),
      release: real.release.bind(real),
      progress: real.progress.bind(real),
      getRun: real.getRun.bind(real),
      cancel: real.cancel.bind(real),
      retry: real.retry.bind(real),
      createWorkflow: real.createWorkflow.bind(real),
      getWorkflow: real.getWorkflow.bind(real),
      cancelWorkflow: real.cancelWorkflow.bind(real),
      counts: real.counts.bind(real),
      prune: real.prune.bind(real),
      waitForWork: real.waitForWork.bind(real),
      watch: real.watch.bind(real),
      onCancel: real.onCancel.bind(real),
      ping: real.ping.bind(real),
      close: real.close.bind(real),
      upsertSchedule: real.upsertSchedule.bind(real),
      fireSchedule: real.fireSchedule.bind(real),
      listSchedules: real.listSchedules.bind(real),
      dueSchedules: real.dueSchedules.bind(real),
      getSchedule: real.getSchedule.bind(real),
      pauseSchedule: real.pauseSchedule.bind(real),
      deleteSchedule: real.deleteSchedule.bind(real),
    };
    const other = createErrand({ broker: plain, logger: quietLogger });
    const app = Fastify();
    await app.register(dashboardPlugin, { errand: other, distDir: tempDir('errand-dash-nodist') });
    try {
      const r = await app.inject('/dashboard/api/overview');
      assert.equal(r.statusCode, 501);
      assert.match(r.json().detail, /does not support inspection/);
      const page = await app.inject('/dashboard/');
      assert.equal(page.statusCode, 503);
      assert.match(page.body, /npm run build:dashboard/);
    } finally {
      await app.close();
      await errand.close();
    }
  });

  test('the broker failing answers 503 with Retry-After, not 500; the stream says so and stays open', async () => {
    const errand = createErrand({ broker: `sqlite:${join(tempDir('errand-dash-down'), 'e.db')}`, logger: quietLogger });
    const real = await errand.broker();
    let down = true;
    const failing = new Proxy(real, {
      get(target, prop, receiver) {
        const v = Reflect.get(target, prop, receiver);
        if (prop === 'counts' || prop === 'listRuns')
          return (...args: unknown[]) => (down ? Promise.reject(new Error('disk I/O error')) : v.apply(target, args));
        return typeof v === 'function' ? v.bind(target) : v;
      },
    });
    const other = createErrand({ broker: failing, logger: quietLogger });
    const app = Fastify();
    await app.register(dashboardPlugin, { errand: other, streamIntervalMs: 100 });
    const base = await app.listen({ port: 0, host: '127.0.0.1' });
    try {
      const r = await app.inject('/dashboard/api/overview');
      assert.equal(r.statusCode, 503);
      assert.equal(r.headers['retry-after'], '5');
      assert.equal((await app.inject('/dashboard/api/runs')).statusCode, 503);
      const ac = new AbortController();
      const res = await fetch(`${base}/dashboard/api/stream`, { signal: ac.signal });
      const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
      let text = '';
      while (!text.includes('event: overview')) {
        const { value, done } = await reader.read();
        if (done) break;
        text += value;
        if (text.includes('event: error')) down = false;
      }
      ac.abort();
      assert.match(text, /event: error\ndata: \{"detail":"The task broker is unavailable; retrying"\}/);
      assert.match(text, /event: overview/, 'the stream recovers when the broker does');
    } finally {
      await app.close();
      await errand.close();
    }
  });
});

describe('errand dashboard (command line)', () => {
  const cli = (args: string[], env: NodeJS.ProcessEnv = {}) =>
    spawn(process.execPath, [join(root, 'src/cli/main.ts'), 'dashboard', ...args], {
      cwd: root,
      env: { ...process.env, LOG_LEVEL: 'info', ERRAND_ADMIN_TOKENS: '', ERRAND_READ_TOKENS: '', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  const outcome = async (args: string[]) => {
    const p = cli(args);
    let stderr = '';
    p.stderr.on('data', (d) => {
      stderr += d;
    });
    // A bound on the wait, so that a command that never exits (serving when it should refuse) fails the test.
    const timer = setTimeout(() => p.kill('SIGKILL'), 60_000);
    const [code] = await once(p, 'exit');
    clearTimeout(timer);
    return { code, stderr };
  };

  test('clear errors for a bad port, host, flag or broker URL', async () => {
    let r = await outcome(['--port', 'eighty']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--port must be an integer from 0 to 65535, got "eighty"/);
    r = await outcome(['--port', '70000']);
    assert.match(r.stderr, /--port must be an integer from 0 to 65535/);
    r = await outcome(['--broker', 'mysql://x']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /Broker URL "mysql:\/\/x" is not supported/);
    r = await outcome(['--colour']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^errand: dashboard: Unknown option '--colour' \(see errand help\)\n$/);
  });

  test('refuses a SQLite path that does not exist, as errand inspect does, and creates nothing', async () => {
    const dir = tempDir('errand-dash-cli');
    const r = await outcome(['--broker', `sqlite:${join(dir, 'typo.db')}`, '--port', '0']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^errand: no SQLite broker file at .*typo\.db \(from sqlite:.*\): check --broker or ERRAND_BROKER_URL\n$/);
    assert.deepEqual(readdirSync(dir), [], 'no empty database was made out of the typo');
  });

  test('serves the dashboard, its API and /metrics for a broker, without deprecation warnings; a port in use is a clear error', async () => {
    const url = `sqlite:${join(tempDir('errand-dash-cli'), 'e.db')}`;
    await createErrand({ broker: url, logger: quietLogger })
      .broker()
      .then((b) => b.close()); // the broker file exists
    const p = cli(['--broker', url, '--port', '0']);
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => {
      out += d;
    });
    p.stderr.on('data', (d) => {
      err += d;
    });
    try {
      const base = await waitFor(() => /dashboard at (http:\/\/127\.0\.0\.1:\d+)\/dashboard\//.exec(out)?.[1], {
        timeoutMs: 20_000,
        message: 'the command logs its address',
      });
      const page = await fetch(`${base}/`);
      assert.equal(page.status, 200);
      assert.match(page.url, /\/dashboard\/$/);
      const o = (await (await fetch(`${base}/dashboard/api/overview`)).json()) as Overview;
      assert.equal(o.broker, 'sqlite');
      assert.equal((await fetch(`${base}/metrics`)).status, 200);

      const port = new URL(base).port;
      const busy = await outcome(['--broker', url, '--port', port]);
      assert.equal(busy.code, 2);
      assert.match(busy.stderr, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port}: the port is already in use`));
      assert.doesNotMatch(err, /Deprecation|FSTDEP/, 'no warning on stderr (FSTDEP023 was printed at every start)');
    } finally {
      p.kill('SIGTERM');
      await once(p, 'exit');
    }
  });

  test('on a Redis prefix nothing is stored under: serves, says so, and writes nothing there until an app does', async () => {
    // A fresh service may not have written yet; a mistyped ERRAND_PREFIX never will. Either way the
    // dashboard must not claim the prefix (its layout record), as the admin commands do not.
    const prefix = uniquePrefix('errand-dash-empty');
    const p = cli(['--broker', REDIS_URL, '--port', '0'], { ERRAND_PREFIX: prefix });
    let out = '';
    p.stdout.on('data', (d) => {
      out += d;
    });
    const raw = new Redis(REDIS_URL);
    let app: Errand | undefined;
    try {
      const base = await waitFor(() => /dashboard at (http:\/\/127\.0\.0\.1:\d+)\/dashboard\//.exec(out)?.[1], {
        timeoutMs: 20_000,
        message: 'the command logs its address',
      });
      assert.match(
        out,
        new RegExp(`nothing under the key prefix \\\\?"${prefix}\\\\?" at ${REDIS_URL} yet: the dashboard writes nothing there`),
      );
      const res = await fetch(`${base}/dashboard/api/overview`);
      assert.equal(res.status, 503);
      const notice = /^Nothing is stored under the broker's key prefix yet: runs show here once an app using that prefix writes there/;
      assert.match(((await res.json()) as { detail: string }).detail, notice);
      const ac = new AbortController();
      const stream = await fetch(`${base}/dashboard/api/stream`, { signal: ac.signal });
      const reader = stream.body!.pipeThrough(new TextDecoderStream()).getReader();
      let text = '';
      while (!text.includes('event: error\ndata:') || !text.includes('}\n\n')) {
        const { value, done } = await reader.read();
        if (done) break;
        text += value;
      }
      ac.abort();
      assert.match(JSON.parse(/event: error\ndata: (.*)\n/.exec(text)![1]!).detail, notice, 'the live status says so too');
      assert.deepEqual(await raw.keys(`*${prefix}*`), [], 'nothing written under the prefix (no layout record)');

      // The app writes: the dashboard shows its runs, without a restart.
      app = createErrand({ broker: REDIS_URL, prefix, logger: quietLogger });
      await app.task('echo', { input: z.object({}), queue: 'dash_empty' }, async () => 1).enqueue({});
      const o = await waitFor(
        async () => {
          const r = await fetch(`${base}/dashboard/api/overview`);
          return r.status === 200 ? ((await r.json()) as Overview) : undefined;
        },
        { timeoutMs: 20_000, message: 'the overview once the app wrote' },
      );
      assert.deepEqual(
        o.queues.map((q) => [q.name, q.counts.queued]),
        [['dash_empty', 1]],
      );
    } finally {
      p.kill('SIGTERM');
      await once(p, 'exit');
      raw.disconnect();
      await app?.close();
      await dropRedisPrefix(prefix);
    }
  });

  test('an unreachable broker is named in the error', async () => {
    const srv = createNetServer();
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const port = (srv.address() as { port: number }).port;
    await new Promise<void>((r) => srv.close(() => r()));
    const r = await outcome(['--broker', `redis://127.0.0.1:${port}`]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, new RegExp(`cannot reach the broker at redis://127\\.0\\.0\\.1:${port}`));
  });
});
