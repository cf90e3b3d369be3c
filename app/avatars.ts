/**
 * The service's CPU-heavy task, `make_avatar_thumbnails`: the avatar a user may upload at sign-up
 * (`POST /users/` with `avatar`, an image as base64) is decoded and resized into square WebP
 * thumbnails (64 and 256 pixels) with sharp, written under `DATA_DIR/avatars/<userId>/`.
 *
 * Resizing is CPU work: the task runs with `isolation: 'thread'`, in a worker thread, so that the
 * worker process's event loop keeps renewing leases and sending welcome emails meanwhile, and a
 * resize past the timeout is stopped for real. Its queue, `avatars`, is served by the service's
 * worker with the emails' queue (at most WORKER_CONCURRENCY threads, started when first needed). The isolate imports this module and finds the handler
 * by its exported name (`makeAvatarThumbnails`): the handler uses nothing but its input and context.
 * Its progress (one step per thumbnail) shows on the run's page in the dashboard.
 *
 * sharp is a development dependency of the repository (the service's, not the published package's),
 * loaded only when a thumbnail is made.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { z } from 'zod';
import { type Errand, PermanentError, type Task, type TaskContext } from '../src/index.ts';

export const AVATAR_TASK = 'make_avatar_thumbnails';
export const AVATAR_QUEUE = 'avatars';
/** The largest avatar accepted, in bytes (decoded): its base64 fits the run's input limit (1 MB of JSON). */
export const AVATAR_MAX_BYTES = 512 * 1024;
/** The thumbnails made, in pixels (square). */
export const AVATAR_SIZES = [64, 256] as const;

/** The image kinds accepted, by their first bytes. */
const IMAGE_KINDS: { kind: string; test: (b: Buffer) => boolean }[] = [
  { kind: 'png', test: (b) => b.length > 8 && b.readUInt32BE(0) === 0x89504e47 },
  { kind: 'jpeg', test: (b) => b.length > 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff },
  { kind: 'gif', test: (b) => b.subarray(0, 4).toString('latin1') === 'GIF8' },
  { kind: 'webp', test: (b) => b.subarray(0, 4).toString('latin1') === 'RIFF' && b.subarray(8, 12).toString('latin1') === 'WEBP' },
];

/** The kind of image in `bytes` (png, jpeg, gif, webp), or undefined. */
export function imageKind(bytes: Buffer): string | undefined {
  return IMAGE_KINDS.find((k) => k.test(bytes))?.kind;
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** `avatar` of `POST /users/`: base64 of a PNG, JPEG, GIF or WebP image of at most AVATAR_MAX_BYTES. */
export const AvatarSchema = z
  .string()
  .superRefine((s, ctx) => {
    const issue = (message: string) => ctx.addIssue({ code: 'custom', input: s, message });
    if (s.length === 0) return issue('must not be empty: leave avatar out for no avatar');
    if (s.length % 4 !== 0 || !BASE64.test(s)) return issue('must be base64 (RFC 4648, with padding, no data: prefix or line breaks)');
    const bytes = Buffer.from(s, 'base64');
    if (bytes.length > AVATAR_MAX_BYTES) return issue(`is ${bytes.length} bytes, over the limit of ${AVATAR_MAX_BYTES} bytes`);
    if (!imageKind(bytes)) return issue('is not a PNG, JPEG, GIF or WebP image');
  })
  .meta({
    description: `An image (PNG, JPEG, GIF or WebP, at most ${AVATAR_MAX_BYTES} bytes) as base64; thumbnails are made in the background`,
    // A 1x1 PNG: what /docs's "Try it out" sends, so that its example body is one the route accepts.
    examples: ['iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=='],
  });

export const AvatarInputSchema = z.object({
  userId: z
    .string()
    .min(1)
    .max(64)
    .regex(/^[A-Za-z0-9_-]+$/, 'must be letters, digits, "_" or "-"'),
  /** The image, base64. */
  image: z.string().min(1),
  /** The folder that receives `<userId>/<size>.webp`: `DATA_DIR/avatars` of the API that took the upload. */
  dir: z
    .string()
    .min(1)
    .refine((d) => d.startsWith('/') && basename(d) === 'avatars', 'must be an absolute path to a folder named "avatars"'),
});

export type AvatarInput = z.output<typeof AvatarInputSchema>;

export interface AvatarResult {
  format: string;
  width: number;
  height: number;
  thumbnails: { size: number; path: string; bytes: number }[];
}

export type AvatarTask = Task<typeof AvatarInputSchema, AvatarResult>;

/** The handler, run in a worker thread (exported by name: the isolate finds it here). */
export async function makeAvatarThumbnails(input: AvatarInput, ctx: TaskContext): Promise<AvatarResult> {
  let sharp: typeof import('sharp')['default'];
  try {
    sharp = (await import('sharp')).default;
  } catch (err) {
    throw new PermanentError(`sharp is not installed in this worker (npm install sharp): ${(err as Error).message}`);
  }
  const image = Buffer.from(input.image, 'base64');
  let meta: { format?: string; width?: number; height?: number };
  try {
    meta = await sharp(image).metadata();
  } catch (err) {
    throw new PermanentError(`The avatar of user ${input.userId} is not an image sharp can read: ${(err as Error).message}`);
  }
  const folder = join(input.dir, input.userId);
  await mkdir(folder, { recursive: true });
  const thumbnails: AvatarResult['thumbnails'] = [];
  ctx.progress({ done: 0, of: AVATAR_SIZES.length });
  for (const size of AVATAR_SIZES) {
    ctx.signal.throwIfAborted();
    const data = await sharp(image).rotate().resize(size, size, { fit: 'cover' }).webp({ quality: 80 }).toBuffer();
    const path = join(folder, `${size}.webp`);
    await writeFile(path, data);
    thumbnails.push({ size, path, bytes: data.length });
    ctx.progress({ done: thumbnails.length, of: AVATAR_SIZES.length, last: `${size}x${size}` });
  }
  ctx.logger.info({ userId: input.userId, sizes: AVATAR_SIZES }, 'avatar thumbnails written');
  return { format: meta.format ?? 'unknown', width: meta.width ?? 0, height: meta.height ?? 0, thumbnails };
}

export function defineAvatarTask(errand: Errand): AvatarTask {
  return errand.task(
    AVATAR_TASK,
    {
      input: AvatarInputSchema,
      queue: AVATAR_QUEUE,
      isolation: 'thread',
      module: import.meta.url,
      memoryLimitMb: 256,
      timeout: 60_000,
      retries: 2,
      // Half a megabyte of base64 is no use on a run's page: shown as "[redacted]" (it stays stored for the handler).
      redact: ['image'],
      description: 'Makes the thumbnails of an avatar uploaded at sign-up (sharp, in a worker thread)',
    },
    makeAvatarThumbnails,
  );
}
