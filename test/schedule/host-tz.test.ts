// Fire times do not depend on the host's local zone: the same digest of fire times (see
// host-tz-digest.ts) in this process and in child processes run with TZ set to zones with and
// without DST, a 30-minute DST and a half-hour offset. Each child reports its own zone, so the
// test knows the variable took effect.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { digest } from './host-tz-digest.ts';

const run = promisify(execFile);
const SCRIPT = new URL('./host-tz-digest.ts', import.meta.url).pathname;
const HOST_ZONES = ['America/New_York', 'Asia/Kolkata', 'Australia/Lord_Howe', 'UTC'];

describe('schedules and the host time zone', () => {
  it('gives the same fire times under TZ=America/New_York, Asia/Kolkata, Australia/Lord_Howe and UTC', async () => {
    const here = digest();
    for (const tz of HOST_ZONES) {
      const { stdout } = await run(process.execPath, [SCRIPT], { env: { ...process.env, TZ: tz }, maxBuffer: 1 << 20 });
      const out = JSON.parse(stdout) as { hostZone: string; digest: string };
      // ICU names some zones by their older canonical name (Asia/Kolkata is Asia/Calcutta).
      const want = new Intl.DateTimeFormat('en-US', { timeZone: tz }).resolvedOptions().timeZone;
      assert.equal(out.hostZone, want, `the child did not run in ${tz}`);
      assert.equal(out.digest, here, `fire times differ under TZ=${tz}`);
    }
  });
});
