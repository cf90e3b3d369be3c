// The same work as iso-work.ts, as a BullMQ sandboxed processor (a file BullMQ loads in its own
// child process or worker thread): bench/scenarios/isolation.ts.
import { pbkdf2Sync } from 'node:crypto';

export default async function isoWork(job) {
  const { i, iterations } = job.data;
  if (iterations > 0) pbkdf2Sync('password', `salt${i}`, iterations, 32, 'sha256');
  return i;
}
