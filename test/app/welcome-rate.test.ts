// The welcome email's per-domain rate limit (WELCOME_DOMAIN_RATE, docs/flow-control.md): read from
// the environment with clear errors, and carried by each run as its flow spec (the recipient's
// domain as the key), which the broker enforces (test/conformance/limits.ts).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadConfig } from '../../app/config.ts';
import { defineWelcomeTask, recipientDomain } from '../../app/tasks.ts';
import type { Mailer } from '../../app/email.ts';
import type { UserStore } from '../../app/users/store.ts';
import { ConfigError, createErrand } from '../../src/index.ts';
import { quietLogger } from '../fixtures/brokers.ts';

describe('welcome emails: the per-domain rate limit', () => {
  it('is off unless WELCOME_DOMAIN_RATE is set; its period and burst default to a minute and the rate', () => {
    assert.equal(loadConfig({}).welcomeDomainRate, undefined);
    assert.deepStrictEqual(loadConfig({ WELCOME_DOMAIN_RATE: '30' }).welcomeDomainRate, { limit: 30, period: 60_000, burst: 30 });
    assert.deepStrictEqual(
      loadConfig({ WELCOME_DOMAIN_RATE: '5', WELCOME_DOMAIN_PERIOD_MS: '1000', WELCOME_DOMAIN_BURST: '2' }).welcomeDomainRate,
      { limit: 5, period: 1000, burst: 2 },
    );
  });

  it('refuses bad values, naming the variable', () => {
    const bad: [Record<string, string>, RegExp][] = [
      [{ WELCOME_DOMAIN_RATE: '0' }, /WELCOME_DOMAIN_RATE.*must be an integer from 1/],
      [{ WELCOME_DOMAIN_RATE: 'ten' }, /WELCOME_DOMAIN_RATE.*must be an integer/],
      [{ WELCOME_DOMAIN_RATE: '10', WELCOME_DOMAIN_PERIOD_MS: '-5' }, /WELCOME_DOMAIN_PERIOD_MS.*must be an integer/],
      [{ WELCOME_DOMAIN_BURST: '3' }, /WELCOME_DOMAIN_BURST.*is set but WELCOME_DOMAIN_RATE is not/],
    ];
    for (const [env, message] of bad) {
      assert.throws(
        () => loadConfig(env),
        (err: unknown) => err instanceof ConfigError && message.test(err.message),
        JSON.stringify(env),
      );
    }
  });

  it('keys each run by its recipient domain, lower-cased', () => {
    assert.equal(recipientDomain('Ann@Example.COM'), 'example.com');
    assert.equal(recipientDomain('a@b@mail.example.org'), 'mail.example.org');
    assert.equal(recipientDomain('nobody'), undefined);
    const errand = createErrand({ broker: 'sqlite::memory:', logger: quietLogger });
    const deps = { users: {} as UserStore, mailer: {} as Mailer, mailFrom: 'welcome@example.com' };
    const limited = defineWelcomeTask(errand, { ...deps, domainRate: { limit: 5, period: 1000, burst: 2 } });
    const run = limited.prepare({ userId: 'u1', email: 'ann@Gmail.com', username: 'ann' });
    assert.deepStrictEqual(run.flow, { group: 'send_welcome_email', key: 'gmail.com', rate: { interval: 200, burst: 2 } });
    const plain = defineWelcomeTask(createErrand({ broker: 'sqlite::memory:', logger: quietLogger }), deps);
    assert.equal(plain.prepare({ userId: 'u1', email: 'ann@gmail.com', username: 'ann' }).flow, undefined);
  });
});
