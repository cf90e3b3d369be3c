// The users service's periodic task: the sign-up digest, declared as a schedule. A worker stores it
// at start (listed with its next fire times, as the dashboard shows it); a fire's run emails the
// sign-ups of the day before its nominal time; the configuration is checked.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { loadConfig } from '../../app/config.ts';
import { DIGEST_SCHEDULE, type DigestResult } from '../../app/digest.ts';
import { ConfigError } from '../../src/index.ts';
import { waitFor } from '../helpers.ts';
import { startService, type TestService } from './support.ts';

describe('sign-up digest', () => {
  const stops: TestService[] = [];
  after(async () => {
    for (const t of stops) await t.stop();
  });

  it("is a stored schedule once a worker started; its run emails the day's sign-ups to DIGEST_TO", { timeout: 60_000 }, async () => {
    const t = await startService({ DIGEST_CRON: '0 7 * * *', DIGEST_TIMEZONE: 'Europe/Paris', DIGEST_TO: 'ops@errand.test' });
    stops.push(t);
    const [s] = await t.service.errand.listSchedules();
    assert.equal(s?.id, DIGEST_SCHEDULE);
    assert.equal(s?.state, 'active');
    assert.equal(s?.upcoming.length, 5);
    assert.equal(JSON.parse(s!.spec).timezone, 'Europe/Paris');
    for (const name of ['ann', 'bob', 'cy']) {
      assert.equal((await t.request('POST', '/users/', { username: name, email: `${name}@example.com` })).status, 201);
    }
    // A fire now (as at its time): the day before it holds the three sign-ups.
    const handle = await t.service.errand.triggerSchedule(DIGEST_SCHEDULE);
    const run = await waitFor(
      async () => {
        const r = await t.service.errand.getRun(handle.id);
        return r.state === 'succeeded' ? r : undefined;
      },
      { timeoutMs: 30_000, message: 'the digest run succeeded' },
    );
    assert.equal(run.schedule?.id, DIGEST_SCHEDULE);
    assert.equal((run.result as DigestResult).signups, 3);
    const outbox = join(t.dataDir, 'outbox');
    const digest = readdirSync(outbox)
      .map((f) => readFileSync(join(outbox, f), 'utf8'))
      .find((m) => /Subject: Sign-ups: 3/.test(m));
    assert.ok(digest, 'the digest is in the outbox');
    assert.match(digest, /To: ops@errand\.test/);
    assert.match(digest, /ann <ann@example\.com>/);
  });

  it('a bad DIGEST_CRON or DIGEST_TIMEZONE is refused, naming the variable', () => {
    assert.throws(
      () => loadConfig({ DIGEST_CRON: '0 25 * * *' }),
      (e: unknown) => e instanceof ConfigError && /DIGEST_CRON/.test(e.message),
    );
    assert.throws(() => loadConfig({ DIGEST_TIMEZONE: 'Mars/Olympus' }), /DIGEST_TIMEZONE/);
    assert.throws(() => loadConfig({ DIGEST_TO: 'nobody' }), /DIGEST_TO/);
  });
});
