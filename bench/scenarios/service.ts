/**
 * Scenario 4, the seed's service against the two anchor services (`../shared/anchors`), each as one
 * API process and one worker process, every worker at the same concurrency (`serviceConcurrency`;
 * Celery: that many prefork processes) and every service sent the same number of users:
 * - HTTP requests/s on `POST /users/` (a unique user per request): the API alone (no worker), wrk
 *   (or autocannon when wrk is not installed) for a fixed time;
 * - emails/s end to end: API and worker running, a fixed number of `POST /users/` sent, timed from
 *   the first request to the last email received by the SMTP sink (smtp-server, its own process).
 */
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { findAnchors } from '../lib/anchors.ts';
import { Collector, type Ctx, errMessage, type ScenarioResult } from '../lib/context.ts';
import { type Child, FatalError, forkNode, freePort, spawnCmd, waitForHttp, waitReady, waitUntil } from '../lib/proc.ts';

type Role = 'api' | 'worker';

interface ServiceDef {
  id: string;
  label: string;
  /** Null when runnable; else why not. */
  unavailable(): string | null;
  start(role: Role, env: { PORT: string; REDIS_URL: string; SMTP_URL: string; DATA_DIR: string; CONCURRENCY: string }, name: string): Child;
  /** What the API does per `POST /users/`, for the notes. */
  perRequest: string;
  /** The broker: 'redis' (REDIS_URL used) or 'sqlite' (DATA_DIR used). */
  storage: 'redis' | 'sqlite';
  emails: 'node' | 'celery';
}

/**
 * The anchor services: `BENCH_ANCHORS`, else a `shared/anchors` above the checkout (or above the
 * checkout it was cloned from: bench/lib/anchors.ts); where none is found, `../shared/anchors`, which
 * the services then report missing.
 */
const anchorsDir = (root: string) => findAnchors(root).dir ?? resolve(root, '../shared/anchors');
const BULLMQ_COPY = '/tmp/errand-bench-anchors/bullmq-seed';

function which(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/**
 * The Fastify+BullMQ anchor needs `npm install` in its folder, which is read-only: it is copied to
 * /tmp/errand-bench-anchors/bullmq-seed (its own files only, never into the project) and installed
 * there once (`npm ci`, under the machine's npm lock).
 */
function prepareBullmqAnchor(anchors: string, log: (m: string) => void): string | null {
  const src = join(anchors, 'bullmq-seed');
  if (!existsSync(join(src, 'app.mjs'))) return `${src}/app.mjs not found`;
  if (existsSync(join(src, 'node_modules/.bin/node'))) return null;
  if (existsSync(join(BULLMQ_COPY, 'node_modules/.bin/node'))) return null;
  try {
    log(`  service: installing the Fastify+BullMQ anchor in a copy at ${BULLMQ_COPY} (npm ci; the anchor folder is read-only)`);
    rmSync(BULLMQ_COPY, { recursive: true, force: true });
    mkdirSync(BULLMQ_COPY, { recursive: true });
    for (const f of ['app.mjs', 'package.json', 'package-lock.json']) cpSync(join(src, f), join(BULLMQ_COPY, f));
    execFileSync('flock', ['/tmp/npm.lock', 'npm', 'ci', '--no-audit', '--no-fund'], {
      cwd: BULLMQ_COPY,
      stdio: 'ignore',
      timeout: 300_000,
    });
    return existsSync(join(BULLMQ_COPY, 'node_modules/.bin/node')) ? null : 'npm ci did not install node';
  } catch (err) {
    return `npm ci in ${BULLMQ_COPY} failed: ${errMessage(err)}`;
  }
}

function celeryMissing(): string | null {
  if (!existsSync('/usr/bin/python3')) return '/usr/bin/python3 is not installed';
  try {
    execFileSync('/usr/bin/python3', ['-c', 'import celery, redis, fastapi, uvicorn'], { stdio: 'ignore', timeout: 30_000 });
    return null;
  } catch {
    return 'Debian packages missing: apt-get install -y python3-celery python3-redis python3-fastapi python3-uvicorn';
  }
}

function services(ctx: Ctx): ServiceDef[] {
  const node = process.execPath;
  const ANCHORS = anchorsDir(ctx.root);
  const bullmqDir = () => (existsSync(join(ANCHORS, 'bullmq-seed/node_modules/.bin/node')) ? join(ANCHORS, 'bullmq-seed') : BULLMQ_COPY);
  const errand = (storage: 'redis' | 'sqlite'): ServiceDef => ({
    id: storage === 'redis' ? 'errand-seed' : 'errand-seed-sqlite',
    label: storage === 'redis' ? 'seed service on Errand (Redis)' : 'seed service on Errand (SQLite)',
    storage,
    emails: 'node',
    perRequest: 'stores the user (SQLite, a unique email), then enqueues its email',
    unavailable: () => (existsSync(join(ctx.root, 'app/main.ts')) ? null : 'app/main.ts does not exist yet'),
    start: (role, env, name) =>
      spawnCmd(name, node, ['app/main.ts', role], {
        cwd: ctx.root,
        env: {
          PORT: env.PORT,
          SMTP_URL: env.SMTP_URL,
          DATA_DIR: env.DATA_DIR,
          WORKER_CONCURRENCY: env.CONCURRENCY,
          LOG_LEVEL: 'warn',
          ...(storage === 'redis' ? { REDIS_URL: env.REDIS_URL } : {}),
        },
      }),
  });
  return [
    errand('redis'),
    // The seed service on its embedded default is an extra, not a target: left out of --quick.
    ...(ctx.quick && !ctx.services?.includes('errand-seed-sqlite') ? [] : [errand('sqlite')]),
    ...(['redis', 'sqlite'] as const).map(
      (store): ServiceDef => ({
        id: store === 'redis' ? 'fastify-bullmq' : 'fastify-bullmq-sqlite',
        label: store === 'redis' ? 'Fastify + BullMQ anchor' : 'Fastify + BullMQ anchor, STORE=sqlite',
        storage: 'redis',
        emails: 'node',
        perRequest:
          store === 'redis'
            ? 'enqueues the email only (stores no user)'
            : 'stores the user (node:sqlite, a unique email, as ours), then enqueues its email',
        unavailable: () => prepareBullmqAnchor(ANCHORS, ctx.log),
        start: (role, env, name) =>
          spawnCmd(name, join(bullmqDir(), 'node_modules/.bin/node'), ['app.mjs'], {
            cwd: bullmqDir(),
            env: {
              ROLE: role,
              PORT: env.PORT,
              REDIS_URL: env.REDIS_URL,
              SMTP_URL: env.SMTP_URL,
              CONCURRENCY: env.CONCURRENCY,
              ...(store === 'sqlite' ? { STORE: 'sqlite', DATA_DIR: env.DATA_DIR } : {}),
            },
          }),
      }),
    ),
    {
      id: 'celery',
      label: 'FastAPI + Celery anchor',
      storage: 'redis',
      emails: 'celery',
      perRequest: 'enqueues the email only (stores no user)',
      unavailable: () => (existsSync(join(ANCHORS, 'celery-seed/api.sh')) ? celeryMissing() : `${join(ANCHORS, 'celery-seed')} not found`),
      start: (role, env, name) =>
        spawnCmd(name, join(ANCHORS, 'celery-seed', role === 'api' ? 'api.sh' : 'worker.sh'), [], {
          cwd: join(ANCHORS, 'celery-seed'),
          env: { PORT: env.PORT, REDIS_URL: env.REDIS_URL, SMTP_URL: env.SMTP_URL, CONCURRENCY: env.CONCURRENCY },
        }),
    },
  ];
}

interface WrkOut {
  requests: number;
  duration_us: number;
  status_errors: number;
  connect_errors: number;
  read_errors: number;
  write_errors: number;
  timeouts: number;
  p50_us: number;
  p99_us: number;
}

async function runWrk(
  ctx: Ctx,
  name: string,
  url: string,
  seconds: number,
  connections: number,
  prefix: string,
): Promise<{ rps: number; errors: number; p99ms: number }> {
  const c = spawnCmd(
    name,
    'wrk',
    ['-t1', `-c${connections}`, `-d${seconds}s`, '--timeout', '10s', '-s', join(ctx.root, 'bench/services/wrk-users.lua'), url],
    {
      env: { BENCH_PREFIX: prefix },
    },
  );
  await c.waitExit(seconds * 1000 + 30_000);
  const line = c.stdout.split('\n').find((l) => l.startsWith('BENCH_JSON '));
  if (!line) throw new Error(`wrk gave no summary (${c.exitInfo()}): ${c.stdout.slice(-300)}`);
  const o = JSON.parse(line.slice('BENCH_JSON '.length)) as WrkOut;
  const errors = o.status_errors + o.connect_errors + o.read_errors + o.write_errors + o.timeouts;
  return { rps: (o.requests - o.status_errors) / (o.duration_us / 1e6), errors, p99ms: o.p99_us / 1000 };
}

async function runAutocannon(
  loader: Child,
  job: { url: string; connections: number; durationS?: number; amount?: number; prefix: string },
  timeoutMs: number,
) {
  return loader.request<{
    type: string;
    startUs: number;
    requests: number;
    ok2xx: number;
    non2xx: number;
    errors: number;
    timeouts: number;
    durationS: number;
    p99ms: number;
  }>({ cmd: 'run', job }, timeoutMs);
}

export async function serviceScenario(ctx: Ctx): Promise<ScenarioResult> {
  const s = ctx.sizes;
  const col = new Collector();
  const notes: string[] = [];
  const useWrk = which('wrk');
  const defs = services(ctx).filter((d) => !ctx.services || ctx.services.includes(d.id));
  const sink = forkNode('smtp-sink', join(ctx.root, 'bench/services/smtp-sink.ts'));
  const loader = forkNode('http-load', join(ctx.root, 'bench/services/http-load.ts'));
  const RPS = 'HTTP requests/s, POST /users/';
  const EMAILS = 'emails/s delivered end to end';
  try {
    const { port: smtpPort } = (await waitReady(sink, 20_000)) as unknown as { port: number };
    await waitReady(loader, 20_000);
    const SMTP_URL = `smtp://127.0.0.1:${smtpPort}`;
    for (const def of defs) {
      const why = def.unavailable();
      if (why) {
        notes.push(`${def.label}: skipped (${why}).`);
        ctx.log(`  service ${def.id}: skipped (${why})`);
        continue;
      }
      const procs: Child[] = [];
      const stopAll = async () => {
        await Promise.all(procs.map((p) => p.stop(5000)));
        procs.length = 0;
      };
      // Phase A: requests/s, the API alone.
      try {
        await ctx.redis.flush();
        const port = String(await freePort());
        const dataDir = join(ctx.tmp, `${def.id}-a`);
        mkdirSync(dataDir, { recursive: true });
        const api = def.start(
          'api',
          { PORT: port, REDIS_URL: `${ctx.redis.url}/1`, SMTP_URL, DATA_DIR: dataDir, CONCURRENCY: String(s.serviceConcurrency) },
          `svc-${def.id}-api-a`,
        );
        procs.push(api);
        const base = `http://127.0.0.1:${port}`;
        await waitForHttp(`${base}/healthz`, 60_000, api);
        // A warm-up (JIT, connections) before the measured rounds; left out of --quick for time.
        const warm = Math.max(1, Math.round(s.httpDurationS / 2));
        const warmPrefix = `w${Date.now()}`;
        if (!ctx.quick && useWrk) await runWrk(ctx, `wrk-${def.id}-warm`, `${base}/users/`, warm, s.httpConnections, warmPrefix);
        if (!ctx.quick && !useWrk)
          await runAutocannon(
            loader,
            { url: `${base}/users/`, connections: s.httpConnections, durationS: warm, prefix: warmPrefix },
            warm * 1000 + 60_000,
          );
        for (let round = 0; round < s.rounds; round++) {
          const prefix = `r${round}x${Date.now()}`;
          let rps: number;
          let errors: number;
          if (useWrk)
            ({ rps, errors } = await runWrk(ctx, `wrk-${def.id}-${round}`, `${base}/users/`, s.httpDurationS, s.httpConnections, prefix));
          else {
            const r = await runAutocannon(
              loader,
              { url: `${base}/users/`, connections: s.httpConnections, durationS: s.httpDurationS, prefix },
              s.httpDurationS * 1000 + 60_000,
            );
            rps = r.ok2xx / r.durationS;
            errors = r.non2xx + r.errors + r.timeouts;
          }
          if (errors > 0) notes.push(`${def.label}: ${errors} failed or non-2xx responses in HTTP round ${round + 1} (not counted).`);
          col.add(RPS, def.id, rps, 'req/s');
          if (api.exited) throw new Error(`the API exited (${api.exitInfo()}): ${api.tail(5)}`);
        }
      } catch (err) {
        col.fail(RPS, def.id, errMessage(err), 'req/s');
        ctx.log(`  service ${def.id} requests/s: ${errMessage(err)}`);
      } finally {
        await stopAll();
      }
      // Phase B: emails/s end to end, API and worker running.
      try {
        await ctx.redis.flush();
        const port = String(await freePort());
        const dataDir = join(ctx.tmp, `${def.id}-b`);
        mkdirSync(dataDir, { recursive: true });
        const env = { PORT: port, REDIS_URL: `${ctx.redis.url}/0`, SMTP_URL, DATA_DIR: dataDir, CONCURRENCY: String(s.serviceConcurrency) };
        const api = def.start('api', env, `svc-${def.id}-api-b`);
        procs.push(api);
        const base = `http://127.0.0.1:${port}`;
        await waitForHttp(`${base}/healthz`, 60_000, api);
        const worker = def.start('worker', env, `svc-${def.id}-worker-b`);
        procs.push(worker);
        // Ready end to end: one user, one email.
        await sink.request({ cmd: 'reset' }, 5_000);
        const first = await fetch(`${base}/users/`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ username: 'warmup', email: 'warmup@example.com' }),
        });
        if (!first.ok) throw new Error(`POST /users/ answered ${first.status}: ${(await first.text()).slice(0, 200)}`);
        await waitUntil(
          async () => {
            if (worker.exited) throw new FatalError(`the worker exited (${worker.exitInfo()}): ${worker.tail(5)}`);
            return (await sink.request<{ type: string; count: number }>({ cmd: 'count' }, 5_000)).count >= 1;
          },
          60_000,
          `${def.label}: the first email`,
          50,
        );
        const e = s.emails;
        for (let round = 0; round < s.rounds; round++) {
          await sink.request({ cmd: 'reset' }, 5_000);
          const load = await runAutocannon(
            loader,
            { url: `${base}/users/`, connections: 20, amount: e, prefix: `e${round}x${Date.now()}` },
            s.emailTimeoutMs + 60_000,
          );
          if (load.ok2xx < e) notes.push(`${def.label}: ${e - load.ok2xx} of ${e} requests failed in email round ${round + 1}.`);
          const expected = load.ok2xx;
          const deadline = performance.now() + s.emailTimeoutMs;
          let got = { count: 0, lastUs: 0 };
          while (performance.now() < deadline) {
            got = await sink.request<{ type: string; count: number; lastUs: number }>({ cmd: 'count' }, 5_000);
            if (got.count >= expected) break;
            if (worker.exited) throw new Error(`the worker exited (${worker.exitInfo()}): ${worker.tail(5)}`);
            await new Promise((r) => setTimeout(r, 20));
          }
          if (got.count === 0) throw new Error(`no email arrived within ${s.emailTimeoutMs} ms`);
          if (got.count < expected)
            notes.push(
              `${def.label}: only ${got.count} of ${expected} emails arrived within ${s.emailTimeoutMs / 1000} s in round ${round + 1}; rate counted on those.`,
            );
          col.add(EMAILS, def.id, got.count / ((got.lastUs - load.startUs) / 1e6), 'emails/s');
          col.extra(EMAILS, def.id, { emailsPerRound: e });
        }
      } catch (err) {
        col.fail(EMAILS, def.id, errMessage(err), 'emails/s');
        ctx.log(`  service ${def.id} emails/s: ${errMessage(err)}`);
      } finally {
        await stopAll();
      }
      ctx.log(`  service: ${def.id} done`);
    }
  } finally {
    await sink.close();
    await loader.close();
  }
  notes.push(
    `Requests/s: ${useWrk ? 'wrk' : 'autocannon'}, ${s.httpConnections} connections, ${s.httpDurationS} s per round after a warm-up, the API process alone (its queue fills; no worker competes for the CPU). ` +
      `Emails/s: ${s.emails.toLocaleString('en-US')} users per round for every service, posted by autocannon over 20 connections, ` +
      `timed from the first request to the last email at the SMTP sink. Every worker runs at concurrency ${s.serviceConcurrency} ` +
      '(Errand WORKER_CONCURRENCY, the BullMQ anchor CONCURRENCY, the Celery anchor that many prefork processes).',
  );
  for (const def of defs) notes.push(`Per POST /users/, ${def.label}: ${def.perRequest}.`);
  return { title: "The seed's service", metrics: col.figures(), notes };
}
