// The work of the isolation benchmark (bench/scenarios/isolation.ts), for Errand's isolates: imported
// by each thread or process, which finds `isoWork` by name. `iterations` 0 is a trivial run.
import { pbkdf2Sync } from 'node:crypto';

export function isoWork(input: { i: number; iterations: number }): number {
  if (input.iterations > 0) pbkdf2Sync('password', `salt${input.i}`, input.iterations, 32, 'sha256');
  return input.i;
}
