/**
 * The layout version of the Redis keys (src/broker/redis/layout.ts) and the upgrade story:
 * - keys in the previous layout (layout 1: what every Errand before the layout record wrote, made
 *   here with raw commands) are migrated by a new broker, and every run is still there and runs;
 * - brokers starting together on such keys migrate each queue once;
 * - keys of a newer layout are refused (unless it says this version may run on them);
 * - a rolling deploy: a worker process of the previous commit (layout 1, from `git archive`) and
 *   one of this tree work one queue at once, the old one is killed, nothing is lost.
 *
 * Every test uses a key prefix of its own, deleted at the end (never FLUSHDB).
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { Cluster, Redis } from 'ioredis';
import pino from 'pino';
import { LAYOUT_VERSION, layoutKey, queueLayoutKey } from '../../../src/broker/redis/layout.ts';
import { RedisBroker } from '../../../src/broker/redis/redis-broker.ts';
import { expandScript, parseLibraries, SCRIPT_NAMES, scriptSource } from '../../../src/broker/redis/scripts.ts';
import { BrokerConfigError, ConfigError, EmptyPrefixError } from '../../../src/core/errors.ts';
import { newRunId } from '../../../src/core/ids.ts';
import { requires } from '../../fixtures/prereq.ts';
import { type Proc, spawnNode, stopProc } from '../../fixtures/procs.ts';
import { type OwnCluster, startCluster } from '../../fixtures/redis-servers.ts';
import { tempDir, uniquePrefix, waitFor } from '../../helpers.ts';

const URL_ = process.env.ERRAND_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const redis = new Redis(URL_, { lazyConnect: true, maxRetriesPerRequest: 1 });
const prefixes = new Set<string>();
const brokers: RedisBroker[] = [];
const ROOT = new URL('../../..', import.meta.url).pathname;
const PIN = '~errand: not a run; keeps this sorted set in skiplist encoding (faster leases)';

function prefixFor(label: string): string {
  const prefix = uniquePrefix(label);
  prefixes.add(prefix);
  return prefix;
}

function open(prefix: string, logger?: pino.Logger): RedisBroker {
  const b = new RedisBroker({ url: URL_, prefix, ...(logger ? { logger } : {}) });
  brokers.push(b);
  return b;
}

async function deleteByPrefix(prefix: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length) await redis.unlink(...keys);
  } while (cursor !== '0');
}

after(async () => {
  await Promise.allSettled(brokers.map((b) => b.close()));
  for (const prefix of prefixes) await deleteByPrefix(prefix);
  redis.disconnect();
});

interface LegacyRuns {
  queued: string;
  urgent: string;
  scheduled: string;
  active: string;
  succeeded: string;
  failed: string;
}

/**
 * One queue as Errand wrote it before the layout record (layout 1), with raw commands: a queued
 * run at priority 0 and one at 5, a run scheduled at `now + 1000`, an active run whose lease
 * expired at `now - 1` (its lease set pinned at +inf, as builds ad5dc52 to 27c37c3 did), a run
 * that succeeded with a TTL (builds before 082a009) and a failed one in an expiry list.
 */
async function writeLegacyQueue(prefix: string, queue: string, now: number, client: Redis | Cluster = redis): Promise<LegacyRuns> {
  const base = `${prefix}:{${queue}}:`;
  const ids = {
    queued: newRunId(queue, now - 6),
    urgent: newRunId(queue, now - 5),
    scheduled: newRunId(queue, now - 4),
    active: newRunId(queue, now - 3),
    succeeded: newRunId(queue, now - 2),
    failed: newRunId(queue, now - 1),
  };
  const rid = (id: string) => id.slice(-26);
  const input = (n: string) => JSON.stringify({ n });
  const m = now + 86_400_000 - ((now + 86_400_000) % 60_000);
  await client.sadd(`${prefix}:queues`, queue);
  await client
    .multi()
    .hset(`${base}r:${rid(ids.queued)}`, 's', 'q', 't', 'legacy', 'i', input('queued'), 'k', 'key-1')
    .set(`${base}ik:legacy:key-1`, rid(ids.queued), 'PX', 86_400_000)
    .rpush(`${base}w:0`, rid(ids.queued))
    .zadd(`${base}prios`, 0, '0')
    .hset(`${base}r:${rid(ids.urgent)}`, 's', 'q', 't', 'legacy', 'i', input('urgent'), 'p', '5')
    .rpush(`${base}w:5`, rid(ids.urgent))
    .zadd(`${base}prios`, -5, '5')
    .hset(`${base}r:${rid(ids.scheduled)}`, 's', 's', 't', 'legacy', 'i', input('scheduled'), 'r', String(now + 1000))
    .zadd(`${base}sched`, now + 1000, rid(ids.scheduled))
    .hset(
      `${base}r:${rid(ids.active)}`,
      's',
      'a',
      't',
      'legacy',
      'i',
      input('active'),
      'a',
      '1',
      'w',
      'old-worker',
      'b',
      String(now - 100),
      'o',
      '1',
    )
    .zadd(`${base}active`, now - 1, rid(ids.active), '+inf', PIN)
    .hset(
      `${base}r:${rid(ids.succeeded)}`,
      's',
      'd',
      't',
      'legacy',
      'i',
      input('succeeded'),
      'R',
      '"done"',
      'f',
      String(now),
      'x',
      String(now + 86_400_000),
    )
    .pexpire(`${base}r:${rid(ids.succeeded)}`, 86_400_000)
    .zadd(`${base}succeeded`, now - 2, rid(ids.succeeded))
    .hset(
      `${base}r:${rid(ids.failed)}`,
      's',
      'f',
      't',
      'legacy',
      'i',
      input('failed'),
      'a',
      '1',
      'w',
      'old-worker',
      'b',
      String(now - 50),
      'o',
      '1',
      'f',
      String(now),
      'x',
      String(now + 86_400_000),
      'E',
      '{"name":"Error","message":"boom"}',
    )
    .zadd(`${base}failed`, now - 1, rid(ids.failed))
    .rpush(`${base}exp:${m}`, rid(ids.failed))
    .zadd(`${base}exps`, m, String(m))
    .exec();
  return ids;
}

/** A logger whose records are kept in `lines`. */
function capture(): { logger: pino.Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  return { logger: pino({ level: 'info' }, stream), lines };
}

describe('redis layout version', () => {
  it('records the current layout when a broker first uses an empty prefix', async () => {
    await redis.connect().catch(() => {});
    const prefix = prefixFor('errand-layout-new');
    const b = open(prefix);
    assert.equal(await redis.exists(layoutKey(prefix)), 0, 'nothing is written before the first command');
    await b.ping();
    const record = await redis.hgetall(layoutKey(prefix));
    assert.equal(record.version, String(LAYOUT_VERSION));
    assert.equal(record.compatible, '4', 'code of layout 3 and earlier may not run on it (layout 4 packs the flow key states)');
    await b.enqueue([{ id: newRunId('fresh'), task: 't', queue: 'fresh', input: '{}', priority: 0, runAt: Date.now() }], Date.now());
    assert.equal(await redis.exists(queueLayoutKey(prefix, 'fresh')), 0, 'a queue created in the current layout needs no marker');
  });

  it('existingPrefix: an empty prefix is refused with EmptyPrefixError and nothing is written; a used one is served', async () => {
    await redis.connect().catch(() => {});
    const empty = prefixFor('errand-layout-existing');
    const b = new RedisBroker({ url: URL_, prefix: empty, existingPrefix: true });
    brokers.push(b);
    await assert.rejects(b.ping(), (err: Error) => {
      assert.ok(err instanceof EmptyPrefixError && err instanceof BrokerConfigError, String(err));
      assert.match(err.message, new RegExp(`nothing under the key prefix "${empty}" \\(no ${empty}:layout, no ${empty}:queues\\)`));
      return true;
    });
    await assert.rejects(b.counts(['q']), EmptyPrefixError);
    assert.deepEqual(await redis.keys(`${empty}:*`), [], 'nothing written under the empty prefix');

    await open(empty).ping(); // an ordinary broker records the layout
    await b.ping();
    assert.deepEqual(await b.counts(['q']), {
      q: { waiting: 0, queued: 0, scheduled: 0, active: 0, succeeded: 0, failed: 0, cancelled: 0 },
    });
    assert.throws(
      () => new RedisBroker({ url: URL_, prefix: empty, existingPrefix: 'yes' as unknown as boolean }),
      (err: Error) => err instanceof ConfigError && /existingPrefix must be true or false, got "yes"/.test(err.message),
    );
  });

  it('migrates keys of the previous layout: every run is still there, in its state, and runs', async () => {
    const prefix = prefixFor('errand-layout-old');
    const now = Date.now();
    const a = await writeLegacyQueue(prefix, 'mail', now);
    const c = await writeLegacyQueue(prefix, 'sms', now);
    const { logger, lines } = capture();
    const b = open(prefix, logger);

    const counts = await b.counts();
    const one = { waiting: 0, queued: 2, scheduled: 1, active: 1, succeeded: 1, failed: 1, cancelled: 0 };
    assert.deepEqual(counts, { mail: one, sms: one }, 'the +inf pin is not counted as a lease');
    assert.equal((await redis.hgetall(layoutKey(prefix))).version, String(LAYOUT_VERSION));
    for (const q of ['mail', 'sms']) {
      assert.equal(await redis.get(queueLayoutKey(prefix, q)), String(LAYOUT_VERSION), `queue ${q} marked`);
      assert.equal(await redis.zscore(`${prefix}:{${q}}:active`, PIN), '9000000000000000', 'the pin moved to its finite score');
    }
    const migrated = lines.filter((l) => l.msg === 'Redis keys migrated to a new layout');
    assert.deepEqual(
      migrated.map((l) => [l.from, l.to, l.queues]),
      [[1, LAYOUT_VERSION, 2]],
    );

    for (const ids of [a, c]) {
      assert.equal((await b.getRun(ids.queued))?.state, 'queued');
      assert.equal((await b.getRun(ids.urgent))?.priority, 5);
      assert.equal((await b.getRun(ids.scheduled))?.state, 'scheduled');
      assert.equal((await b.getRun(ids.active))?.state, 'active');
      assert.equal((await b.getRun(ids.succeeded))?.result, '"done"');
      assert.equal((await b.getRun(ids.failed))?.state, 'failed');
      assert.equal((await b.retry(ids.failed, now)).outcome, 'queued', 'a failed run of the old layout replays');
    }
    // The idempotency key written by the old layout still holds its run.
    const dup = await b.enqueue(
      [
        {
          id: newRunId('mail'),
          task: 'legacy',
          queue: 'mail',
          input: '{}',
          priority: 0,
          runAt: now,
          idempotencyKey: 'key-1',
          idempotencyTtl: 60_000,
        },
      ],
      now,
    );
    assert.deepEqual([dup[0]?.id, dup[0]?.created], [a.queued, false]);

    // A worker's calls, from after the schedule and the lease are due: every unfinished run runs.
    const later = now + 2000;
    const ran = new Set<string>();
    for (let i = 0; i < 10 && ran.size < 10; i++) {
      const { runs } = await b.reserve({ workerId: 'new-worker', queues: ['mail', 'sms'], max: 10, leaseMs: 30_000, now: later });
      for (const r of runs) ran.add(r.id);
      await b.settle(
        'new-worker',
        runs.map((r) => ({ id: r.id, attempt: r.attempt, outcome: 'succeeded' as const, result: '1', retentionMs: 60_000 })),
        later,
      );
    }
    const expected = [a, c].flatMap((ids) => [ids.queued, ids.urgent, ids.scheduled, ids.active, ids.failed]);
    assert.deepEqual([...ran].sort(), expected.sort(), 'queued, scheduled, recovered and replayed runs all ran');
    for (const id of expected) assert.equal((await b.getRun(id))?.state, 'succeeded', id);
    assert.equal((await b.getRun(a.active))?.leaseLosses, 1, 'the expired lease counted as lost');
  });

  it('migrates each queue once when several brokers start together on the previous layout', async () => {
    const prefix = prefixFor('errand-layout-race');
    const now = Date.now();
    const queues = Array.from({ length: 12 }, (_, i) => `q${i}`);
    for (const q of queues) await writeLegacyQueue(prefix, q, now);
    const logs = [capture(), capture(), capture()];
    const racers = logs.map(({ logger }) => open(prefix, logger));
    await Promise.all(racers.map((b) => b.ping()));

    const migrated = logs.flatMap(({ lines }) => lines.filter((l) => l.msg === 'Redis keys migrated to a new layout'));
    const total = migrated.reduce((n, l) => n + (l.queues as number), 0);
    assert.equal(total, queues.length, 'each queue was migrated by exactly one broker');
    assert.equal((await redis.hgetall(layoutKey(prefix))).version, String(LAYOUT_VERSION));
    for (const q of queues) assert.equal(await redis.get(queueLayoutKey(prefix, q)), String(LAYOUT_VERSION));
    const counts = await racers[0]!.counts(queues);
    for (const q of queues) assert.equal(counts[q]?.queued, 2, q);
  });

  it('refuses keys written by a newer Errand, unless their layout says this one may run on them', async () => {
    const prefix = prefixFor('errand-layout-newer');
    await redis.hset(layoutKey(prefix), 'version', String(LAYOUT_VERSION + 1), 'compatible', String(LAYOUT_VERSION + 1), 'at', '0');
    const b = open(prefix);
    await assert.rejects(b.ping(), (err: Error) => {
      assert.ok(err instanceof BrokerConfigError, `a BrokerConfigError, got ${err.name}`);
      assert.match(err.message, new RegExp(`layout version ${LAYOUT_VERSION + 1}, written by a newer Errand`));
      assert.match(err.message, /upgrade Errand, or use another prefix/);
      assert.ok(err.message.includes(layoutKey(prefix)), 'names the key');
      return true;
    });
    const run = { id: newRunId('q'), task: 't', queue: 'q', input: '{}', priority: 0, runAt: Date.now() };
    await assert.rejects(b.enqueue([run], Date.now()), BrokerConfigError, 'nothing is written');
    assert.equal(await redis.exists(`${prefix}:{q}:r:${run.id.slice(-26)}`), 0);

    // A newer layout that declares this version compatible is used as it is, and not lowered.
    await redis.hset(layoutKey(prefix), 'compatible', String(LAYOUT_VERSION));
    await b.enqueue([run], Date.now());
    assert.equal((await b.getRun(run.id))?.state, 'queued');
    assert.equal((await redis.hgetall(layoutKey(prefix))).version, String(LAYOUT_VERSION + 1));
  });

  it('refuses an unreadable layout record with a clear error', async () => {
    for (const write of [(k: string) => redis.hset(k, 'version', 'two'), (k: string) => redis.set(k, '2')]) {
      const prefix = prefixFor('errand-layout-bad');
      await write(layoutKey(prefix));
      await assert.rejects(open(prefix).ping(), (err: Error) => {
        assert.ok(err instanceof BrokerConfigError, `a BrokerConfigError, got ${err.name}: ${err.message}`);
        assert.ok(err.message.includes(layoutKey(prefix)), err.message);
        return true;
      });
    }
  });
});

describe('Lua script conventions (scripts.ts)', () => {
  const common = [
    '--[[ helpers ]]',
    'local rcall = redis.call',
    'local function twice(k)',
    "  return rcall('GET', k) .. rcall('GET', k)",
    'end',
    'local function other()',
    '  return 1',
    'end',
    '',
  ].join('\n');
  const libs = parseLibraries({ 'common.lua': common });
  const script = (directives: string, code = 'return twice(KEYS[1])') =>
    `--[[\n  x: a test script.\n  KEYS[1] a key\n]]\n${directives}\n\n${code}\n`;

  it('takes the key count from the header and expands the helpers named, with what they use', () => {
    const { keys, lua } = expandScript('x.lua', script('--!keys 1\n--!include common.lua: twice'), libs);
    assert.equal(keys, 1);
    assert.match(lua, /local rcall = redis\.call/, 'a helper the named one uses');
    assert.match(lua, /local function twice/);
    assert.doesNotMatch(lua, /other/, 'helpers not named are left out');
  });

  it('refuses a script whose directives do not match its text, naming the file and the problem', () => {
    const cases: [string, string, RegExp][] = [
      ['no key count', script('--!include common.lua: twice'), /x\.lua: needs exactly one `--!keys N` line/],
      [
        'a count the header does not document',
        script('--!keys 2\n--!include common.lua: twice'),
        /declares 2 KEYS, its header documents 1/,
      ],
      [
        'a key read beyond the count',
        script('--!keys 1\n--!include common.lua: twice', 'return twice(KEYS[2])'),
        /reads KEYS\[2\] but declares 1/,
      ],
      [
        'a helper used but not named',
        script('--!keys 1\n--!include common.lua: rcall', 'return twice(KEYS[1]) .. rcall("GET", KEYS[1])'),
        /uses twice without listing/,
      ],
      ['a helper named but not used', script('--!keys 1\n--!include common.lua: twice, other'), /other listed but not used/],
      ['a helper the file lacks', script('--!keys 1\n--!include common.lua: twice, thrice'), /does not define thrice/],
      ['an include without a list', script('--!keys 1\n--!include common.lua'), /an include line must read/],
      ['a library that does not exist', script('--!keys 1\n--!include nope.lua: twice'), /nope\.lua: no such library/],
      ['a helper named twice', script('--!keys 1\n--!include common.lua: twice, twice'), /twice listed twice/],
    ];
    for (const [what, text, message] of cases) {
      assert.throws(() => expandScript('x.lua', text, libs), message, what);
    }
  });

  it('takes helpers from several libraries, each after those it uses, with their opening comments', () => {
    const multi = parseLibraries({
      'jobs.lua': '--[[ jobs ]]\nlocal function job(k)\n  return twice(k) .. base1(k)\nend\nlocal function spare()\n  return 2\nend\n',
      'common.lua': common,
      'base.lua': "--[[ base ]]\nlocal function base1(k)\n  return rcall('TYPE', k)\nend\n",
    });
    const { lua } = expandScript(
      'x.lua',
      script('--!keys 1\n--!include jobs.lua: job\n--!include common.lua: rcall', 'return job(KEYS[1]) .. rcall("GET", KEYS[1])'),
      multi,
    );
    const at = (text: string) => lua.indexOf(text);
    for (const text of ['--[[ helpers ]]', '--[[ base ]]', '--[[ jobs ]]']) assert.ok(at(text) >= 0, text);
    assert.ok(at('local rcall') < at('local function base1'), 'common.lua before base.lua, which uses it');
    assert.ok(at('local function base1') < at('local function job'), 'base.lua before jobs.lua, which uses it');
    assert.ok(at('local function twice') < at('local function job'));
    assert.doesNotMatch(lua, /spare|other|--!include/, 'only what is used, and no directive left');
    assert.throws(
      () => expandScript('x.lua', script('--!keys 1\n--!include common.lua: job', 'return job(KEYS[1])'), multi),
      /common\.lua: does not define job \(jobs\.lua does\)/,
    );
    assert.throws(
      () => expandScript('x.lua', script('--!keys 1\n--!include common.lua: rcall', 'return job(KEYS[1]) .. rcall("GET", KEYS[1])'), multi),
      /uses job without listing them \(job is in jobs\.lua\)/,
    );
  });

  it('refuses libraries that define a name twice, use a later definition, or use each other in a cycle', () => {
    const fn = (name: string, body = 'return 1') => `local function ${name}()\n  ${body}\nend\n`;
    const cases: [string, Record<string, string>, RegExp][] = [
      ['one name in two files', { 'a.lua': fn('f'), 'b.lua': fn('f') }, /b\.lua: defines f, which a\.lua defines too/],
      ['a name used before its definition', { 'a.lua': fn('f', 'return g()') + fn('g') }, /a\.lua: f uses g, defined after it/],
      [
        'a cycle',
        { 'a.lua': fn('f', 'return g()'), 'b.lua': fn('g', 'return h()'), 'c.lua': fn('h', 'return f()') },
        /cycle: a\.lua -> b\.lua -> c\.lua -> a\.lua/,
      ],
      ['two names on one line', { 'a.lua': 'local f, g = 1, 2\n' }, /a\.lua: defines two names on one line/],
    ];
    for (const [what, texts, message] of cases) assert.throws(() => parseLibraries(texts), message, what);
  });

  it('every script of the broker loads, and names the fields of each HMGET in locals on the next line', () => {
    for (const name of SCRIPT_NAMES) assert.ok(scriptSource(name).length > 0, name);
    const dir = new URL('../../../src/broker/redis/lua/', import.meta.url);
    for (const file of readdirSync(dir).filter((f) => f.endsWith('.lua'))) {
      const lines = readFileSync(new URL(file, dir), 'utf8').split('\n');
      for (const [i, line] of lines.entries()) {
        if (/HMGET/.test(line) && /^\s*local (\w+) = redis\.p?call\('HMGET'/.test(line)) {
          const reply = /^\s*local (\w+) =/.exec(line)![1]!;
          assert.match(
            lines[i + 1] ?? '',
            new RegExp(`^\\s*local [\\w, ]+ = ${reply}\\[1\\]`),
            `${file}:${i + 2}: named locals right after HMGET`,
          );
        }
        if (/\bv\[\d+\]/.test(line)) {
          assert.match(line, /^\s*local [\w, ]+ = v\[\d+\](, v\[\d+\])*\s*$/, `${file}:${i + 1}: a field read by position`);
        }
      }
    }
  });
});

/**
 * The source of the last commit before the layout record (layout 1), extracted with `git archive`
 * into a temp dir whose node_modules links to this tree's; null when git or that history is absent.
 */
function previousRelease(): { root: string; commit: string } | null {
  try {
    const git = (...args: string[]) =>
      execFileSync('git', args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const added = git('log', '--diff-filter=A', '--format=%H', '--', 'src/broker/redis/layout.ts').split('\n').pop();
    if (!added) return null;
    const commit = git('rev-parse', `${added}^`);
    const root = tempDir('errand-layout-old');
    execFileSync('sh', ['-c', `git archive ${commit} src package.json | tar -x -C "${root}"`], { cwd: ROOT, stdio: 'ignore' });
    symlinkSync(join(ROOT, 'node_modules'), join(root, 'node_modules'));
    return { root, commit };
  } catch {
    return null;
  }
}

const old = previousRelease();
after(() => {
  if (old) rmSync(old.root, { recursive: true, force: true });
});

describe('rolling deploy', { skip: old ? false : 'needs git and the history before src/broker/redis/layout.ts' }, () => {
  const procs: Proc[] = [];
  after(async () => {
    await Promise.all(procs.map((p) => stopProc(p, 5000)));
  });

  it('a worker of the previous layout and one of this layout share a queue through the migration; the old one is killed; nothing is lost', async () => {
    const prefix = prefixFor('errand-layout-roll');
    const env = { ERRAND_BROKER_URL: URL_, ERRAND_PREFIX: prefix };
    const worker = join(ROOT, 'test/fixtures/layout-worker.ts');
    const done = `${prefix}:test:done`;
    const doneBy = async () => {
      const entries = await redis.lrange(done, 0, -1);
      return { entries, ns: new Set(entries.map((e) => Number(e.split(':')[0]))) };
    };

    // 1. The old worker alone: it enqueues 0..49 and works (run 7 never ends there: its lease is
    // held until the process dies); it never writes a layout record.
    assert.ok(!existsSync(join(old!.root, 'src/broker/redis/layout.ts')), `the old tree (${old!.commit}) predates the layout record`);
    const oldProc = spawnNode([worker, old!.root, 'old', '0', '50', '--after-layout', '150', '50', '--hang', '7'], env);
    procs.push(oldProc);
    await waitFor(async () => (await redis.llen(done)) >= 10, { timeoutMs: 30_000, message: 'the old worker ran 10 runs' });
    assert.equal(await redis.exists(layoutKey(prefix)), 0, 'the previous layout has no record');

    // 2. A new worker joins: it migrates. The test enqueues 50..149 with this tree's broker; the
    // old worker, seeing the record, enqueues 150..199 in its own layout.
    const newProc = spawnNode([worker, ROOT, 'new'], env);
    procs.push(newProc);
    await waitFor(() => newProc.stdout().includes('started new'), { timeoutMs: 30_000, message: 'the new worker started' });
    assert.equal((await redis.hgetall(layoutKey(prefix))).version, String(LAYOUT_VERSION));
    const b = open(prefix);
    const now = Date.now();
    await b.enqueue(
      Array.from({ length: 100 }, (_, i) => ({
        id: newRunId('rolling'),
        task: 'rolling_echo',
        queue: 'rolling',
        input: JSON.stringify({ n: 50 + i }),
        priority: 0,
        runAt: now,
      })),
      now,
    );
    await waitFor(() => oldProc.stdout().includes('enqueued after layout old'), {
      timeoutMs: 30_000,
      message: 'the old worker enqueued after the migration',
    });

    // 3. The old worker dies mid-work (SIGKILL): its leases expire and the new worker takes them.
    await waitFor(async () => (await redis.lrange(done, 0, -1)).some((e) => e.endsWith(':new')), { timeoutMs: 30_000 });
    oldProc.child.kill('SIGKILL');
    await oldProc.exited;

    await waitFor(async () => (await doneBy()).ns.size === 200 && (await b.counts(['rolling'])).rolling?.succeeded === 200, {
      timeoutMs: 60_000,
      message: 'every run done once at least, and counted succeeded',
    });
    const counts = (await b.counts(['rolling'])).rolling;
    assert.deepEqual(counts, { waiting: 0, queued: 0, scheduled: 0, active: 0, succeeded: 200, failed: 0, cancelled: 0 });
    const { entries } = await doneBy();
    assert.ok(
      entries.some((e) => e.endsWith(':old')),
      'the old worker ran some',
    );
    assert.ok(
      entries.some((e) => e.endsWith(':new')),
      'the new worker ran some',
    );
    assert.ok(entries.includes('7:new') && !entries.includes('7:old'), 'the lease the old worker held was recovered by the new one');
    await stopProc(newProc, 10_000);
  });
});

function clusterUnsupported(): string | undefined {
  const r = spawnSync('redis-cli', ['--cluster', 'help'], { encoding: 'utf8', timeout: 10_000 });
  if (r.error) return `redis-cli cannot be run: ${r.error.message}`;
  if (!/create/.test(`${r.stdout}${r.stderr}`)) return 'this redis-cli has no --cluster create';
  return undefined;
}

describe('redis layout on a Redis Cluster', { skip: requires('redis-cli --cluster (Redis Cluster tests)', clusterUnsupported()) }, () => {
  let cluster: OwnCluster | undefined;
  before(async () => {
    cluster = await startCluster(tempDir('errand-layout-cluster'));
  });
  after(async () => {
    await cluster?.stop();
  });

  it('migrates queues spread over every node, each once, with brokers starting together', async () => {
    const c = cluster!;
    const client = new Cluster(c.nodes.map((n) => ({ host: '127.0.0.1', port: n.port })));
    try {
      const prefix = uniquePrefix('errand-layout-cl');
      const now = Date.now();
      // These four hash to slots of all three nodes (see test/fixtures/echo-tasks.ts).
      const queues = ['alpha', 'bravo', 'golf', 'delta'];
      for (const q of queues) await writeLegacyQueue(prefix, q, now, client);
      const logs = [capture(), capture(), capture()];
      const racers = logs.map(({ logger }) => {
        const b = new RedisBroker({ url: c.url, prefix, logger });
        brokers.push(b);
        return b;
      });
      await Promise.all(racers.map((b) => b.ping()));

      const migrated = logs.flatMap(({ lines }) => lines.filter((l) => l.msg === 'Redis keys migrated to a new layout'));
      assert.equal(
        migrated.reduce((n, l) => n + (l.queues as number), 0),
        queues.length,
        'each queue migrated by one broker',
      );
      assert.equal((await client.hgetall(layoutKey(prefix))).version, String(LAYOUT_VERSION));
      for (const q of queues) {
        const marker = queueLayoutKey(prefix, q);
        assert.equal(await client.get(marker), String(LAYOUT_VERSION));
        assert.equal(
          await client.cluster('KEYSLOT', marker),
          await client.cluster('KEYSLOT', `${prefix}:{${q}}:active`),
          "the marker is in its queue's slot",
        );
        assert.equal(await client.zscore(`${prefix}:{${q}}:active`, PIN), '9000000000000000');
      }
      const counts = await racers[0]!.counts(queues);
      for (const q of queues)
        assert.deepEqual(counts[q], { waiting: 0, queued: 2, scheduled: 1, active: 1, succeeded: 1, failed: 1, cancelled: 0 }, q);
    } finally {
      client.disconnect();
    }
  });
});
