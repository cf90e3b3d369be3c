/**
 * Where the anchors are: the reference services Errand is measured and tested against (the seed's
 * FastAPI + Celery service, Fastify + BullMQ), kept outside the project in a `shared/anchors` folder
 * and never copied into it. Used by the bench (scenario 4) and by test/celery/seed.test.ts.
 *
 * A checkout may be anywhere (CI clones the project to a folder of its own, under /tmp say), so the
 * folder is looked for, in order:
 * 1. `BENCH_ANCHORS`, when set (then only there: a folder named on purpose is not second-guessed);
 * 2. `shared/anchors` in each folder above the checkout (`../shared/anchors` first);
 * 3. for a git worktree, the same above its main checkout (the git common dir's folder);
 * 4. for a clone of a local path (`git clone /work/main` sets `remote.origin.url` to that path), the
 *    same above that path.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface AnchorsLookup {
  /** The anchors folder, or undefined when none was found. */
  dir: string | undefined;
  /** Every folder looked at, in order (for the message when none is there). */
  looked: string[];
}

function git(root: string, args: string[]): string | undefined {
  try {
    const out = execFileSync('git', args, { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 10_000 }).trim();
    return out === '' ? undefined : out;
  } catch {
    return undefined;
  }
}

/** The folders above `dir` (its parent first, the filesystem root last). */
function above(dir: string): string[] {
  const out: string[] = [];
  for (let d = dirname(resolve(dir)); ; d = dirname(d)) {
    out.push(d);
    if (dirname(d) === d) return out;
  }
}

/** The local folder a git remote URL names (a path, or `file://`), or undefined for a network URL. */
function localPath(url: string, root: string): string | undefined {
  if (url.startsWith('file://')) return fileURLToPath(url);
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(url) || /^[^/]+@[^/]+:/.test(url)) return undefined; // https://, ssh://, git@host:
  return isAbsolute(url) ? url : resolve(root, url);
}

const isDir = (p: string) => {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
};

/** Looks for the anchors folder for the checkout at `root` (see the header for the order). */
export function findAnchors(root: string, env: NodeJS.ProcessEnv = process.env): AnchorsLookup {
  if (env.BENCH_ANCHORS) {
    const dir = resolve(root, env.BENCH_ANCHORS);
    return { dir: isDir(dir) ? dir : undefined, looked: [`${dir} (BENCH_ANCHORS)`] };
  }
  const bases = [resolve(root)];
  const common = git(root, ['rev-parse', '--path-format=absolute', '--git-common-dir']);
  if (common) bases.push(dirname(common));
  const origin = git(root, ['config', '--get', 'remote.origin.url']);
  const originPath = origin === undefined ? undefined : localPath(origin, root);
  if (originPath && existsSync(originPath)) bases.push(originPath);
  const looked: string[] = [];
  for (const base of bases) {
    for (const dir of above(base)) {
      const candidate = join(dir, 'shared', 'anchors');
      if (looked.includes(candidate)) continue;
      looked.push(candidate);
      if (isDir(candidate)) return { dir: candidate, looked };
    }
  }
  return { dir: undefined, looked };
}

/** Why no anchors folder was found, naming where it was looked for. */
export function anchorsMissing(lookup: AnchorsLookup): string | undefined {
  if (lookup.dir) return undefined;
  return `no anchors folder (shared/anchors; BENCH_ANCHORS names another): looked at ${lookup.looked.join(', ')}`;
}
