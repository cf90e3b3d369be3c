/**
 * Child processes for the benchmark: every child is tracked, runs in its own process group (so a
 * child's own children, e.g. Celery's prefork pool, go with it), and is killed when the harness ends,
 * however it ends. Every wait has a timeout.
 */
import { type ChildProcess, fork, spawn } from 'node:child_process';
import { createWriteStream, mkdirSync, readFileSync, type WriteStream } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

const children = new Set<Child>();
let logDir = '/tmp';

export function setLogDir(dir: string): void {
  mkdirSync(dir, { recursive: true });
  logDir = dir;
}

export function getLogDir(): string {
  return logDir;
}

/** Rejects with a message naming what was awaited if `promise` has not settled within `ms`. */
export async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new TimeoutError(`timed out after ${Math.round(ms)} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

export class TimeoutError extends Error {
  override name = 'TimeoutError';
}

/** Thrown inside a `waitUntil` condition: stops the wait at once instead of retrying. */
export class FatalError extends Error {
  override name = 'FatalError';
}

/** Polls `condition` every `intervalMs` until it returns a truthy value; rejects after `timeoutMs` (or at once on a `FatalError`). */
export async function waitUntil<T>(
  condition: () => T | Promise<T>,
  timeoutMs: number,
  what: string,
  intervalMs = 20,
): Promise<NonNullable<T>> {
  const deadline = performance.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await condition();
      if (v) return v as NonNullable<T>;
      last = undefined;
    } catch (err) {
      if (err instanceof FatalError) throw err;
      last = err;
    }
    if (performance.now() > deadline) {
      const why = last instanceof Error ? ` (last error: ${last.message})` : '';
      throw new TimeoutError(`timed out after ${timeoutMs} ms: ${what}${why}`);
    }
    await sleep(intervalMs);
  }
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** Waits until `GET url` answers 2xx. */
export async function waitForHttp(url: string, timeoutMs: number, child?: Child): Promise<void> {
  await waitUntil(
    async () => {
      if (child?.exited) throw new FatalError(`${child.name} exited (${child.exitInfo()}); log: ${child.logPath}\n${child.tail()}`);
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
      await res.arrayBuffer();
      return res.ok;
    },
    timeoutMs,
    `${url} to answer`,
    100,
  );
}

type Message = { type: string; [k: string]: unknown };

/** A tracked child process. Node children have an IPC channel (`request`, `on`). */
export class Child {
  readonly name: string;
  readonly proc: ChildProcess;
  readonly logPath: string;
  exited = false;
  exitCode: number | null = null;
  exitSignal: NodeJS.Signals | null = null;
  /** The child's `ready` (or `fatal`) message, kept for a `waitReady` that starts later. */
  startup: Message | undefined;
  /** The last 64 KiB of the child's standard output. */
  stdout = '';
  readonly #log: WriteStream;
  readonly #waiters = new Map<number, { resolve: (m: Message) => void; reject: (e: Error) => void }>();
  readonly #listeners = new Set<(m: Message) => void>();
  readonly #exitWaiters = new Set<() => void>();
  #seq = 0;

  constructor(name: string, proc: ChildProcess, logPath: string, log: WriteStream) {
    this.name = name;
    this.proc = proc;
    this.logPath = logPath;
    this.#log = log;
    proc.stdout?.pipe(log, { end: false });
    proc.stderr?.pipe(log, { end: false });
    proc.stdout?.on('data', (chunk: Buffer) => {
      this.stdout = (this.stdout + chunk.toString('utf8')).slice(-65_536);
    });
    proc.on('message', (m: Message) => {
      if (typeof m !== 'object' || m === null) return;
      if (typeof m.reqId === 'number' && this.#waiters.has(m.reqId)) {
        const w = this.#waiters.get(m.reqId)!;
        this.#waiters.delete(m.reqId);
        if (m.type === 'error') w.reject(new Error(`${this.name}: ${String(m.message)}`));
        else w.resolve(m);
        return;
      }
      if (m.type === 'ready' || m.type === 'fatal') this.startup = m;
      for (const l of this.#listeners) l(m);
    });
    proc.on('close', (code, signal) => {
      this.exited = true;
      this.exitCode = code;
      this.exitSignal = signal;
      children.delete(this);
      for (const w of this.#waiters.values())
        w.reject(new Error(`${this.name} exited (${this.exitInfo()}) while a request was pending; log: ${this.logPath}\n${this.tail()}`));
      this.#waiters.clear();
      for (const w of this.#exitWaiters) w();
      this.#exitWaiters.clear();
    });
    proc.on('error', (err) => log.write(`[harness] process error: ${err.message}\n`));
    children.add(this);
  }

  get pid(): number {
    return this.proc.pid ?? -1;
  }

  exitInfo(): string {
    return this.exitSignal ? `signal ${this.exitSignal}` : `code ${this.exitCode}`;
  }

  /** The last lines of this child's log, for error messages. */
  tail(lines = 15): string {
    try {
      return readFileSync(this.logPath, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
      return '';
    }
  }

  /** Sends a command over IPC and waits for the reply carrying the same `reqId`. */
  request<T extends Message = Message>(cmd: Record<string, unknown>, timeoutMs: number): Promise<T> {
    if (this.exited) return Promise.reject(new Error(`${this.name} has exited (${this.exitInfo()}); log: ${this.logPath}\n${this.tail()}`));
    const reqId = ++this.#seq;
    const p = new Promise<Message>((resolve, reject) => {
      this.#waiters.set(reqId, { resolve, reject });
      this.proc.send({ ...cmd, reqId });
    });
    return withTimeout(p, timeoutMs, `${this.name}: ${String(cmd.cmd)}`).finally(() => this.#waiters.delete(reqId)) as Promise<T>;
  }

  /** Listens to unsolicited messages (progress reports). Returns a function removing the listener. */
  on(listener: (m: Message) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  send(cmd: Record<string, unknown>): void {
    if (!this.exited) this.proc.send(cmd);
  }

  waitExit(timeoutMs: number): Promise<void> {
    if (this.exited) return Promise.resolve();
    return withTimeout(new Promise<void>((resolve) => this.#exitWaiters.add(resolve)), timeoutMs, `${this.name} to exit`);
  }

  /** SIGTERM to the process group, then SIGKILL after `graceMs`. */
  async stop(graceMs = 5000): Promise<void> {
    if (this.exited) return;
    killGroup(this.pid, 'SIGTERM');
    try {
      await this.waitExit(graceMs);
    } catch {
      killGroup(this.pid, 'SIGKILL');
      await this.waitExit(2000).catch(() => undefined);
    }
    killGroup(this.pid, 'SIGKILL'); // anything the child left behind in its group
  }

  /** Asks a Node child to exit over IPC, then stops it. */
  async close(graceMs = 5000): Promise<void> {
    if (this.exited) return;
    try {
      this.send({ cmd: 'exit' });
      await this.waitExit(graceMs);
    } catch {
      // fall through to the signal
    }
    await this.stop(2000);
  }

  logLine(text: string): void {
    this.#log.write(`[harness] ${text}\n`);
  }
}

function killGroup(pid: number, signal: NodeJS.Signals): void {
  if (pid <= 0) return;
  try {
    process.kill(-pid, signal);
  } catch {
    try {
      process.kill(pid, signal);
    } catch {
      // already gone
    }
  }
}

function openLog(name: string): { path: string; stream: WriteStream } {
  const path = join(logDir, `${name.replace(/[^\w.-]+/g, '_')}.log`);
  return { path, stream: createWriteStream(path, { flags: 'a' }) };
}

/** Forks a Node module (run by this same Node binary) with an IPC channel. */
export function forkNode(
  name: string,
  module: string,
  args: string[] = [],
  env: Record<string, string> = {},
  cwd?: string,
  execArgv: string[] = [],
): Child {
  const { path, stream } = openLog(name);
  const proc = fork(module, args, {
    cwd,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    detached: true,
    // BENCH_CHILD_EXEC_ARGV: extra Node flags for every child, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof" to profile.
    execArgv: [...execArgv, ...(process.env.BENCH_CHILD_EXEC_ARGV ? process.env.BENCH_CHILD_EXEC_ARGV.split(' ') : [])],
  });
  return new Child(name, proc, path, stream);
}

/** Spawns any command (no IPC). */
export function spawnCmd(name: string, cmd: string, args: string[], opts: { env?: Record<string, string>; cwd?: string } = {}): Child {
  const { path, stream } = openLog(name);
  const proc = spawn(cmd, args, {
    cwd: opts.cwd,
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  return new Child(name, proc, path, stream);
}

/** Waits for a Node child's `{ type: 'ready' }` message. */
export function waitReady(child: Child, timeoutMs: number): Promise<Message> {
  if (child.startup?.type === 'ready') return Promise.resolve(child.startup);
  if (child.startup?.type === 'fatal') return Promise.reject(new Error(`${child.name}: ${String(child.startup.message)}`));
  if (child.exited)
    return Promise.reject(
      new Error(`${child.name} exited (${child.exitInfo()}) before it was ready; log: ${child.logPath}\n${child.tail()}`),
    );
  return withTimeout(
    new Promise<Message>((resolve, reject) => {
      const off = child.on((m) => {
        if (m.type === 'ready') {
          off();
          resolve(m);
        } else if (m.type === 'fatal') {
          off();
          reject(new Error(`${child.name}: ${String(m.message)}`));
        }
      });
      child.proc.once('exit', () =>
        reject(new Error(`${child.name} exited (${child.exitInfo()}) before it was ready; log: ${child.logPath}\n${child.tail()}`)),
      );
    }),
    timeoutMs,
    `${child.name} to be ready`,
  );
}

/** Kills every child still running (process groups, SIGKILL). Synchronous: safe in an exit handler. */
export function killAll(): void {
  for (const c of children) killGroup(c.pid, 'SIGKILL');
  children.clear();
}

/** Stops every child still running (but `keep`), politely first. */
export async function stopAll(keep?: Child): Promise<void> {
  await Promise.all([...children].filter((c) => c !== keep).map((c) => c.stop(3000)));
}

export function liveChildren(keep?: Child): string[] {
  return [...children].filter((c) => c !== keep).map((c) => `${c.name} (pid ${c.pid})`);
}

let hooked = false;
/** Makes sure no child outlives the harness: on exit, on SIGINT/SIGTERM, on an uncaught error. */
export function installCleanup(onSignal?: () => void): void {
  if (hooked) return;
  hooked = true;
  process.on('exit', killAll);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      process.stderr.write(`\nbench: ${sig}: killing ${children.size} child process(es)\n`);
      onSignal?.();
      killAll();
      process.exit(130);
    });
  }
  process.on('uncaughtException', (err) => {
    process.stderr.write(`bench: uncaught ${err.stack ?? err}\n`);
    killAll();
    process.exit(1);
  });
}
