// The service's heavy task: an avatar uploaded at sign-up becomes WebP thumbnails (sharp), made by
// `make_avatar_thumbnails` in a worker thread (`isolation: 'thread'`), with progress per thumbnail.
// POST /users/ without an avatar answers as before; a bad avatar is a clear 422.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { AVATAR_MAX_BYTES, AVATAR_SIZES, type AvatarResult, makeAvatarThumbnails } from '../../app/avatars.ts';
import { runTask } from '../../src/testing/index.ts';
import { tempDir, waitFor } from '../helpers.ts';
import { startService, type TestService } from './support.ts';

const png = async (width: number, height: number) =>
  (
    await sharp({ create: { width, height, channels: 3, background: { r: 200, g: 30, b: 90 } } })
      .png()
      .toBuffer()
  ).toString('base64');

describe('avatars', () => {
  let t: TestService;
  before(async () => {
    t = await startService({});
  });
  after(() => t.stop());

  it('makes the thumbnails of an avatar given at sign-up, in a worker thread', async () => {
    assert.equal(t.service.avatarTask.isolation, 'thread');
    const avatar = await png(640, 480);
    const res = await t.request('POST', '/users/', { username: 'ava', email: 'ava@example.com', avatar });
    assert.equal(res.status, 201);
    const json = res.json as { user: { id: string }; task: { id: string }; avatar_task: { id: string; status_url: string } };
    assert.match(json.avatar_task.id, /^avatars\./);
    assert.equal(json.avatar_task.status_url, `/runs/${json.avatar_task.id}`);
    const run = await waitFor(
      async () => {
        const r = await t.request('GET', json.avatar_task.status_url);
        const body = r.json as { state: string };
        return body.state === 'succeeded' || body.state === 'failed'
          ? (r.json as { state: string; result: AvatarResult; input: { image: string } })
          : undefined;
      },
      { timeoutMs: 120_000, message: 'the thumbnails run to finish' },
    );
    assert.equal(run.state, 'succeeded');
    assert.equal(run.input.image, '[redacted]', 'the image is not shown on the run page');
    assert.equal(run.result.format, 'png');
    assert.equal(run.result.width, 640);
    assert.deepEqual(
      run.result.thumbnails.map((th) => th.size),
      [...AVATAR_SIZES],
    );
    for (const th of run.result.thumbnails) {
      assert.equal(th.path, join(t.dataDir, 'avatars', json.user.id, `${th.size}.webp`));
      assert.ok(existsSync(th.path));
      const meta = await sharp(th.path).metadata();
      assert.equal(meta.format, 'webp');
      assert.equal(meta.width, th.size);
      assert.equal(meta.height, th.size);
    }
  });

  it('keeps POST /users/ as it was without an avatar (no avatar_task field)', async () => {
    const res = await t.request('POST', '/users/', { username: 'plain', email: 'plain@example.com' });
    assert.equal(res.status, 201);
    assert.equal('avatar_task' in (res.json as object), false);
  });

  it('refuses a bad avatar with a 422 naming body.avatar, and stores no user', async () => {
    const tooBig = Buffer.alloc(AVATAR_MAX_BYTES + 1, 0x89).toString('base64');
    const cases: [unknown, RegExp][] = [
      ['not base64!', /must be base64/],
      [Buffer.from('plain text, not an image').toString('base64'), /not a PNG, JPEG, GIF or WebP image/],
      ['', /must not be empty/],
      [tooBig, new RegExp(`over the limit of ${AVATAR_MAX_BYTES} bytes`)],
      [42, /string/i],
    ];
    for (const [i, [avatar, message]] of cases.entries()) {
      const email = `bad${i}@example.com`;
      const res = await t.request('POST', '/users/', { username: `bad ${i}`, email, avatar });
      assert.equal(res.status, 422, `case ${i}`);
      const detail = (res.json as { detail: { loc: string[]; msg: string }[] }).detail;
      assert.deepEqual(detail[0]?.loc, ['body', 'avatar']);
      assert.match(detail[0]!.msg, message);
      const list = await t.service.users.list({ limit: 100, offset: 0 });
      assert.equal(
        list.items.some((u) => u.email === email),
        false,
      );
    }
  });

  it('reports progress per thumbnail, and fails for good on bytes sharp cannot read', async () => {
    const dir = join(tempDir('errand-avatars'), 'avatars');
    const progress: unknown[] = [];
    const { task } = { task: t.service.avatarTask };
    const result = await runTask(task, { userId: 'u1', image: await png(100, 100), dir }, { onProgress: (v) => progress.push(v) });
    assert.equal(result.thumbnails.length, AVATAR_SIZES.length);
    assert.deepEqual(progress.at(-1), { done: 2, of: 2, last: '256x256' });
    // PNG's signature, then garbage: it passes the API's check and fails in sharp.
    const broken = Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), Buffer.alloc(64, 1)]).toString('base64');
    await assert.rejects(
      () => makeAvatarThumbnails({ userId: 'u2', image: broken, dir }, { progress() {}, signal: new AbortController().signal } as never),
      (err: Error) => err.name === 'PermanentError' && /not an image sharp can read/.test(err.message),
    );
  });
});
