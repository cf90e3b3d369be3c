// `errand schedules`: list (table and --json with the next five fire times), pause, resume, trigger,
// backfill (twice: each time once), delete; errors with exit code 2; trigger and backfill of a task
// with limits (refused without --app, under the limits with it). SQLite file.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { z } from 'zod';
import type { Broker, BrokerInspector } from '../../src/broker/types.ts';
import { createErrand, type Errand } from '../../src/errand.ts';
import { tempDir } from '../helpers.ts';

const NODE = process.execPath;
const MAIN = new URL('../../src/cli/main.ts', import.meta.url).pathname;
const LIMITS_APP = new URL('../fixtures/schedule-limits-app.ts', import.meta.url).pathname;
const ECHO_APP = new URL('../fixtures/echo-tasks.ts', import.meta.url).pathname;

function errand(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const env = { ...process.env, ERRAND_BROKER_URL: undefined, REDIS_URL: undefined, ERRAND_PREFIX: undefined, ERRAND_REDACT: undefined };
    const child = spawn(NODE, [MAIN, ...args], { env: env as NodeJS.ProcessEnv, stdio: ['ignore', 'pipe', 'pipe'] });
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

describe('errand schedules', () => {
  let app: Errand;
  let url: string;
  before(async () => {
    url = `sqlite:${join(tempDir('errand-cli-sched'), 'e.db')}`;
    app = createErrand({ broker: url, logger: pino({ level: 'silent' }) });
    const t = app.task('report', { input: z.object({ kind: z.string() }), queue: 'reports' }, async () => null);
    await app.upsertSchedule('hourly-report', t, { every: '1h', input: { kind: 'h' } });
  });
  after(() => app.close());

  it('lists, as a table and as JSON with the next five fire times', async () => {
    const text = await errand(['schedules', '--broker', url]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /hourly-report\s+report\s+active\s+every 1h/);
    const j = await errand(['schedules', 'list', '--broker', url, '--json']);
    assert.equal(j.code, 0, j.stderr);
    const [s] = JSON.parse(j.stdout).schedules;
    assert.equal(s.id, 'hourly-report');
    assert.equal(s.upcoming.length, 5);
    assert.deepEqual(s.input, { kind: 'h' });
  });

  it('pause, resume, trigger, backfill twice, delete; unknown ids refused with exit 2', async () => {
    assert.equal((await errand(['schedules', 'pause', 'hourly-report', '--broker', url])).code, 0);
    assert.equal((await app.getSchedule('hourly-report'))?.state, 'paused');
    assert.equal((await errand(['schedules', 'resume', 'hourly-report', '--broker', url])).code, 0);
    assert.equal((await app.getSchedule('hourly-report'))?.state, 'active');
    const trig = await errand(['schedules', 'trigger', 'hourly-report', '--broker', url, '--json']);
    assert.equal(trig.code, 0, trig.stderr);
    const run = await app.getRun(JSON.parse(trig.stdout).run_id);
    assert.equal(run.schedule?.id, 'hourly-report');
    const inspected = await errand(['inspect', 'run', run.id, '--broker', url, '--json']);
    assert.equal(inspected.code, 0, inspected.stderr);
    assert.deepEqual(JSON.parse(inspected.stdout).schedule, { id: 'hourly-report', at: run.schedule?.at.toISOString(), backfilled: false });
    const text = await errand(['inspect', 'run', run.id, '--broker', url]);
    assert.match(text.stdout, /schedule\s+hourly-report at /);
    const to = new Date(Math.floor(Date.now() / 3600_000) * 3600_000).toISOString();
    const from = new Date(Date.parse(to) - 2 * 3600_000).toISOString();
    const b1 = JSON.parse(
      (await errand(['schedules', 'backfill', 'hourly-report', '--from', from, '--to', to, '--broker', url, '--json'])).stdout,
    );
    assert.deepEqual([b1.created, b1.existing], [2, 0]);
    const b2 = JSON.parse(
      (await errand(['schedules', 'backfill', 'hourly-report', '--from', from, '--to', to, '--broker', url, '--json'])).stdout,
    );
    assert.deepEqual([b2.created, b2.existing], [0, 2]);
    const badRange = await errand(['schedules', 'backfill', 'hourly-report', '--from', '2030-01-01T00:00:00', '--to', to, '--broker', url]);
    assert.equal(badRange.code, 2);
    assert.match(badRange.stderr, /--from: .* is not an instant/);
    const none = await errand(['schedules', 'pause', 'nope', '--broker', url, '--json']);
    assert.equal(none.code, 2);
    assert.equal(JSON.parse(none.stderr).error.code, 'schedule_not_found');
    assert.equal((await errand(['schedules', 'delete', 'hourly-report', '--broker', url])).code, 0);
    assert.equal(await app.getSchedule('hourly-report'), null);
    const bad = await errand(['schedules', 'explode', '--broker', url]);
    assert.equal(bad.code, 2);
  });

  it('set: creates and updates a schedule with the checks of HTTP PUT; errors name the flag', async () => {
    const created = await errand([
      'schedules',
      'set',
      'nightly',
      '--task',
      'report',
      '--queue',
      'reports',
      '--cron',
      '0 2 * * *',
      '--zone',
      'Europe/Paris',
      '--input',
      '{"kind":"n"}',
      '--overlap',
      'skip',
      '--priority',
      '5',
      '--broker',
      url,
      '--json',
    ]);
    assert.equal(created.code, 0, created.stderr);
    const j = JSON.parse(created.stdout);
    assert.deepEqual([j.id, j.queue, j.task, j.state], ['nightly', 'reports', 'report', 'active']);
    assert.deepEqual(j.input, { kind: 'n' });
    let v = await app.getSchedule('nightly');
    assert.deepEqual(JSON.parse(v!.spec), { cron: '0 2 * * *', timezone: 'Europe/Paris' });
    assert.deepEqual([JSON.parse(v!.options).overlap, JSON.parse(v!.options).priority], ['skip', 5]);
    // An update without --queue keeps the stored queue; the whole definition is replaced.
    const updated = await errand(['schedules', 'set', 'nightly', '--task', 'report', '--every', '30m', '--broker', url]);
    assert.equal(updated.code, 0, updated.stderr);
    assert.match(updated.stdout, /Schedule nightly of queue reports stored \(every 30m, active, next fire /);
    v = await app.getSchedule('nightly');
    assert.deepEqual(JSON.parse(v!.spec), { every: 1_800_000 });
    assert.equal(v!.input, 'null');
    const refused = async (args: string[], re: RegExp, code = 'usage') => {
      const r = await errand(['schedules', 'set', ...args, '--broker', url, '--json']);
      assert.equal(r.code, 2, r.stdout);
      const e = JSON.parse(r.stderr).error;
      assert.equal(e.code, code);
      assert.match(e.message, re);
    };
    await refused(['fresh', '--task', 'report', '--every', '1m'], /--queue is needed to create a schedule/);
    await refused(['nightly', '--every', '1m'], /--task is required/);
    await refused(['nightly', '--task', 'report'], /cron|every/);
    await refused(['nightly', '--task', 'report', '--cron', '61 * * * *'], /cron/);
    await refused(['nightly', '--task', 'report', '--every', '1m', '--zone', 'Mars/Base'], /Mars\/Base/);
    await refused(['nightly', '--task', 'report', '--every', '1m', '--overlap', 'sometimes'], /overlap/);
    await refused(['nightly', '--task', 'report', '--every', '1m', '--input', '{nope'], /--input is not JSON/);
    await refused(['nightly', '--task', 'report', '--every', '1m', '--priority', 'high'], /--priority must be an integer/);
    for (const version of ['1e300', '1.5', '-1', '9007199254740992']) {
      await refused(
        ['nightly', '--task', 'report', '--every', '1m', `--version=${version}`],
        /--version must be an integer from 0 to 9007199254740991/,
      );
    }
    await refused(
      ['nightly', '--task', 'report', '--every', '1m', '--version', '1'],
      /not updated: the stored definition has version/,
      'version_conflict',
    );
    assert.deepEqual(JSON.parse((await app.getSchedule('nightly'))!.spec), { every: 1_800_000 }, 'nothing refused was stored');
  });

  it('trigger and backfill of a task with limits: refused without the app (nothing created), under its limits with --app', async () => {
    const sync = app.task(
      'sync',
      { input: z.object({ tenant: z.string() }), queue: 'syncs', limits: { key: (i) => i.tenant, concurrency: 2 } },
      async () => null,
    );
    await app.upsertSchedule('tenant-sync', sync, { every: '1h', input: { tenant: 'acme' } });
    assert.equal(JSON.parse((await app.getSchedule('tenant-sync'))!.options).limits, true, 'the app records that the task has limits');
    const to = new Date(Math.floor(Date.now() / 3600_000) * 3600_000).toISOString();
    const from = new Date(Date.parse(to) - 2 * 3600_000).toISOString();
    const broker = await app.broker();
    const queued = async () => (await broker.counts(['syncs'])).syncs?.queued ?? 0;

    const refusedBoth = async (extra: string[], re: RegExp) => {
      for (const args of [
        ['trigger', 'tenant-sync'],
        ['backfill', 'tenant-sync', '--from', from, '--to', to],
      ]) {
        const r = await errand(['schedules', ...args, ...extra, '--broker', url, '--json']);
        assert.equal(r.code, 2, r.stdout);
        const e = JSON.parse(r.stderr).error;
        assert.equal(e.code, 'schedule_limits');
        assert.equal(e.task, 'sync');
        assert.match(e.message, /Schedule "tenant-sync" \(queue "syncs"\) runs task "sync", which has flow-control limits/);
        assert.match(e.message, re);
        const text = await errand(['schedules', ...args, ...extra, '--broker', url]);
        assert.equal(text.code, 2);
        assert.match(text.stderr, /^errand: Schedule "tenant-sync" .* nothing was created/);
      }
      assert.equal(await queued(), 0, 'nothing created');
    };
    await refusedBoth([], /errand schedules (trigger|backfill) tenant-sync --app <module>/);
    // An app that does not define the task: refused too, saying so.
    await refusedBoth(['--app', ECHO_APP], /\(--app\) does not define it/);

    const trig = await errand(['schedules', 'trigger', 'tenant-sync', '--app', LIMITS_APP, '--broker', url, '--json']);
    assert.equal(trig.code, 0, trig.stderr);
    assert.deepEqual((await app.getRun(JSON.parse(trig.stdout).run_id)).flow, { group: 'sync', key: 'acme' });
    const back = await errand([
      'schedules',
      'backfill',
      'tenant-sync',
      '--from',
      from,
      '--to',
      to,
      '--app',
      LIMITS_APP,
      '--broker',
      url,
      '--json',
    ]);
    assert.equal(back.code, 0, back.stderr);
    assert.equal(JSON.parse(back.stdout).created, 2);
    const runs = (await (broker as Broker & BrokerInspector).listRuns({ queue: 'syncs', limit: 10 })).runs;
    assert.equal(runs.length, 3);
    for (const r of runs) assert.deepEqual(r.flow, { group: 'sync', key: 'acme' });

    // An update by the CLI (which cannot know the limits) keeps what the app recorded.
    const set = await errand([
      'schedules',
      'set',
      'tenant-sync',
      '--task',
      'sync',
      '--every',
      '2h',
      '--input',
      '{"tenant":"acme"}',
      '--broker',
      url,
    ]);
    assert.equal(set.code, 0, set.stderr);
    assert.equal(JSON.parse((await app.getSchedule('tenant-sync'))!.options).limits, true);
    const again = await errand(['schedules', 'trigger', 'tenant-sync', '--broker', url, '--json']);
    assert.equal(JSON.parse(again.stderr).error.code, 'schedule_limits');
    const misplaced = await errand(['schedules', 'pause', 'tenant-sync', '--app', LIMITS_APP, '--broker', url]);
    assert.equal(misplaced.code, 2);
    assert.match(misplaced.stderr, /--app is for trigger and backfill only/);
    const missing = await errand(['schedules', 'trigger', 'tenant-sync', '--app', 'nowhere.ts', '--broker', url, '--json']);
    assert.equal(missing.code, 2);
    assert.match(JSON.parse(missing.stderr).error.message, /--app: Task module not found: nowhere\.ts/);
  });

  it('refuses a SQLite memory URI (its storage is in the memory of another process), creating no file', async () => {
    const r = await errand(['schedules', '--broker', 'sqlite:file:errand-memory-x?mode=memory&cache=shared', '--json']);
    assert.equal(r.code, 2, r.stderr);
    const e = JSON.parse(r.stderr).error;
    assert.equal(e.code, 'broker_not_found');
    assert.match(e.message, /is a SQLite memory URI: its storage lives in the process that opened it/);
  });
});
