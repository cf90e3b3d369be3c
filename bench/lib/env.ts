/** The machine and the versions a run was measured with. */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { cpus, loadavg, release, totalmem } from 'node:os';

export interface Machine {
  date: string;
  cpu: string;
  cores: number;
  memGiB: number;
  os: string;
  kernel: string;
  loadavgAtStart: number[];
  node: string;
  errandCommit: string;
  errandDirty: boolean;
  versions: Record<string, string>;
}

function run(cmd: string, args: string[], cwd?: string): string | null {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', cwd, stdio: ['ignore', 'pipe', 'ignore'], timeout: 10_000 }).trim();
  } catch {
    return null;
  }
}

function osName(): string {
  try {
    const text = readFileSync('/etc/os-release', 'utf8');
    return /PRETTY_NAME="([^"]+)"/.exec(text)?.[1] ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

export function pkgVersion(path: string): string {
  try {
    return (JSON.parse(readFileSync(path, 'utf8')) as { version: string }).version;
  } catch {
    return 'not installed';
  }
}

export function machine(root: string): Machine {
  const commit = run('git', ['rev-parse', '--short', 'HEAD'], root) ?? 'unknown';
  const dirty = (run('git', ['status', '--porcelain', '--', 'src', 'app'], root) ?? '') !== '';
  return {
    date: new Date().toISOString(),
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    memGiB: Math.round(totalmem() / 2 ** 30),
    os: osName(),
    kernel: release(),
    loadavgAtStart: loadavg().map((v) => Math.round(v * 100) / 100),
    node: process.version,
    errandCommit: commit,
    errandDirty: dirty,
    versions: {
      errand: pkgVersion(`${root}/package.json`),
      bullmq: pkgVersion(`${root}/node_modules/bullmq/package.json`),
      ioredis: pkgVersion(`${root}/node_modules/ioredis/package.json`),
      fastify: pkgVersion(`${root}/node_modules/fastify/package.json`),
      autocannon: pkgVersion(`${root}/node_modules/autocannon/package.json`),
      wrk: run('sh', ['-c', 'wrk --version 2>&1 | head -1'])?.match(/wrk (\S+)/)?.[1] ?? 'not installed',
      python: existsSync('/usr/bin/python3')
        ? (run('/usr/bin/python3', ['--version'])?.replace('Python ', '') ?? 'unknown')
        : 'not installed',
      celery: run('/usr/bin/python3', ['-c', 'import celery; print(celery.__version__)']) ?? 'not installed',
      fastapi: run('/usr/bin/python3', ['-c', 'import fastapi; print(fastapi.__version__)']) ?? 'not installed',
      uvicorn: run('/usr/bin/python3', ['-c', 'import uvicorn; print(uvicorn.__version__)']) ?? 'not installed',
    },
  };
}
