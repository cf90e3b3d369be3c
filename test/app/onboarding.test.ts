// The sign-up workflow of the users service (app/onboarding.ts): the welcome email and the avatar
// run side by side, then `complete_onboarding` writes the "onboarding complete" note to the outbox,
// exactly once and only after both succeeded; an avatar that fails for good cancels the note
// (edge policy cancel, reason dependency_failed) while the welcome email is still sent.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { ONBOARDING_TASK, onboardingNotePath } from '../../app/onboarding.ts';
import type { RunRecord } from '../../src/index.ts';
import { uniquePrefix, waitFor } from '../helpers.ts';
import { dropRedisPrefix, REDIS_URL, startService, type TestService } from './support.ts';

const png = async (width: number, height: number) =>
  (
    await sharp({ create: { width, height, channels: 3, background: { r: 20, g: 130, b: 90 } } })
      .png()
      .toBuffer()
  ).toString('base64');

const FINISHED = new Set(['succeeded', 'failed', 'cancelled']);

/** The workflow of a sign-up once every step has finished (its state as GET /workflows/{id} says). */
async function finishedIn(t: TestService, id: string): Promise<{ state: string; runs: RunRecord[] }> {
  const broker = await t.service.errand.broker();
  const wf = await waitFor(
    async () => {
      const w = await broker.getWorkflow(id);
      return w?.runs.every((r) => FINISHED.has(r.state)) ? w : undefined;
    },
    { timeoutMs: 120_000, message: `workflow ${id} to finish` },
  );
  return { state: (await t.request('GET', `/workflows/${id}`)).json.state, runs: wf.runs };
}

describe('the sign-up workflow', () => {
  let t: TestService;
  before(async () => {
    t = await startService({});
  });
  after(() => t.stop());
  const finished = (id: string) => finishedIn(t, id);

  const runOfTask = (runs: RunRecord[], task: string) => runs.filter((r) => r.task === task);

  it('without an avatar: the welcome email, then the note, once; the answer links the workflow', async () => {
    const res = await t.request('POST', '/users/', { username: 'new.comer', email: 'new.comer@example.com' });
    assert.equal(res.status, 201);
    assert.equal('avatar_task' in res.json, false, 'as before without an avatar');
    const wf = res.json.workflow as { id: string; status_url: string };
    assert.equal(wf.status_url, `/workflows/${wf.id}`);
    const { state, runs } = await finished(wf.id);
    assert.equal(state, 'succeeded');
    const [welcome] = runOfTask(runs, 'send_welcome_email');
    const notes = runOfTask(runs, ONBOARDING_TASK);
    assert.equal(welcome?.id, res.json.task.id, 'the welcome run is the answer task');
    assert.equal(welcome?.idempotencyKey, `welcome:${res.json.user.id}`, 'keyed as before: one welcome run per user');
    assert.equal(notes.length, 1);
    assert.equal(notes[0]!.attempts, 1, 'the note ran once');
    assert.ok(notes[0]!.startedAt! >= welcome!.finishedAt!, 'after the welcome email');
    const path = onboardingNotePath(join(t.dataDir, 'outbox'), res.json.user.id);
    const note = JSON.parse(readFileSync(path, 'utf8'));
    assert.equal(note.note, 'onboarding complete');
    assert.equal(note.welcome_email.state, 'sent');
    assert.equal(note.avatar, false);
    const emails = readdirSync(join(t.dataDir, 'outbox')).filter((f) => f.endsWith('.eml'));
    assert.ok(emails.length >= 1, 'the welcome email is in the outbox');
    // The dashboard's run page links the workflow (its JSON carries it).
    const dash = await t.request('GET', `/dashboard/api/runs/${encodeURIComponent(notes[0]!.id)}`);
    assert.equal(dash.status, 200);
    assert.equal(dash.json.workflow, wf.id);
  });

  it('with an avatar: welcome and thumbnails side by side, the note once after both succeeded', async () => {
    const res = await t.request('POST', '/users/', { username: 'pic', email: 'pic@example.com', avatar: await png(300, 200) });
    assert.equal(res.status, 201);
    assert.match(res.json.avatar_task.id, /^avatars\./, 'each step in its own queue on SQLite');
    const { state, runs } = await finished(res.json.workflow.id);
    assert.equal(state, 'succeeded');
    const [welcome] = runOfTask(runs, 'send_welcome_email');
    const [avatar] = runOfTask(runs, 'make_avatar_thumbnails');
    const notes = runOfTask(runs, ONBOARDING_TASK);
    assert.equal(avatar?.id, res.json.avatar_task.id);
    assert.equal(notes.length, 1);
    assert.equal(notes[0]!.attempts, 1);
    assert.ok(notes[0]!.startedAt! >= Math.max(welcome!.finishedAt!, avatar!.finishedAt!), 'after both');
    const note = JSON.parse(readFileSync(onboardingNotePath(join(t.dataDir, 'outbox'), res.json.user.id), 'utf8'));
    assert.equal(note.avatar, true);
  });

  it('an avatar that fails for good cancels the note (dependency_failed); the welcome email is still sent', async () => {
    // A PNG signature (the schema's check) over bytes sharp cannot read: the avatar fails at once.
    const broken = Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), Buffer.alloc(64, 7)]).toString('base64');
    const res = await t.request('POST', '/users/', { username: 'broken', email: 'broken@example.com', avatar: broken });
    assert.equal(res.status, 201);
    const { state, runs } = await finished(res.json.workflow.id);
    assert.equal(state, 'failed');
    const [welcome] = runOfTask(runs, 'send_welcome_email');
    const [avatar] = runOfTask(runs, 'make_avatar_thumbnails');
    const [note] = runOfTask(runs, ONBOARDING_TASK);
    assert.equal(welcome?.state, 'succeeded');
    assert.equal(avatar?.state, 'failed');
    assert.equal(note?.state, 'cancelled');
    assert.equal(JSON.parse(note!.error!).reason, 'dependency_failed');
    assert.equal(note?.attempts, 0, 'never started');
    assert.equal(existsSync(onboardingNotePath(join(t.dataDir, 'outbox'), res.json.user.id)), false, 'no note');
    assert.equal((await t.service.users.welcomeStatus(res.json.user.id))?.state, 'sent');
  });
});

describe('the sign-up workflow on Redis', () => {
  let t: TestService;
  const prefix = uniquePrefix('errand-onboarding-test');
  before(async () => {
    t = await startService({ REDIS_URL, ERRAND_PREFIX: prefix });
  });
  after(async () => {
    await t?.stop();
    await dropRedisPrefix(prefix);
  });

  it("runs each step in its task's queue (the avatar's in avatars, through the relay) and writes the note once", async () => {
    assert.equal((await t.service.errand.broker()).kind, 'redis');
    const res = await t.request('POST', '/users/', { username: 'red', email: 'red@example.com', avatar: await png(64, 64) });
    assert.equal(res.status, 201);
    assert.match(res.json.avatar_task.id, /^avatars\./);
    assert.match(res.json.task.id, /^emails\./);
    const { state, runs } = await finishedIn(t, res.json.workflow.id);
    assert.equal(state, 'succeeded');
    assert.deepEqual(runs.map((r) => r.task).sort(), ['complete_onboarding', 'make_avatar_thumbnails', 'send_welcome_email']);
    assert.equal(runs.find((r) => r.task === ONBOARDING_TASK)?.attempts, 1);
    assert.ok(existsSync(onboardingNotePath(join(t.dataDir, 'outbox'), res.json.user.id)));
  });
});

// With WELCOME_DOMAIN_RATE the welcome email is a step under its domain's rate (docs/flow-control.md:
// a step's key is computed from its own input when the workflow is created), and sign-up is the same
// workflow as without it.
for (const backend of ['sqlite', 'redis'] as const) {
  describe(`the sign-up workflow under WELCOME_DOMAIN_RATE (${backend})`, () => {
    let t: TestService;
    const prefix = uniquePrefix('errand-onboarding-rate-test');
    const PERIOD = 500;
    before(async () => {
      const rate = { WELCOME_DOMAIN_RATE: '1', WELCOME_DOMAIN_PERIOD_MS: String(PERIOD), WELCOME_DOMAIN_BURST: '1' };
      t = await startService(backend === 'redis' ? { ...rate, REDIS_URL, ERRAND_PREFIX: prefix } : rate);
    });
    after(async () => {
      await t?.stop();
      if (backend === 'redis') await dropRedisPrefix(prefix);
    });

    it("each welcome email runs as a step under its domain's rate; each note is written once both steps succeeded", async () => {
      const users = [
        { username: 'rate.one', email: 'one@rated.example' },
        { username: 'rate.two', email: 'two@Rated.Example', avatar: await png(64, 64) },
      ];
      const answers = [];
      for (const u of users) {
        const res = await t.request('POST', '/users/', u);
        assert.equal(res.status, 201);
        assert.ok(res.json.workflow?.id, 'sign-up is a workflow under the rate too');
        answers.push(res.json);
      }
      const welcomes: RunRecord[] = [];
      for (const a of answers) {
        const { state, runs } = await finishedIn(t, a.workflow.id);
        assert.equal(state, 'succeeded');
        const [welcome] = runs.filter((r) => r.task === 'send_welcome_email');
        const notes = runs.filter((r) => r.task === ONBOARDING_TASK);
        assert.equal(welcome?.id, a.task.id, 'the welcome run is the answer task');
        assert.deepStrictEqual(welcome?.flow, { group: 'send_welcome_email', key: 'rated.example' }, 'keyed by its domain, lower-cased');
        assert.equal(notes.length, 1);
        assert.equal(notes[0]!.attempts, 1, 'the note ran once');
        assert.ok(notes[0]!.startedAt! >= welcome!.finishedAt!, 'after the welcome email');
        assert.ok(existsSync(onboardingNotePath(join(t.dataDir, 'outbox'), a.user.id)), 'the note written');
        welcomes.push(welcome!);
      }
      const [first, second] = welcomes.map((w) => w.startedAt!).sort((x, y) => x - y);
      assert.ok(second! >= first! + PERIOD, `one welcome email per ${PERIOD} ms to the domain (starts at ${first} and ${second})`);
    });
  });
}
