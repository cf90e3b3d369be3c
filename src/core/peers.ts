/**
 * Errand's optional peer dependencies: Fastify and its plugins, which only `errand/http`,
 * `errand/dashboard` and `errand dashboard` need. A bare `npm install errand` leaves them out; code
 * that loads one of them lazily turns Node's "Cannot find package" into a message saying what to
 * install.
 */
import { ConfigError } from './errors.ts';

/** What `errand/http` needs (the dashboard needs the first: fastify). */
export const HTTP_PEERS = ['fastify', 'fastify-type-provider-zod', '@fastify/swagger', '@fastify/swagger-ui', '@fastify/rate-limit'];

/** The package named by a "Cannot find package 'x'" module error, if `err` is one. */
export function missingPackage(err: unknown): string | undefined {
  const e = err as { code?: unknown; message?: unknown } | null;
  if (e?.code !== 'ERR_MODULE_NOT_FOUND' || typeof e.message !== 'string') return undefined;
  return /Cannot find package '([^']+)'/.exec(e.message)?.[1];
}

/**
 * `err`, or a ConfigError naming the missing optional peer and the command that installs it, when
 * `err` says one of `peers` is not installed. `what` is what needs it ("errand dashboard"); `hint`
 * ends the message (another way out).
 */
export function explainMissingPeer(err: unknown, what: string, peers: readonly string[] = HTTP_PEERS, hint = ''): unknown {
  const name = missingPackage(err);
  if (!name || !peers.includes(name)) return err;
  return new ConfigError(
    `${what} needs the package "${name}", an optional peer dependency of errand that is not installed: npm install ${peers.join(' ')}${hint}`,
  );
}

/** `load()` (an `import()` of an optional peer), with explainMissingPeer's message when it is missing. */
export async function importPeer<T>(load: () => Promise<T>, what: string, peers: readonly string[], hint = ''): Promise<T> {
  try {
    return await load();
  } catch (err) {
    throw explainMissingPeer(err, what, peers, hint);
  }
}
