// Redis over TLS (rediss://) and with an ACL user, each on a redis-server of the test's own (the
// machine's shared Redis is never touched):
// - TLS: certificates made with openssl (a CA and a server certificate for 127.0.0.1); an Errand app
//   trusting the CA (ERRAND_REDIS_CA, or tls: { ca }) enqueues, and an `errand worker` process runs
//   the runs; without the CA (or with another one) the worker exits 2 at once, saying what to set.
// - ACL: `ACL SETUSER errand on >secret ~* &* +@all` with the default user off; the app works as
//   redis://errand:secret@...; a wrong password (or none) is a clear error at start: worker.start()
//   rejects with BrokerConfigError, `errand worker` exits 2 and the service exits 1, each with one
//   line, no stack trace and no password, instead of retrying forever.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connectBroker } from '../../../src/broker/connect.ts';
import { createClient, parseRedisUrl, tlsFromEnv } from '../../../src/broker/redis/connection.ts';
import { RedisBroker } from '../../../src/broker/redis/redis-broker.ts';
import { BrokerConfigError, BrokerUnavailableError, ConfigError, createErrand } from '../../../src/index.ts';
import { defineEchoTasks, type Echo } from '../../fixtures/echo-tasks.ts';
import { quietLogger } from '../../fixtures/brokers.ts';
import { requires } from '../../fixtures/prereq.ts';
import { APP_MAIN, CLI, exitOf, type Proc, spawnNode, stopProc } from '../../fixtures/procs.ts';
import { freePort, makeTlsFiles, type OwnRedis, redisCli, startRedisServer, type TlsFiles } from '../../fixtures/redis-servers.ts';
import { tempDir, uniquePrefix, waitFor, within } from '../../helpers.ts';

const FIXTURE = new URL('../../fixtures/echo-tasks.ts', import.meta.url).pathname;
/** A start-up failure must come within this long (a safety net, far above what it takes). */
const EXIT_LIMIT_MS = 30_000;

/** Why the TLS tests cannot run here, or undefined: redis-server must be built with TLS. */
function tlsUnsupported(): string | undefined {
  const r = spawnSync('redis-server', ['--port', '0', '--tls-port', '1', '--tls-cert-file', '/nonexistent', '--save', ''], {
    encoding: 'utf8',
    timeout: 10_000,
  });
  if (r.error) return `redis-server cannot be run: ${r.error.message}`;
  const out = `${r.stdout}${r.stderr}`;
  if (/TLS|tls-ca-cert/.test(out) && !/Bad directive/i.test(out)) return undefined;
  return `this redis-server is built without TLS (redis-server --tls-port answered: ${out.trim().split('\n').pop()})`;
}

/** No stack trace, and the secret never appears. */
function assertCleanError(stderr: string, secret?: string): void {
  assert.doesNotMatch(stderr, /\n\s+at /, `no stack trace:\n${stderr}`);
  if (secret) assert.ok(!stderr.includes(secret), `the password is not printed:\n${stderr}`);
}

const skipTls = requires('Redis with TLS', tlsUnsupported());

describe('Redis over TLS (rediss://)', { skip: skipTls }, () => {
  let files: TlsFiles;
  let server: OwnRedis;
  let url: string;
  const procs: Proc[] = [];

  before(async () => {
    const dir = tempDir('errand-tls');
    files = makeTlsFiles(join(dir, 'certs'));
    const port = await freePort();
    server = await startRedisServer(
      join(dir, 'redis'),
      [
        '--port',
        '0',
        '--tls-port',
        String(port),
        '--tls-cert-file',
        files.cert,
        '--tls-key-file',
        files.key,
        '--tls-ca-cert-file',
        files.ca,
        '--tls-auth-clients',
        'no',
      ],
      { port, ready: async (p) => (await redisCli(p, ['PING'], ['--tls', '--cacert', files.ca], 2000)) === 'PONG' },
    );
    url = `rediss://127.0.0.1:${port}`;
  });

  after(async () => {
    await Promise.all(procs.map((p) => stopProc(p)));
    await server?.stop();
  });

  it('an app trusting the CA enqueues, and an `errand worker` process with ERRAND_REDIS_CA runs the runs', async () => {
    const prefix = uniquePrefix('errand-tls');
    const broker = new RedisBroker({ url, prefix, tls: { ca: readFileSync(files.ca) } });
    const app = createErrand({ broker, logger: quietLogger });
    const tasks = defineEchoTasks(app);
    const worker = spawnNode([CLI, 'worker', FIXTURE, '--broker', url, '--concurrency', '4'], {
      ERRAND_REDIS_CA: files.ca,
      ERRAND_PREFIX: prefix,
    });
    procs.push(worker);
    try {
      const handles = await Promise.all(tasks.map((t, i) => t.enqueue({ n: i })));
      const results = (await Promise.all(handles.map((h) => h.result({ timeout: 60_000 })))) as Echo[];
      assert.deepEqual(
        results.map((r) => r.n),
        [0, 1, 2, 3],
      );
      assert.ok(
        results.every((r) => r.pid === worker.child.pid),
        'run by the worker process',
      );
      // connectBroker reads ERRAND_REDIS_CA for rediss:// URLs.
      const saved = process.env.ERRAND_REDIS_CA;
      process.env.ERRAND_REDIS_CA = files.ca;
      try {
        const viaEnv = await connectBroker(url, { prefix, logger: quietLogger });
        try {
          await viaEnv.ping();
          assert.equal((await viaEnv.getRun(handles[0]!.id))?.state, 'succeeded');
        } finally {
          await viaEnv.close();
        }
      } finally {
        if (saved === undefined) delete process.env.ERRAND_REDIS_CA;
        else process.env.ERRAND_REDIS_CA = saved;
      }
    } finally {
      assert.equal(await stopProc(worker), 0, worker.stderr());
      await app.close();
    }
  });

  it('without the CA, or trusting another CA, `errand worker` exits 2 at once naming the problem and ERRAND_REDIS_CA', async () => {
    for (const ca of [undefined, files.otherCa]) {
      const p = spawnNode([CLI, 'worker', FIXTURE, '--broker', url], ca ? { ERRAND_REDIS_CA: ca } : {});
      procs.push(p);
      const code = await exitOf(p, EXIT_LIMIT_MS, `errand worker trusting ${ca ?? 'the system CAs'}`);
      assert.equal(code, 2, p.stderr());
      assert.match(p.stderr(), /^errand: The TLS certificate of Redis at rediss:\/\/127\.0\.0\.1:\d+ is not trusted \(\w+/m);
      assert.match(p.stderr(), /set ERRAND_REDIS_CA to the PEM file of the CA/);
      assertCleanError(p.stderr());
    }
  });

  it('an unreadable ERRAND_REDIS_CA is a configuration error naming the variable and the file', async () => {
    const p = spawnNode([CLI, 'worker', FIXTURE, '--broker', url], { ERRAND_REDIS_CA: '/nonexistent/ca.pem' });
    procs.push(p);
    assert.equal(await exitOf(p, EXIT_LIMIT_MS, 'errand worker with a missing CA file'), 2, p.stderr());
    assert.match(p.stderr(), /^errand: ERRAND_REDIS_CA: cannot read the CA file "\/nonexistent\/ca\.pem": ENOENT/m);
    assertCleanError(p.stderr());
    assert.throws(() => tlsFromEnv({ ERRAND_REDIS_CA: '/nonexistent/ca.pem' }), ConfigError);
    assert.equal(tlsFromEnv({}), undefined);
  });
});

describe('Redis ACL user (redis://user:password@...)', () => {
  let server: OwnRedis;
  let port: number;
  const procs: Proc[] = [];
  const good = () => `redis://errand:secret@127.0.0.1:${port}`;
  const WRONG = 'not-the-secret-9f1c';

  before(async () => {
    server = await startRedisServer(join(tempDir('errand-acl'), 'redis'), []);
    port = server.port;
    assert.equal(await redisCli(port, ['ACL', 'SETUSER', 'errand', 'on', '>secret', '~*', '&*', '+@all']), 'OK');
    assert.equal(await redisCli(port, ['ACL', 'SETUSER', 'default', 'off']), 'OK');
  });

  after(async () => {
    await Promise.all(procs.map((p) => stopProc(p)));
    await server?.stop();
  });

  it('an app authenticated as the ACL user enqueues and runs (every connection as that user)', async () => {
    const prefix = uniquePrefix('errand-acl');
    const app = createErrand({ broker: good(), prefix, logger: quietLogger });
    const tasks = defineEchoTasks(app);
    const worker = app.worker({ concurrency: 2 });
    try {
      await worker.start();
      const handles = await Promise.all(tasks.map((t, i) => t.enqueue({ n: i })));
      const results = (await Promise.all(handles.map((h) => h.result({ timeout: 30_000 })))) as Echo[];
      assert.deepEqual(
        results.map((r) => r.queue),
        ['alpha', 'bravo', 'golf', 'delta'],
      );
      const clients = await redisCli(port, ['CLIENT', 'LIST'], ['--user', 'errand', '--pass', 'secret', '--no-auth-warning']);
      const ours = clients.split('\n').filter((l) => / name=errand:/.test(l));
      assert.ok(ours.length >= 2, `Errand's connections are listed:\n${clients}`);
      for (const line of ours) assert.match(line, / user=errand /, line);
    } finally {
      await worker.stop();
      await app.close();
    }
  });

  it('a SUBSCRIBE written during the handshake (after AUTH, before ready) succeeds, with no ready-check error', async () => {
    // Regression: ioredis's ready check (INFO) met the subscribed connection and failed, the
    // reconnect rejected the SUBSCRIBE, and cancel notices and watches were lost.
    const client = createClient(parseRedisUrl(good()), 'subscriber');
    const errors: string[] = [];
    client.on('error', (err: Error) => errors.push(err.message));
    try {
      const subscribed = new Promise<unknown>((resolve, reject) => {
        client.once('connect', () => {
          assert.equal(client.status, 'connect', 'connected, not ready yet');
          client.subscribe('errand-acl-probe').then(resolve, reject);
        });
      });
      await client.connect();
      await within(subscribed, 10_000, 'SUBSCRIBE during the handshake');
      await waitFor(() => client.status === 'ready', { timeoutMs: 10_000, message: 'the subscriber to be ready' });
      assert.deepEqual(errors, []);
    } finally {
      client.disconnect();
    }
  });

  it('a wrong password, or none: worker.start() rejects with BrokerConfigError at once, the password never shown', async () => {
    for (const [url, expected] of [
      [`redis://errand:${WRONG}@127.0.0.1:${port}`, /refused the credentials \(WRONGPASS/],
      [`redis://127.0.0.1:${port}`, /refused the credentials \(NOAUTH/],
    ] as const) {
      const app = createErrand({ broker: url, prefix: uniquePrefix('errand-acl'), logger: quietLogger });
      defineEchoTasks(app);
      const worker = app.worker();
      try {
        await assert.rejects(worker.start(), (err: unknown) => {
          assert.ok(err instanceof BrokerConfigError, String(err));
          assert.ok(err instanceof BrokerUnavailableError, 'still a BrokerUnavailableError (HTTP answers 503)');
          assert.match(err.message, expected);
          assert.match(err.message, /check the user name and password in the broker URL/);
          assert.ok(!err.message.includes(WRONG), err.message);
          return true;
        });
        assert.equal(worker.state, 'new', 'the worker did not start');
      } finally {
        await worker.stop();
        await app.close();
      }
    }
  });

  it('`errand worker` with a wrong password exits 2 with one line naming WRONGPASS, not a retry loop', async () => {
    const p = spawnNode([CLI, 'worker', FIXTURE, '--broker', `redis://errand:${WRONG}@127.0.0.1:${port}`]);
    procs.push(p);
    assert.equal(await exitOf(p, EXIT_LIMIT_MS, 'errand worker with a wrong password'), 2, p.stderr());
    const lines = p.stderr().trim().split('\n');
    assert.match(
      lines.at(-1)!,
      /^errand: Redis at redis:\/\/errand:\*\*\*@127\.0\.0\.1:\d+ refused the credentials \(WRONGPASS invalid username-password pair/,
    );
    assertCleanError(p.stderr(), WRONG);
  });

  it('the service (node app/main.ts worker, and api) with a wrong password stops at start with one line naming REDIS_URL, exit 2', async () => {
    for (const mode of ['worker', 'api']) {
      const p = spawnNode([APP_MAIN, mode], {
        REDIS_URL: `redis://errand:${WRONG}@127.0.0.1:${port}`,
        DATA_DIR: tempDir('errand-acl-app'),
        PORT: String(await freePort()),
      });
      procs.push(p);
      // A configuration error (exit 2), as for `errand worker` and every other bad variable.
      assert.equal(await exitOf(p, EXIT_LIMIT_MS, `node app/main.ts ${mode} with a wrong password`), 2, p.stderr());
      assert.match(
        p.stderr(),
        /^Configuration error: REDIS_URL: Redis at redis:\/\/errand:\*\*\*@127\.0\.0\.1:\d+ refused the credentials \(WRONGPASS/m,
      );
      assertCleanError(p.stderr(), WRONG);
    }
  });
});
