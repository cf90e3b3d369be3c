// The Celery wire format without Python: the message Celery 5.2.6 sends (docs/celery.md quotes it)
// decodes; what we build decodes to the same fields; anything that is not a JSON protocol 2 message
// is refused with a reason; sendTask and the worker refuse bad options with errors naming them.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  buildMessage,
  CeleryMessageError,
  createCeleryClient,
  createCeleryWorker,
  decodeMessage,
  exceptionInfo,
  queueListFor,
} from '../../src/celery/index.ts';
import { checkSendOptions } from '../../src/celery/client.ts';
import { InputError, ConfigError } from '../../src/index.ts';

// As Celery 5.2.6 (kombu 5.2.4) left it on the `celery` list for
// app.send_task('tasks.send_welcome_email', args=['john@example.com', 'john'], kwargs={'lang': 'en'}).
const FROM_CELERY = JSON.stringify({
  body: 'W1siam9obkBleGFtcGxlLmNvbSIsICJqb2huIl0sIHsibGFuZyI6ICJlbiJ9LCB7ImNhbGxiYWNrcyI6IG51bGwsICJlcnJiYWNrcyI6IG51bGwsICJjaGFpbiI6IG51bGwsICJjaG9yZCI6IG51bGx9XQ==',
  'content-encoding': 'utf-8',
  'content-type': 'application/json',
  headers: {
    lang: 'py',
    task: 'tasks.send_welcome_email',
    id: '75f142b3-0569-4f61-9358-a154d192a8b8',
    shadow: null,
    eta: null,
    expires: null,
    group: null,
    group_index: null,
    retries: 0,
    timelimit: [null, null],
    root_id: '75f142b3-0569-4f61-9358-a154d192a8b8',
    parent_id: null,
    argsrepr: "['john@example.com', 'john']",
    kwargsrepr: "{'lang': 'en'}",
    origin: 'gen20295@vm',
    ignore_result: false,
  },
  properties: {
    correlation_id: '75f142b3-0569-4f61-9358-a154d192a8b8',
    reply_to: '9b8b88b7-6641-355f-a3ef-d96f8fffe988',
    delivery_mode: 2,
    delivery_info: { exchange: '', routing_key: 'celery' },
    priority: 0,
    body_encoding: 'base64',
    delivery_tag: '1b3b7dd4-32c5-4366-aa02-8cc5bb295b5e',
  },
});

describe('Celery protocol 2 messages', () => {
  test('decodes the message Celery 5.2.6 sends', () => {
    const m = decodeMessage(FROM_CELERY);
    assert.equal(m.task, 'tasks.send_welcome_email');
    assert.equal(m.id, '75f142b3-0569-4f61-9358-a154d192a8b8');
    assert.deepEqual(m.args, ['john@example.com', 'john']);
    assert.deepEqual(m.kwargs, { lang: 'en' });
    assert.deepEqual(m.embed, { callbacks: null, errbacks: null, chain: null, chord: null });
    assert.equal(m.routingKey, 'celery');
    assert.equal(m.deliveryTag, '1b3b7dd4-32c5-4366-aa02-8cc5bb295b5e');
    assert.equal(m.eta, undefined);
  });

  test('what buildMessage writes decodes to the same fields, with times as Python writes them', () => {
    const eta = new Date('2030-01-02T03:04:05.678Z');
    const env = buildMessage('tasks.add', {
      args: [1, 'two'],
      kwargs: { k: [1] },
      queue: 'q',
      eta,
      retries: 2,
      priority: 6,
      parentId: 'p',
    });
    assert.equal(env.headers.eta, '2030-01-02T03:04:05.678+00:00');
    assert.equal(env.headers.root_id, env.headers.id);
    const m = decodeMessage(JSON.stringify(env));
    assert.deepEqual([m.args, m.kwargs, m.retries, m.priority, m.parentId, m.routingKey], [[1, 'two'], { k: [1] }, 2, 6, 'p', 'q']);
    assert.equal(m.eta?.getTime(), eta.getTime());
    // Python's isoformat with microseconds, and a naive time (UTC), are read too.
    const py = JSON.parse(JSON.stringify(env));
    py.headers.eta = '2030-01-02T03:04:05.678901';
    assert.equal(decodeMessage(JSON.stringify(py)).eta?.getTime(), eta.getTime());
  });

  test('priorities map to kombu lists: 0-2 the queue, 3-5 queue\\x06\\x163, ...', () => {
    assert.deepEqual(
      [0, 2, 3, 5, 6, 9].map((p) => queueListFor('celery', p)),
      ['celery', 'celery', 'celery\x06\x163', 'celery\x06\x163', 'celery\x06\x166', 'celery\x06\x169'],
    );
  });

  test('pickle, yaml, msgpack and malformed messages are refused with the reason', () => {
    const withType = (t: string) => JSON.stringify({ ...JSON.parse(FROM_CELERY), 'content-type': t });
    assert.throws(
      () => decodeMessage(withType('application/x-python-serialize')),
      (e: CeleryMessageError) => {
        assert.ok(e instanceof CeleryMessageError);
        assert.match(e.message, /only JSON.*pickle runs arbitrary code/);
        assert.equal(e.taskId, '75f142b3-0569-4f61-9358-a154d192a8b8', 'the id, so the refusal can be stored');
        return true;
      },
    );
    assert.throws(() => decodeMessage(withType('application/x-yaml')), /refused/);
    assert.throws(() => decodeMessage(withType('application/x-msgpack')), /refused/);
    assert.throws(() => decodeMessage('not json'), /not JSON/);
    assert.throws(() => decodeMessage('{"headers": {}}'), /no headers or properties/);
    const badBody = { ...JSON.parse(FROM_CELERY), body: Buffer.from('{"a": 1}').toString('base64') };
    assert.throws(() => decodeMessage(JSON.stringify(badBody)), /\[args, kwargs, embed\]/);
    const badEta = JSON.parse(FROM_CELERY);
    badEta.headers.eta = 'tomorrow';
    assert.throws(() => decodeMessage(JSON.stringify(badEta)), /eta is not an ISO 8601 time/);
  });

  test('JavaScript errors map to Python exception types', () => {
    assert.deepEqual(exceptionInfo(new TypeError('t')), { exc_type: 'TypeError', exc_message: ['t'], exc_module: 'builtins' });
    assert.deepEqual(exceptionInfo(new Error('e')), { exc_type: 'Exception', exc_message: ['e'], exc_module: 'builtins' });
    const custom = Object.assign(new Error('c'), { name: 'SmtpRefused' });
    assert.deepEqual(exceptionInfo(custom), { exc_type: 'SmtpRefused', exc_message: ['c'], exc_module: null });
  });
});

describe('bad input to the Celery API is refused, naming it', () => {
  test('sendTask options', () => {
    const refused = (task: unknown, o: object) => {
      try {
        checkSendOptions(task, o);
      } catch (err) {
        assert.ok(err instanceof InputError);
        return err.message;
      }
      return assert.fail('not refused');
    };
    assert.match(refused('', {}), /options\.task: must be a non-empty string/);
    assert.match(refused('t', { args: 'x' }), /options\.args: must be an array/);
    assert.match(refused('t', { kwargs: [1] }), /options\.kwargs: must be a plain object/);
    assert.match(refused('t', { args: [() => 1] }), /options\.args\[0\]/);
    assert.match(refused('t', { args: [10n] }), /BigInt/);
    assert.match(refused('t', { countdown: -1 }), /countdown/);
    assert.match(refused('t', { countdown: 1, eta: new Date() }), /countdown or eta, not both/);
    assert.match(refused('t', { priority: 10 }), /priority: must be an integer from 0 to 9/);
    assert.match(refused('t', { expires: 'soon' }), /expires/);
    assert.doesNotThrow(() => checkSendOptions('t', { args: [1], kwargs: { a: null }, countdown: 0, priority: 9, expires: 60 }));
  });

  test('client and worker options, and registrations', () => {
    assert.throws(() => createCeleryClient({}), ConfigError);
    assert.throws(() => createCeleryClient({ url: 'amqp://x' }), /redis:\/\//);
    // The project's one Redis URL check, the password hidden in what it says; one server, not a cluster.
    assert.throws(
      () => createCeleryWorker({ url: 'redis://u:secret@h:6379/app' }),
      (e: Error) => /\/app/.test(e.message) && !e.message.includes('secret'),
    );
    assert.throws(() => createCeleryClient({ url: 'redis+cluster://a:1,b:2' }), /Redis Cluster URL/);
    assert.throws(() => createCeleryWorker({}), ConfigError);
    assert.throws(() => createCeleryWorker({ url: 'redis://127.0.0.1:1', queues: [] }), /queues/);
    assert.throws(() => createCeleryWorker({ url: 'redis://127.0.0.1:1', concurrency: 0 }), /concurrency/);
    const w = createCeleryWorker({ url: 'redis://127.0.0.1:1' }); // connects on start() only
    assert.throws(() => w.register('', {}, () => 1), /task name/);
    assert.throws(() => w.register('t', {}, 'x' as never), /handler must be a function/);
    assert.throws(() => w.register('t', { args: {} as never }, () => 1), /args must be a zod schema/);
    assert.throws(() => w.register('t', { maxRetries: -1 }, () => 1), /maxRetries/);
    w.register('t', {}, () => 1);
    assert.throws(() => w.register('t', {}, () => 1), /already registered/);
  });

  test("a timeout or grace that becomes a timer: at most Node's longest (a longer one would end after 1 ms)", async () => {
    const client = createCeleryClient({ url: 'redis://127.0.0.1:1' }); // connects on first use only
    const month = 30 * 24 * 3600_000;
    await assert.rejects(client.result('id').get({ timeoutMs: month }), (e: Error) => {
      assert.ok(e instanceof ConfigError);
      assert.equal(e.message, `get(): timeoutMs must be a non-negative number of milliseconds up to 2147483647, got ${month}`);
      return true;
    });
    await assert.rejects(client.result('id').get({ timeoutMs: '5s' as never }), /timeoutMs .* got "5s"$/);
    const w = createCeleryWorker({ url: 'redis://127.0.0.1:1' });
    await assert.rejects(w.stop(month), /stop\(\): graceMs must be a non-negative number of milliseconds up to 2147483647/);
    await client.close();
  });
});
