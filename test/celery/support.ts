/**
 * The Celery interop tests' rig: a redis-server of their own (so Celery's fixed key names, `celery`,
 * `unacked`, `celery-task-meta-*`, never touch the shared Redis), Debian's Python Celery
 * (`/usr/bin/python3` with python3-celery and python3-redis), and helpers to run `fixtures/pyapp.py`.
 */
import { type ChildProcess, execFile, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { startRedisServer, type OwnRedis } from '../fixtures/redis-servers.ts';
import { redisServerMissing, requires } from '../fixtures/prereq.ts';
import { tempDir } from '../helpers.ts';

export const FIXTURES = fileURLToPath(new URL('./fixtures/', import.meta.url));
export const PYTHON = '/usr/bin/python3';
const run = promisify(execFile);

/** Why Debian's Celery cannot be run here, or undefined. */
export function celeryMissing(): string | undefined {
  const r = spawnSync(PYTHON, ['-c', 'import celery, redis; print(celery.__version__)'], { encoding: 'utf8', timeout: 30_000 });
  return r.status === 0
    ? undefined
    : `${PYTHON} cannot import celery and redis (apt-get install -y python3-celery python3-redis): ${(r.stderr ?? r.error?.message ?? '').trim().split('\n').at(-1)}`;
}

/** The `skip` option for a describe that needs redis-server and Debian's Celery. */
export function celerySkip(): string | false {
  return requires('redis-server', redisServerMissing()) || requires('python3-celery', celeryMissing());
}

export async function ownRedis(label: string): Promise<{ server: OwnRedis; url: string }> {
  const server = await startRedisServer(join(tempDir(label), 'redis'), []);
  return { server, url: `redis://127.0.0.1:${server.port}/0` };
}

export interface PyOutcome {
  id: string;
  ok?: unknown;
  exc_type?: string;
  exc_module?: string;
  message?: string;
  replies?: Record<string, { ok?: string }>[];
}

const pyEnv = (url: string, extra: Record<string, string> = {}) => ({
  ...process.env,
  REDIS_URL: url,
  PYTHONDONTWRITEBYTECODE: '1',
  ...extra,
});

/** Runs `pyapp.py <command> <spec>` and returns its JSON line. */
export async function py(
  url: string,
  command: 'call' | 'get' | 'revoke' | 'chord' | 'canvas',
  spec: Record<string, unknown>,
): Promise<PyOutcome> {
  const { stdout } = await run(PYTHON, [join(FIXTURES, 'pyapp.py'), command, JSON.stringify(spec)], {
    cwd: FIXTURES,
    env: pyEnv(url),
    timeout: 90_000,
  });
  return JSON.parse(stdout.trim().split('\n').at(-1) as string) as PyOutcome;
}

/** Starts `celery -A pyapp worker` on `queues`; `stop()` ends it (SIGTERM, then SIGKILL). */
export function pythonWorker(
  url: string,
  queues: string,
  extraEnv: Record<string, string> = {},
): { child: ChildProcess; output(): string; stop(): Promise<void> } {
  const child = spawn(
    PYTHON,
    [
      '-m',
      'celery',
      '-A',
      'pyapp',
      'worker',
      '-Q',
      queues,
      '-c',
      '1',
      '--pool',
      'solo',
      '--loglevel',
      'info',
      '--without-gossip',
      '--without-mingle',
      '--without-heartbeat',
    ],
    {
      cwd: FIXTURES,
      env: pyEnv(url, extraEnv),
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let out = '';
  const keep = (c: Buffer) => {
    out = (out + c.toString()).slice(-20_000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const gone = once(child, 'exit');
  return {
    child,
    output: () => out,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await gone;
      clearTimeout(t);
    },
  };
}

/** Runs `python3 -m celery -A pyapp <args>` (e.g. `inspect ping`) and returns its output. */
export async function celeryCli(url: string, args: string[]): Promise<string> {
  const { stdout, stderr } = await run(PYTHON, ['-m', 'celery', '-A', 'pyapp', ...args], {
    cwd: FIXTURES,
    env: pyEnv(url),
    timeout: 90_000,
  });
  return stdout + stderr;
}
