/**
 * Small helpers shared by the test files.
 *
 * `waitFor` is a safety net for things that happen asynchronously (a pub/sub message, a file
 * watcher): it polls a condition and fails with a clear message if the condition never holds. Tests
 * assert on the condition, never on how long it took.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export interface WaitForOptions {
  /** Give up after this many ms. Default 5000. */
  timeoutMs?: number;
  /** Poll every this many ms. Default 10. */
  intervalMs?: number;
  /** What is being waited for, for the failure message. */
  message?: string;
}

/**
 * Polls `condition` until it returns (or resolves to) a truthy value, and returns that value.
 * Rejects after `timeoutMs` with a message naming what was awaited and the last error the condition
 * threw, if any.
 */
export async function waitFor<T>(
  condition: () => T | Promise<T>,
  { timeoutMs = 5000, intervalMs = 10, message }: WaitForOptions = {},
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await condition();
      if (value) return value as NonNullable<T>;
      lastError = undefined;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) {
      const what = message ?? condition.toString().replace(/\s+/g, ' ').slice(0, 200);
      const why = lastError === undefined ? '' : ` (last error: ${lastError instanceof Error ? lastError.message : String(lastError)})`;
      throw new Error(`waitFor: condition not met within ${timeoutMs} ms: ${what}${why}`);
    }
    await sleep(intervalMs);
  }
}

/**
 * Resolves with the promise's value, or rejects with a clear message if it has not settled within
 * `timeoutMs`. A safety net so that a test fails instead of hanging; not a timing assertion.
 */
export async function within<T>(promise: Promise<T>, timeoutMs: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`not settled within ${timeoutMs} ms: ${message}`)), timeoutMs);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

const tempDirs: string[] = [];
let cleanupRegistered = false;

/** A fresh empty directory under the OS temp dir, removed when the process exits. */
export function tempDir(label = 'errand-test'): string {
  const dir = mkdtempSync(join(tmpdir(), `${label}-`));
  tempDirs.push(dir);
  if (!cleanupRegistered) {
    cleanupRegistered = true;
    process.once('exit', () => {
      for (const d of tempDirs) {
        try {
          rmSync(d, { recursive: true, force: true });
        } catch {
          // Best effort: a leftover temp dir is not a test failure.
        }
      }
    });
  }
  return dir;
}

/** A key prefix no other test uses, e.g. `errand-test-1a2b3c4d5e6f`. */
export function uniquePrefix(label = 'errand-test'): string {
  return `${label}-${randomBytes(6).toString('hex')}`;
}

/**
 * Whether `promise` has settled, readable at any moment: for assertions on order ("still waiting
 * before X happened, done after"), never on how long something took.
 */
export function settledFlag(promise: Promise<unknown>): { readonly settled: boolean } {
  const flag = { settled: false };
  promise.then(
    () => {
      flag.settled = true;
    },
    () => {
      flag.settled = true;
    },
  );
  return flag;
}

/**
 * Lets pending I/O and timers that are already due run: a few turns of the event loop and a short
 * pause. Used before asserting that something has *not* happened yet (an order, not a duration).
 */
export async function settleTurns(pauseMs = 50): Promise<void> {
  for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));
  await sleep(pauseMs);
}
