// Configuration from the environment: defaults, and one clear message per bad variable.
import assert from 'node:assert/strict';
import { join, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { brokerUrl, loadConfig } from '../../app/config.ts';
import { defaultBrokerUrl } from '../../src/broker/connect.ts';
import { ConfigError } from '../../src/index.ts';

describe('loadConfig', () => {
  it('has defaults that run everything on one machine', () => {
    const c = loadConfig({});
    assert.equal(c.port, 8000);
    assert.equal(c.host, '127.0.0.1');
    assert.equal(c.dataDir, resolve('./data'));
    assert.equal(c.sqlitePath, join(resolve('./data'), 'errand.db'));
    assert.equal(c.outboxDir, join(resolve('./data'), 'outbox'));
    assert.equal(c.redisUrl, undefined);
    assert.equal(c.databaseUrl, undefined);
    assert.equal(c.smtpUrl, undefined);
    assert.equal(c.mailFrom, 'welcome@example.com');
    assert.equal(c.workerConcurrency, 10);
    assert.equal(brokerUrl(c), `sqlite:${c.sqlitePath}`);
  });

  it('reads every variable; an empty one counts as unset', () => {
    const c = loadConfig({
      PORT: '9000',
      HOST: '0.0.0.0',
      DATA_DIR: '/tmp/x',
      REDIS_URL: 'redis://:secret@127.0.0.1:6379/2',
      ERRAND_PREFIX: 'svc-a',
      DATABASE_URL: 'postgresql://u:p@db/app',
      SMTP_URL: 'smtps://u:p@mail.example.com:465',
      MAIL_FROM: 'Errand <hello@errand.dev>',
      WORKER_CONCURRENCY: '50',
      LOG_LEVEL: 'debug',
    });
    assert.equal(c.port, 9000);
    assert.equal(c.host, '0.0.0.0');
    assert.equal(c.sqlitePath, '/tmp/x/errand.db');
    assert.equal(brokerUrl(c), 'redis://:secret@127.0.0.1:6379/2');
    assert.equal(c.prefix, 'svc-a');
    assert.equal(c.mailFrom, 'Errand <hello@errand.dev>');
    assert.equal(c.workerConcurrency, 50);
    assert.equal(loadConfig({ PORT: '', REDIS_URL: ' ' }).port, 8000);
  });

  it('takes the broker from ERRAND_BROKER_URL, else REDIS_URL, else DATA_DIR: the same order as the library and the errand CLI', () => {
    const envs: Record<string, string>[] = [
      { ERRAND_BROKER_URL: 'redis://a:6379/1', REDIS_URL: 'redis://b:6379' },
      { ERRAND_BROKER_URL: 'sqlite:/srv/errand/broker.db', REDIS_URL: 'redis://b:6379' },
      { ERRAND_BROKER_URL: 'rediss+cluster://a:7000,b:7001' },
      { REDIS_URL: 'redis://b:6379/3' },
    ];
    for (const env of envs) {
      const c = loadConfig(env);
      assert.equal(brokerUrl(c), defaultBrokerUrl(env), JSON.stringify(env));
      assert.equal(c.brokerVariable, env.ERRAND_BROKER_URL ? 'ERRAND_BROKER_URL' : 'REDIS_URL');
    }
    assert.equal(loadConfig({}).brokerVariable, 'DATA_DIR');
  });

  const bad: [Record<string, string>, RegExp][] = [
    [{ PORT: 'abc' }, /^PORT must be an integer from 1 to 65535, got "abc"$/],
    [{ PORT: '0' }, /^PORT must be an integer from 1 to 65535, got "0"$/],
    [{ PORT: '8000.5' }, /^PORT must be an integer/],
    [{ PORT: '-1' }, /^PORT must be an integer/],
    [{ HOST: 'local host' }, /^HOST must be a host name or an IP address/],
    [{ REDIS_URL: 'http://127.0.0.1:6379' }, /^REDIS_URL must start with redis:\/\/ or rediss:\/\//],
    [{ REDIS_URL: 'redis://:hunter2@' }, /^REDIS_URL .*got "redis:\/\/:\*\*\*@"/],
    [{ ERRAND_PREFIX: 'a b' }, /^ERRAND_PREFIX must be/],
    [{ REDIS_URL: 'redis://127.0.0.1:6379/app' }, /^REDIS_URL has a path that is not a database index \("\/app"/],
    [{ ERRAND_BROKER_URL: 'amqp://rabbit' }, /^ERRAND_BROKER_URL must start with redis:\/\/, rediss:\/\/, .* or sqlite:/],
    [{ ERRAND_BROKER_URL: 'sqlite:' }, /^ERRAND_BROKER_URL must give a file path after sqlite:/],
    [{ ERRAND_BROKER_URL: 'redis://:pw@' }, /^ERRAND_BROKER_URL .*\*\*\*/],
    [
      { ERRAND_REDIS_CA: '/nonexistent/ca.pem' },
      /^ERRAND_REDIS_CA must be a readable PEM file of the CA certificate\(s\) \(ENOENT\), got "\/nonexistent\/ca.pem"$/,
    ],
    [{ DATABASE_URL: 'sqlite:x.db' }, /^DATABASE_URL must start with postgres:\/\//],
    [{ SMTP_URL: 'mail.example.com' }, /^SMTP_URL must be a URL like smtp:\/\//],
    [{ SMTP_URL: 'smtp://u:topsecret@mail:99999' }, /^SMTP_URL .*\*\*\*/],
    [{ MAIL_FROM: 'welcome' }, /^MAIL_FROM must be an email address or "Name <address>", got "welcome"$/],
    [{ MAIL_FROM: 'a@b.c, d@e.f' }, /^MAIL_FROM must be/],
    [{ WORKER_CONCURRENCY: 'ten' }, /^WORKER_CONCURRENCY must be an integer from 1 to 1000, got "ten"$/],
    [{ LOG_LEVEL: 'loud' }, /^LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent, got "loud"$/],
  ];
  for (const [env, message] of bad) {
    it(`refuses ${JSON.stringify(env)}`, () => {
      assert.throws(
        () => loadConfig(env),
        (err: unknown) =>
          err instanceof ConfigError && message.test(err.message) && !err.message.includes('topsecret') && !err.message.includes('hunter2'),
      );
    });
  }
});
