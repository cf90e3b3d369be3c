/**
 * A trigger for an async `step` that never overlaps itself: called while the step runs, it runs the
 * step once more after it (however many calls came meanwhile), so that the last change is always
 * looked at and no two looks run at once. Used where a notification ("something may have changed")
 * leads to a read of the broker: waiting for a run's result, and `drain()` in errand/testing.
 */
export function coalesced(
  step: () => Promise<void>,
  { stopped, onError }: { stopped: () => boolean; onError: (err: unknown) => void },
): () => Promise<void> {
  let running = false;
  let again = false;
  return async () => {
    if (stopped()) return;
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      do {
        again = false;
        await step();
      } while (again && !stopped());
    } catch (err) {
      onError(err);
    } finally {
      running = false;
    }
  };
}
