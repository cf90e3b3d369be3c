import { existsSync, mkdirSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

/**
 * Creates a folder and its missing parents, like `mkdirSync(path, { recursive: true })`, but one
 * level at a time. Node's recursive mkdir never returns when the kernel answers ENOENT for a folder
 * whose parent exists (any path under /proc, a read-only pseudo file system): it loops at 100% CPU.
 * Here that is an error naming the folder. Throws the file system's error (ENOENT, EACCES, EROFS,
 * ENOTDIR, ...) otherwise; a path that exists and is not a folder is ENOTDIR.
 */
export function makeDirs(path: string): void {
  const abs = resolve(path);
  const missing: string[] = [];
  for (let p = abs; !existsSync(p); p = dirname(p)) {
    missing.push(p);
    if (dirname(p) === p) break;
  }
  for (const dir of missing.reverse()) {
    try {
      mkdirSync(dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') continue; // made meanwhile by another process
      throw err;
    }
  }
  if (!statSync(abs).isDirectory()) {
    throw Object.assign(new Error(`ENOTDIR: not a directory, mkdir '${abs}'`), { code: 'ENOTDIR', path: abs });
  }
}
