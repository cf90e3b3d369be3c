// The admin commands of the CLI (`errand inspect`, `retry`, `cancel`, `purge`, `pause`, `resume`),
// spawned as a user runs them, against a SQLite file seeded by a real worker (and Redis under a prefix
// of its own for a few): text output, --json, redaction, every error with its exit code.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import pino from 'pino';
import { z } from 'zod';
import { connectBroker } from '../../src/broker/connect.ts';
import type { Broker, BrokerInspector } from '../../src/broker/types.ts';
import { PermanentError } from '../../src/core/errors.ts';
import { createErrand, type Errand } from '../../src/errand.ts';
import { dropRedisPrefix, REDIS_URL } from '../fixtures/brokers.ts';
import { requires } from '../fixtures/prereq.ts';
import { tempDir, uniquePrefix, waitFor } from '../helpers.ts';

const NODE = process.execPath;
const MAIN = new URL('../../src/cli/main.ts', import.meta.url).pathname;
const quiet = pino({ level: 'silent' });

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `errand <args>` and collects what it writes; never rejects on a non-zero exit. */
function errand(args: string[], env: Record<string, string | undefined> = {}): Promise<Result> {
  return new Promise((resolve, reject) => {
    const clean = {
      ...process.env,
      ERRAND_BROKER_URL: undefined,
      REDIS_URL: undefined,
      ERRAND_PREFIX: undefined,
      ERRAND_REDACT: undefined,
    };
    const child = spawn(NODE, [MAIN, ...args], { env: { ...clean, ...env } as NodeJS.ProcessEnv, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Runs the calls a few at a time (each one is a Node.js process). */
async function pool<T>(calls: (() => Promise<T>)[], width = 4): Promise<T[]> {
  const out: T[] = new Array(calls.length);
  let next = 0;
  const lane = async () => {
    while (next < calls.length) {
      const i = next++;
      out[i] = await calls[i]!();
    }
  };
  await Promise.all(Array.from({ length: Math.min(width, calls.length) }, lane));
  return out;
}

/** A refusal: exit code 2, nothing on stdout, the message on stderr. */
function refused(r: Result, message: RegExp): void {
  assert.equal(r.code, 2, `exit code (stderr: ${r.stderr})`);
  assert.equal(r.stdout, '');
  assert.match(r.stderr, message);
}

const CARD = '4111111111111111';
const PASSWORD = 'hunter2-secret';

describe('errand admin commands on SQLite', () => {
  const dir = tempDir('errand-cli');
  const file = join(dir, 'errand.db');
  const url = `sqlite:${file}`;
  const B = ['--broker', url];
  let app: Errand;
  let broker: Broker & BrokerInspector;
  const ids: Record<string, string> = {};

  before(async () => {
    app = createErrand({ broker: url, logger: quiet });
    const email = app.task(
      'send_email',
      { input: z.object({ email: z.string(), password: z.string() }), queue: 'emails' },
      async ({ email }) => ({ sent: email }),
    );
    const charge = app.task(
      'charge',
      { input: z.object({ card: z.object({ number: z.string() }) }), queue: 'payments', retries: 0 },
      async ({ card }) => {
        throw new PermanentError(`card ${card.number} declined`);
      },
    );
    const report = app.task('report', { input: z.object({ n: z.number() }), queue: 'reports' }, async () => 'ok');
    const worker = app.worker({ queues: ['emails', 'payments'] });
    await worker.start();
    const sent = await email.enqueue({ email: 'ann@example.com', password: PASSWORD });
    await sent.result({ timeout: 10_000 });
    ids.succeeded = sent.id;
    const failed: string[] = [];
    for (let i = 0; i < 3; i++) {
      const h = await charge.enqueue({ card: { number: CARD } });
      await assert.rejects(h.result({ timeout: 10_000 }));
      failed.push(h.id);
    }
    ids.failed = failed[0]!;
    ids.failed2 = failed[1]!;
    ids.failed3 = failed[2]!;
    await worker.stop();
    ids.queued = (await report.enqueue({ n: 1 })).id;
    ids.scheduled = (await report.enqueue({ n: 2 }, { delay: 3_600_000 })).id;
    ids.queued2 = (await report.enqueue({ n: 3 })).id;
    broker = (await app.broker()) as Broker & BrokerInspector;
  });

  after(async () => {
    await app.close();
  });

  it('lists the admin commands in errand help', async () => {
    const r = await errand(['help']);
    assert.equal(r.code, 0);
    for (const c of [
      'inspect queues',
      'inspect runs',
      'inspect run <id>',
      'inspect workers',
      'retry <id>',
      'cancel <id>',
      'purge <queue> --yes',
      'pause <queue>',
      'resume <queue>',
    ])
      assert.ok(r.stdout.includes(c), `help mentions ${c}`);
  });

  it('inspect queues: a table of counts by state and paused, or JSON', async () => {
    const r = await errand(['inspect', 'queues', ...B]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trimEnd().split('\n');
    assert.match(lines[0]!, /^QUEUE\s+WAITING\s+QUEUED\s+SCHEDULED\s+ACTIVE\s+SUCCEEDED\s+FAILED\s+CANCELLED\s+PAUSED$/);
    assert.match(r.stdout, /^emails\s+0\s+0\s+0\s+0\s+1\s+0\s+0\s+-$/m);
    assert.match(r.stdout, /^payments\s+0\s+0\s+0\s+0\s+0\s+3\s+0\s+-$/m);
    assert.match(r.stdout, /^reports\s+0\s+2\s+1\s+0\s+0\s+0\s+0\s+-$/m);
    // Every count is right-aligned under its header (the last one, CANCELLED, too).
    const end = lines[0]!.indexOf('CANCELLED') + 'CANCELLED'.length - 1;
    for (const line of lines.slice(1)) assert.match(line[end]!, /\d/, `a count ends under CANCELLED's last letter: ${line}`);

    const j = await errand(['inspect', 'queues', '--json', ...B]);
    assert.equal(j.code, 0);
    const body = JSON.parse(j.stdout);
    assert.deepEqual(
      body.queues.map((q: { queue: string }) => q.queue),
      ['emails', 'payments', 'reports'],
    );
    assert.deepEqual(body.queues[2], {
      queue: 'reports',
      counts: { waiting: 0, queued: 2, scheduled: 1, active: 0, succeeded: 0, failed: 0, cancelled: 0 },
      paused: false,
    });
  });

  it('inspect runs: newest first, filters, pages with --cursor', async () => {
    const r = await errand(['inspect', 'runs', ...B]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trimEnd().split('\n');
    assert.match(lines[0]!, /^ID\s+TASK\s+STATE\s+ATTEMPTS\s+ENQUEUED\s+ERROR$/);
    const listed = lines.slice(1).map((l) => l.split(/\s+/)[0]);
    assert.deepEqual(listed, [ids.queued2, ids.scheduled, ids.queued, ids.failed3, ids.failed2, ids.failed, ids.succeeded]);
    assert.match(
      r.stdout,
      new RegExp(`^${ids.failed!.replace('.', '\\.')}\\s+charge\\s+failed\\s+1\\s+.*PermanentError: card ${CARD} declined$`, 'm'),
    );

    const failedOnly = JSON.parse((await errand(['inspect', 'runs', '--state', 'failed', '--json', ...B])).stdout);
    assert.deepEqual(
      failedOnly.runs.map((x: { id: string }) => x.id),
      [ids.failed3, ids.failed2, ids.failed],
    );
    assert.equal(failedOnly.next, null);
    assert.equal(failedOnly.runs[0].error.name, 'PermanentError');
    assert.match(failedOnly.runs[0].error.stack, /declined/);

    const byTask = JSON.parse((await errand(['inspect', 'runs', '--task', 'send_email', '--json', ...B])).stdout);
    assert.deepEqual(
      byTask.runs.map((x: { id: string }) => x.id),
      [ids.succeeded],
    );

    const first = await errand(['inspect', 'runs', '--queue', 'reports', '--limit', '2', ...B]);
    assert.equal(first.code, 0, first.stderr);
    const next = /--cursor (\S+)$/m.exec(first.stdout);
    assert.ok(next, `a next-page line: ${first.stdout}`);
    assert.match(first.stdout, /Next page: errand inspect runs --broker \S+ --queue reports --limit 2 --cursor \S+$/m);
    const second = JSON.parse(
      (await errand(['inspect', 'runs', '--queue', 'reports', '--limit', '2', '--cursor', next[1]!, '--json', ...B])).stdout,
    );
    assert.deepEqual(
      second.runs.map((x: { id: string }) => x.id),
      [ids.queued],
    );
    assert.equal(second.next, null);
  });

  it('inspect run: every field, the error with its stack, the attempts', async () => {
    const r = await errand(['inspect', 'run', ids.failed!, ...B]);
    assert.equal(r.code, 0, r.stderr);
    for (const field of [
      'id',
      'task',
      'queue',
      'state',
      'priority',
      'attempts',
      'enqueued',
      'started',
      'finished',
      'expires',
      'worker',
      'input',
      'error',
      'history',
    ])
      assert.match(r.stdout, new RegExp(`^${field}\\b`, 'm'), `shows ${field}`);
    assert.match(r.stdout, /^state\s+failed$/m);
    assert.match(r.stdout, new RegExp(`^error\\s+PermanentError: card ${CARD} declined$`, 'm'));
    assert.match(r.stdout, /^\s+at .*cli\.test\.ts/m, 'the stack');
    assert.match(r.stdout, /^ {2}#1 {2}failed {2}worker /m);

    const j = await errand(['inspect', 'run', ids.failed!, '--json', ...B]);
    assert.equal(j.code, 0);
    const run = JSON.parse(j.stdout);
    assert.equal(run.id, ids.failed);
    assert.equal(run.state, 'failed');
    assert.deepEqual(run.input, { card: { number: CARD } });
    assert.match(run.error.stack, /cli\.test\.ts/);
    assert.equal(run.history.length, 1);
    assert.equal(run.history[0].outcome, 'failed');
  });

  it('shows the paths of ERRAND_REDACT and --redact as "[redacted]", and scrubs their values from errors', async () => {
    const viaEnv = await errand(['inspect', 'run', ids.succeeded!, ...B], { ERRAND_REDACT: 'password' });
    assert.equal(viaEnv.code, 0, viaEnv.stderr);
    assert.match(viaEnv.stdout, /"password": "\[redacted\]"/);
    assert.ok(!viaEnv.stdout.includes(PASSWORD));

    const viaFlag = await errand(['inspect', 'run', ids.failed!, '--redact', 'card.number', '--json', ...B]);
    const run = JSON.parse(viaFlag.stdout);
    assert.deepEqual(run.input, { card: { number: '[redacted]' } });
    assert.equal(run.error.message, 'card [redacted] declined');
    assert.ok(!viaFlag.stdout.includes(CARD));

    const list = await errand(['inspect', 'runs', '--json', ...B], { ERRAND_REDACT: 'password,card.number' });
    assert.ok(!list.stdout.includes(CARD) && !list.stdout.includes(PASSWORD));
    const table = await errand(['inspect', 'runs', '--redact', 'card.number', ...B]);
    assert.ok(!table.stdout.includes(CARD));
    assert.match(table.stdout, /card \[redacted\] declined/);

    refused(await errand(['inspect', 'run', ids.failed!, '--redact', 'a..b', ...B]), /--redact: redact path "a\.\.b" has an empty segment/);
    refused(
      await errand(['inspect', 'run', ids.failed!, ...B], { ERRAND_REDACT: 'x.' }),
      /ERRAND_REDACT: redact path "x\." has an empty segment/,
    );
  });

  it('inspect workers: id, host, pid, queues, concurrency, active, heartbeat age, lost', async () => {
    const empty = await errand(['inspect', 'workers', ...B]);
    assert.equal(empty.code, 0);
    assert.match(empty.stdout, /No workers seen in the last hour/);

    const now = Date.now();
    await broker.heartbeat(
      {
        id: 'host-a:101:alive',
        host: 'host-a',
        pid: 101,
        queues: ['emails', 'payments'],
        concurrency: 8,
        active: 3,
        startedAt: now - 60_000,
      },
      // Alive for the whole test however slowly its commands run on a loaded machine (the lost one
      // below is judged against its own 15 s, two minutes ago).
      3_600_000,
      now,
    );
    await broker.heartbeat(
      { id: 'host-b:202:gone', host: 'host-b', pid: 202, queues: ['reports'], concurrency: 2, active: 1, startedAt: now - 600_000 },
      15_000,
      now - 120_000,
    );
    const r = await errand(['inspect', 'workers', ...B]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^ID\s+HOST\s+PID\s+QUEUES\s+CONCURRENCY\s+ACTIVE\s+HEARTBEAT\s+LOST$/m);
    assert.match(r.stdout, /^host-a:101:alive\s+host-a\s+101\s+emails,payments\s+8\s+3\s+\S+ ago\s+-$/m);
    assert.match(r.stdout, /^host-b:202:gone\s+host-b\s+202\s+reports\s+2\s+1\s+2m \d\ds ago\s+LOST$/m);

    const j = JSON.parse((await errand(['inspect', 'workers', '--json', ...B])).stdout);
    const gone = j.workers.find((w: { id: string }) => w.id === 'host-b:202:gone');
    assert.equal(gone.lost, true);
    assert.ok(gone.heartbeat_age_ms >= 120_000);
    assert.deepEqual(Object.keys(gone).sort(), [
      'active',
      'concurrency',
      'heartbeat_age_ms',
      'host',
      'id',
      'last_seen',
      'lost',
      'pid',
      'queues',
      'started_at',
      'ttl_ms',
    ]);
    assert.equal(j.workers.find((w: { id: string }) => w.id === 'host-a:101:alive').lost, false);
    await broker.removeWorker('host-a:101:alive');
    await broker.removeWorker('host-b:202:gone');
  });

  it('retry <id> replays a failed run; a run that is neither failed nor cancelled is refused', async () => {
    const r = await errand(['retry', ids.failed!, ...B]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /queued again/);
    assert.equal((await broker.getRun(ids.failed!))!.state, 'queued');

    const again = await errand(['retry', ids.failed!, '--json', ...B]);
    assert.equal(again.code, 2);
    assert.deepEqual(JSON.parse(again.stderr), {
      error: {
        code: 'not_failed',
        message: `run ${ids.failed} is queued: only failed or cancelled runs can be retried`,
        state: 'queued',
      },
    });
  });

  it('retry --failed --queue replays every failed run of the queue (of one task)', async () => {
    const none = await errand(['retry', '--failed', '--queue', 'payments', '--task', 'no_such_task', '--json', ...B]);
    assert.deepEqual(JSON.parse(none.stdout), { queue: 'payments', task: 'no_such_task', retried: 0 });
    const r = await errand(['retry', '--failed', '--queue', 'payments', ...B]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /Queued again 2 failed runs of queue payments/);
    assert.equal((await broker.getRun(ids.failed2!))!.state, 'queued');
    assert.equal((await broker.getRun(ids.failed3!))!.state, 'queued');
  });

  it('cancel <id> cancels a queued run; cancelling it again succeeds and changes nothing', async () => {
    const r = await errand(['cancel', ids.queued2!, '--json', ...B]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), { id: ids.queued2, state: 'cancelled', previous_state: 'queued' });
    const again = await errand(['cancel', ids.queued2!, ...B]);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /was already cancelled/);
    const text = await errand(['cancel', ids.failed3!, ...B]);
    assert.equal(text.code, 0);
    assert.match(text.stdout, /cancelled; it was queued/);
  });

  it('purge refuses without --yes, saying how many runs would go; with --yes deletes them', async () => {
    const r = await errand(['purge', 'reports', ...B]);
    refused(r, /add --yes to delete the 2 runs of queue reports waiting now \(1 queued, 1 scheduled\)/);
    assert.equal((await broker.counts(['reports'])).reports!.queued, 1, 'nothing deleted');
    const j = await errand(['purge', 'reports', '--json', ...B]);
    assert.equal(j.code, 2);
    assert.deepEqual(JSON.parse(j.stderr).error.would_delete, 2);

    const yes = await errand(['purge', 'reports', '--yes', '--json', ...B]);
    assert.equal(yes.code, 0, yes.stderr);
    assert.deepEqual(JSON.parse(yes.stdout), { queue: 'reports', purged: 2 });
    const counts = (await broker.counts(['reports'])).reports!;
    assert.equal(counts.queued + counts.scheduled, 0);
    assert.equal(await broker.getRun(ids.queued!), null);
  });

  it('pause and resume a queue, and say when nothing changed', async () => {
    const p = await errand(['pause', 'emails', ...B]);
    assert.equal(p.code, 0, p.stderr);
    assert.match(p.stdout, /Queue emails paused/);
    assert.deepEqual(await broker.pausedQueues(), ['emails']);
    assert.match((await errand(['inspect', 'queues', ...B])).stdout, /^emails\s+.*\s+paused$/m);
    assert.deepEqual(JSON.parse((await errand(['pause', 'emails', '--json', ...B])).stdout), {
      queue: 'emails',
      paused: true,
      changed: false,
    });
    assert.deepEqual(JSON.parse((await errand(['resume', 'emails', '--json', ...B])).stdout), {
      queue: 'emails',
      paused: false,
      changed: true,
    });
    assert.deepEqual(await broker.pausedQueues(), []);
    assert.match((await errand(['resume', 'emails', ...B])).stdout, /already running/);
  });

  it('refuses malformed and unknown run ids with exit code 2', async () => {
    const unknown = 'emails.01ARZ3NDEKTSV4RRFFQ69G5FAV';
    const results = await Promise.all([
      errand(['inspect', 'run', 'not-a-run-id', ...B]),
      errand(['inspect', 'run', unknown, ...B]),
      errand(['retry', unknown, ...B]),
      errand(['cancel', unknown, ...B]),
      errand(['cancel', 'emails.short', ...B]),
      errand(['inspect', 'run', unknown, '--json', ...B]),
    ]);
    refused(results[0]!, /"not-a-run-id" is not a run id: run ids are <queue>\.<26 characters>/);
    for (const r of results.slice(1, 4)) refused(r, new RegExp(`run ${unknown.replace('.', '\\.')} not found`));
    refused(results[4]!, /"emails\.short" is not a run id/);
    assert.deepEqual(JSON.parse(results[5]!.stderr).error.code, 'run_not_found');
  });

  it('refuses malformed and unknown queues, listing the known ones', async () => {
    // One at a time: seven CLI processes started at once could each outlive their time limit on a busy machine.
    const results = [];
    for (const args of [
      ['purge', 'nope', '--yes'],
      ['pause', 'nope'],
      ['resume', 'nope'],
      ['inspect', 'runs', '--queue', 'nope'],
      ['retry', '--failed', '--queue', 'nope'],
      ['pause', 'bad/name'],
      ['pause', 'nope', '--json'],
    ])
      results.push(await errand([...args, ...B]));
    for (const r of results.slice(0, 5)) refused(r, /unknown queue "nope"; known queues: emails, payments, reports/);
    refused(results[5]!, /"bad\/name" is not a valid queue name/);
    assert.deepEqual(JSON.parse(results[6]!.stderr).error, {
      code: 'unknown_queue',
      message: 'unknown queue "nope"; known queues: emails, payments, reports',
      known: ['emails', 'payments', 'reports'],
    });
  });

  it('refuses bad flags and values with exit code 2', async () => {
    const cases: [string[], RegExp][] = [
      [['inspect'], /inspect needs what to inspect/],
      [['inspect', 'things'], /cannot inspect "things"/],
      [['inspect', '--json', 'queues'], /inspect needs what to inspect first/],
      // One balanced sentence (Node's own message ends with an unclosed quote: as in '-- "--bogus").
      [
        ['inspect', 'queues', '--bogus'],
        /^errand: inspect queues: Unknown option '--bogus'\. To pass an argument that starts with "-", put it after "--", as in: -- "--bogus" \(see errand help\)\n$/,
      ],
      [['inspect', 'queues', 'extra'], /inspect queues takes no arguments, got "extra"/],
      [
        ['inspect', 'runs', '--state', 'done'],
        /--state must be one of waiting, queued, scheduled, active, succeeded, failed, cancelled, got "done"/,
      ],
      [['inspect', 'runs', '--limit', '0'], /--limit must be an integer from 1 to 500, got "0"/],
      [['inspect', 'runs', '--limit', '501'], /--limit must be an integer from 1 to 500/],
      [['inspect', 'runs', '--limit', 'ten'], /--limit must be an integer from 1 to 500/],
      [['inspect', 'runs', '--limit'], /Option '--limit.*argument/],
      [['inspect', 'runs', '--cursor', 'not!a!cursor'], /--cursor "not!a!cursor" is not a cursor of this broker/],
      [['inspect', 'runs', '--queue', ''], /--queue is empty/],
      [['inspect', 'run'], /inspect run takes one run id, got nothing/],
      [['inspect', 'run', 'a', 'b'], /inspect run takes one run id, got "a" "b"/],
      [['retry'], /retry takes one run id, or --failed --queue Q/],
      [['retry', '--failed'], /retry --failed needs --queue/],
      [['retry', ids.failed!, '--failed', '--queue', 'payments'], /give a run id, or --failed --queue Q, not both/],
      [['retry', ids.failed!, '--queue', 'payments'], /--queue and --task go with --failed/],
      [['cancel'], /cancel takes one run id, got nothing/],
      [['purge'], /purge takes one queue name, got nothing/],
      [['purge', 'reports', '--yes=no'], /Option '--yes' does not take an argument/],
      [['pause'], /pause takes one queue name/],
      [['cancel', ids.failed!, '--limit', '3'], /cancel: Unknown option '--limit'/],
    ];
    const results = await pool(
      cases.map(
        ([args]) =>
          () =>
            errand([...args, ...B]),
      ),
    );
    for (const [i, r] of results.entries()) refused(r, cases[i]![1]);
    const j = await errand(['inspect', 'runs', '--state', 'done', '--json', ...B]);
    assert.equal(j.code, 2);
    assert.equal(JSON.parse(j.stderr).error.code, 'usage');
  });

  it('--help prints the usage and exits 0', async () => {
    const r = await errand(['inspect', 'runs', '--help']);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /inspect runs\s+Runs, newest first/);
  });

  it('says what is wrong with the broker: a missing file or a bad URL (2), unreachable (1)', async () => {
    const [missing, badUrl, down, downJson] = await Promise.all([
      errand(['inspect', 'queues', '--broker', `sqlite:${join(dir, 'typo.db')}`]),
      errand(['inspect', 'queues', '--broker', 'mysql://localhost/x']),
      errand(['inspect', 'queues', '--broker', 'redis://127.0.0.1:1']),
      errand(['pause', 'emails', '--broker', 'redis://user:s3cret@127.0.0.1:1', '--json']),
    ]);
    refused(missing, /no SQLite broker file at .*typo\.db/);
    refused(badUrl, /Broker URL "mysql:\/\/localhost\/x" is not supported/);
    assert.equal(down.code, 1, down.stderr);
    assert.match(down.stderr, /cannot reach the broker at redis:\/\/127\.0\.0\.1:1/);
    assert.equal(downJson.code, 1);
    assert.equal(JSON.parse(downJson.stderr).error.code, 'broker_unavailable');
    assert.ok(!downJson.stderr.includes('s3cret'), 'the password is not shown');
  });

  it('takes the broker from ERRAND_BROKER_URL when --broker is not given', async () => {
    const r = await errand(['inspect', 'queues', '--json'], { ERRAND_BROKER_URL: url, REDIS_URL: 'redis://127.0.0.1:1' });
    assert.equal(r.code, 0, r.stderr);
    assert.ok(JSON.parse(r.stdout).queues.length >= 3);
  });
});

describe('errand admin commands on Redis', async () => {
  let skip: string | false = false;
  try {
    const probe = await connectBroker(REDIS_URL, { logger: quiet, prefix: uniquePrefix('errand-cli-probe') });
    try {
      await probe.ping();
    } finally {
      await probe.close();
    }
  } catch (err) {
    skip = requires('Redis', `${REDIS_URL} is not usable: ${(err as Error).message}`);
  }
  const prefix = uniquePrefix('errand-cli');
  const env = { ERRAND_PREFIX: prefix };
  const B = ['--broker', REDIS_URL];
  let app: Errand | undefined;

  after(async () => {
    await app?.close();
    if (skip) return;
    await dropRedisPrefix(prefix);
  });

  it('inspects queues and runs, pauses and resumes under ERRAND_PREFIX', { skip }, async () => {
    app = createErrand({ broker: REDIS_URL, prefix, logger: quiet });
    const task = app.task('echo', { input: z.object({ token: z.string() }), queue: 'cli-q' }, async (i) => i);
    const h = await task.enqueue({ token: 'secret-token-1' });

    const queues = await errand(['inspect', 'queues', '--json', ...B], env);
    assert.equal(queues.code, 0, queues.stderr);
    assert.deepEqual(JSON.parse(queues.stdout).queues, [
      { queue: 'cli-q', counts: { waiting: 0, queued: 1, scheduled: 0, active: 0, succeeded: 0, failed: 0, cancelled: 0 }, paused: false },
    ]);
    // A prefix nothing was written under (a mistyped ERRAND_PREFIX): refused, and left empty.
    const typo = uniquePrefix('errand-cli-empty');
    for (const args of [
      ['inspect', 'queues'],
      ['inspect', 'runs'],
      ['inspect', 'workers'],
    ]) {
      refused(
        await errand([...args, ...B], { ERRAND_PREFIX: typo }),
        new RegExp(`^errand: nothing under the key prefix "${typo}" at ${REDIS_URL}: check ERRAND_PREFIX`),
      );
    }
    const other = await errand(['inspect', 'queues', '--json', ...B], { ERRAND_PREFIX: typo });
    assert.equal(other.code, 2);
    assert.equal(JSON.parse(other.stderr).error.code, 'broker_not_found');
    const raw = new Redis(REDIS_URL);
    try {
      assert.deepEqual(await raw.keys(`${typo}:*`), [], 'the read-only commands wrote nothing under the mistyped prefix');
    } finally {
      raw.disconnect();
    }

    const run = await errand(['inspect', 'run', h.id, '--json', ...B], { ...env, ERRAND_REDACT: 'token' });
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual(JSON.parse(run.stdout).input, { token: '[redacted]' });

    assert.equal((await errand(['pause', 'cli-q', ...B], env)).code, 0);
    const broker = (await app.broker()) as Broker & BrokerInspector;
    await waitFor(async () => (await broker.pausedQueues()).includes('cli-q'));
    refused(await errand(['pause', 'nope', ...B], env), /unknown queue "nope"; known queues: cli-q/);
    assert.equal((await errand(['resume', 'cli-q', ...B], env)).code, 0);
    assert.deepEqual(await broker.pausedQueues(), []);
    refused(await errand(['inspect', 'runs', '--cursor', 'bad cursor', ...B], env), /is not a cursor of this broker/);
  });
});

describe('errand worker start-up', () => {
  const dir = tempDir('errand-cli-load');

  it('names the file, line and column of an error thrown by a module the task module imports', async () => {
    writeFileSync(join(dir, 'helper.ts'), 'const o: any = undefined;\no.boom();\n');
    writeFileSync(join(dir, 'chain.ts'), "import './helper.ts';\n");
    refused(
      await errand(['worker', join(dir, 'chain.ts')]),
      new RegExp(
        `^errand: Could not load the task module ${join(dir, 'chain.ts')}: TypeError: Cannot read properties of undefined \\(reading 'boom'\\) \\(at ${join(dir, 'helper.ts')}:2:3\\)\n$`,
      ),
    );
  });

  it('names where a TypeScript syntax error is, as Node.js does', async () => {
    writeFileSync(join(dir, 'syntax.ts'), 'export const x = {\n  a: 1,\n  b: (,\n};\n');
    refused(
      await errand(['worker', join(dir, 'syntax.ts')]),
      new RegExp(`: SyntaxError: Expression expected \\(at ${join(dir, 'syntax.ts')}:3:7\\)\n$`),
    );
  });

  it("names the user's line of an Errand error raised while the module defines its tasks", async () => {
    const index = new URL('../../src/index.ts', import.meta.url).pathname;
    writeFileSync(
      join(dir, 'bad-task.ts'),
      `import { createErrand } from '${index}';\nexport const errand = createErrand();\nerrand.task('bad name!', {}, async () => 1);\n`,
    );
    refused(
      await errand(['worker', join(dir, 'bad-task.ts')]),
      new RegExp(`: ConfigError: Task name "bad name!" is invalid.* \\(at ${join(dir, 'bad-task.ts')}:3:8\\)\n$`),
    );
  });

  it('exits 0 at once on SIGTERM while its task module is still loading (nothing was taken)', async () => {
    const child = spawn(NODE, [MAIN, 'worker', new URL('../fixtures/slow-tasks.ts', import.meta.url).pathname], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    try {
      child.stderr.on('data', (d) => (stderr += d));
      await waitFor(() => stderr.includes('slow-tasks: loading'), { timeoutMs: 20_000, message: 'the task module to start loading' });
      child.kill('SIGTERM');
      assert.equal(await exited, 0, stderr);
      assert.match(stderr, /SIGTERM while starting; nothing was taken/);
    } finally {
      child.kill('SIGKILL');
    }
  });
});
