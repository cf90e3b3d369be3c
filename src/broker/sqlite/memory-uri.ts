/**
 * SQLite memory URIs (`file:<name>?mode=memory&cache=shared`): storage in memory, shared by the
 * connections of this process (any thread) that open the same URI. Apart from `core.ts` so that
 * `connect.ts` can tell one from a file path without loading `node:sqlite`.
 */

/** A SQLite memory URI (`file:<name>?mode=memory&cache=shared`): storage in memory, shared within the process. */
export function isMemoryUri(path: string): boolean {
  return /^file:[^?]*\?(?:[^#]*&)?mode=memory(?:&|#|$)/.test(path);
}
