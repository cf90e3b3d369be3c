/**
 * The timer-plus-abort wait of `waitForWork`, as both brokers do it: resolves when woken, when
 * `delay` ms pass, or when `signal` aborts, whichever comes first, and cleans up after itself.
 */
// setTimeout takes at most MAX_TIMER_MS: a later deadline wakes early, which waitForWork allows.
import { MAX_TIMER_MS } from '../../core/show.ts';

/**
 * Waits. `attach(wake)` registers the wake-up function wherever the broker's events reach it and
 * returns its detach; `delay` null waits for a wake-up or the signal alone.
 */
export function sleepUntilWoken(delay: number | null, signal: AbortSignal, attach: (wake: () => void) => () => void): Promise<void> {
  if (signal.aborted || (delay !== null && delay <= 0)) return Promise.resolve();
  return new Promise<void>((resolve) => {
    let timer: NodeJS.Timeout | undefined;
    let finished = false;
    let detach: (() => void) | undefined;
    const wake = (): void => {
      if (finished) return;
      finished = true;
      if (timer) clearTimeout(timer);
      signal.removeEventListener('abort', wake);
      detach?.();
      resolve();
    };
    signal.addEventListener('abort', wake, { once: true });
    if (delay !== null) timer = setTimeout(wake, Math.min(delay, MAX_TIMER_MS));
    detach = attach(wake);
    if (finished) detach();
  });
}
