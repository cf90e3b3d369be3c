// The pieces of src/core that several layers used to copy: broker URLs (one parser for
// connectBroker, the Redis broker and the service's configuration), the mapping of a failed broker
// call, the reader of a stored run error, and how a value given is shown (core/show.ts).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { connectBroker } from '../../src/broker/connect.ts';
import { BrokerConfigError, BrokerUnavailableError, brokerFailure, ConfigError, RunNotFoundError } from '../../src/core/errors.ts';
import { closestName, show, unknownKey } from '../../src/core/show.ts';
import { errorLine, readRunError } from '../../src/core/run-info.ts';
import { parseRedisUrl, redactUrl, redisUrlProblem } from '../../src/core/urls.ts';

describe('core/urls: broker URLs', () => {
  it('redactUrl hides the password and nothing else', () => {
    assert.equal(redactUrl('redis://user:secret@host:6379/2'), 'redis://user:***@host:6379/2');
    assert.equal(redactUrl('redis://:secret@host:6379'), 'redis://:***@host:6379');
    assert.equal(redactUrl('redis://host:6379'), 'redis://host:6379');
    assert.equal(redactUrl('sqlite:./data/errand.db'), 'sqlite:./data/errand.db');
  });

  it('accepts single-server and cluster URLs', () => {
    for (const url of [
      'redis://h:6379',
      'rediss://u:p@h:6380/0',
      'redis://h',
      'redis+cluster://a:7000,b:7001',
      'rediss+cluster://u:p%40s@a:1/',
    ])
      assert.equal(redisUrlProblem(url), undefined, url);
    assert.deepEqual(parseRedisUrl('redis+cluster://u:p%40s@a:1,[::1]:2,c'), {
      kind: 'cluster',
      nodes: [
        { host: 'a', port: 1 },
        { host: '::1', port: 2 },
        { host: 'c', port: 6379 },
      ],
      username: 'u',
      password: 'p@s',
      tls: false,
    });
  });

  it('says what is wrong, the same for the library and the service configuration', () => {
    const cases: [string, RegExp][] = [
      ['http://h:6379', /^must start with redis:\/\/ or rediss:\/\//],
      ['redis://', /^has no host/],
      ['redis://h:6379/app', /^has a path that is not a database index \("\/app"/],
      ['redis://h:70000', /^(has a port outside 1 to 65535|must be a URL)/],
      ['redis+cluster://', /^must list the cluster's nodes/],
      ['redis+cluster://a:1,,b:2', /^has a node that is not host:port/],
      ['redis+cluster://a:99999', /^has a port outside 1 to 65535/],
      ['redis+cluster://a:1/0', /^must list the cluster's nodes/],
    ];
    for (const [url, why] of cases) {
      assert.match(redisUrlProblem(url) ?? 'accepted', why, url);
      assert.throws(
        () => parseRedisUrl(url),
        (err: Error) => err instanceof ConfigError && why.test(err.message.replace(/^Redis URL "[^"]*" /, '')),
      );
    }
  });

  it("connectBroker refuses a bad Redis URL with the parser's reason and the password hidden", async () => {
    await assert.rejects(connectBroker('redis://:hunter2@h:6379/app'), (err: Error) => {
      assert.ok(err instanceof ConfigError);
      assert.match(err.message, /^Broker URL "redis:\/\/:\*\*\*@h:6379\/app" has a path that is not a database index/);
      assert.doesNotMatch(err.message, /hunter2/);
      return true;
    });
  });
});

describe('core/errors: brokerFailure, the one mapping of a failed broker call', () => {
  it('keeps a BrokerUnavailableError (and a BrokerConfigError) as it is', () => {
    const down = new BrokerUnavailableError('down');
    const refused = new BrokerConfigError('bad password');
    assert.equal(brokerFailure(down), down);
    assert.equal(brokerFailure(refused), refused);
  });

  it('wraps anything else, saying what failed and keeping the cause', () => {
    const raw = new Error('ECONNRESET');
    const e = brokerFailure(raw);
    assert.ok(e instanceof BrokerUnavailableError);
    assert.equal(e.message, 'Broker call failed: ECONNRESET');
    assert.equal(e.cause, raw);
    assert.equal(brokerFailure('boom', 'Cannot connect to the broker').message, 'Cannot connect to the broker: boom');
    assert.ok(brokerFailure(new RunNotFoundError('x')) instanceof BrokerUnavailableError);
  });
});

describe('core/run-info: readRunError, the one reader of a stored error', () => {
  it('reads a stored RunError, and anything else found in storage without throwing', () => {
    assert.equal(readRunError(undefined), undefined);
    assert.deepEqual(readRunError('{"name":"TypeError","message":"x","stack":"s","reason":"timeout"}'), {
      name: 'TypeError',
      message: 'x',
      reason: 'timeout',
      stack: 's',
    });
    assert.deepEqual(readRunError('{"message":42}'), { name: 'Error', message: '42' });
    assert.deepEqual(readRunError('"just text"'), { name: 'Error', message: 'just text' });
    assert.deepEqual(readRunError('[1,2]'), { name: 'Error', message: '1,2' });
    assert.deepEqual(readRunError('{not json'), { name: 'Error', message: '{not json' });
    assert.equal(errorLine({ name: 'E', message: 'm', reason: 'lease_lost' }), 'E: m (lease_lost)');
  });
});

describe('core/show: a value as given, and the name an unknown option probably meant', () => {
  it('show quotes strings and shows the rest as it prints', () => {
    assert.equal(show('5'), '"5"');
    assert.equal(show(5), '5');
    assert.equal(show(Number.NaN), 'NaN');
    assert.equal(show(undefined), 'undefined');
    assert.equal(show(null), 'null');
    assert.equal(
      show(() => 1),
      'a function',
    );
    assert.equal(show({ a: 1 }), '{"a":1}');
    assert.equal(show(new Date(Number.NaN)), 'Invalid Date');
    assert.equal(show('x'.repeat(100)), JSON.stringify(`${'x'.repeat(60)}...`));
  });

  it('closestName: another case, a prefix, a suffix, or two edits at most; nothing far off', () => {
    const names = ['timeout', 'retries', 'retention', 'broker', 'shutdownGraceMs', 'maxAttempts'];
    assert.equal(closestName('timeOut', names), 'timeout');
    assert.equal(closestName('retires', names), 'retries');
    assert.equal(closestName('brokerUrl', names), 'broker');
    assert.equal(closestName('graceMs', names), 'shutdownGraceMs');
    assert.equal(closestName('maxAttempt', names), 'maxAttempts');
    assert.equal(closestName('colour', names), undefined);
  });

  it('unknownKey names the first unknown key with its guess and the known ones', () => {
    assert.equal(unknownKey({ timeout: 1 }, ['timeout'], 'a task option'), undefined);
    assert.equal(
      unknownKey({ timeout: 1, retires: 2 }, ['timeout', 'retries'], 'a task option'),
      '"retires" is not a task option (did you mean "retries"? known: timeout, retries)',
    );
  });
});
