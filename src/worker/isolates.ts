// The isolates of a worker: worker threads and child processes that run the handlers of tasks with
// `isolation: 'thread' | 'process'`, one attempt at a time each (their main module is
// isolate-entry.ts). They start when first needed and are reused; the worker keeps at most its
// concurrency of idle ones per kind (and memory limit). The worker's own event loop never runs an
// isolated handler, so it keeps renewing leases and serving other runs while one computes.
//
// Stopping one for real: when the attempt times out, its isolate is terminated (thread) or killed
// with SIGKILL (process) at once; on any other abort (cancel, lost lease, shutdown) the handler's
// `ctx.signal` aborts first and the isolate is stopped if the handler has not returned within
// ABORT_GRACE_MS. An isolate that ends during an attempt (killed, crashed, out of memory) fails that
// attempt only, with IsolateCrashedError or IsolateMemoryError, and is not reused.
import { type ChildProcess, fork } from 'node:child_process';
import { Worker as Thread } from 'node:worker_threads';
import { IsolateCrashedError, IsolateMemoryError, TaskTimeoutError } from '../core/errors.ts';
import type { TaskDefinition } from '../task/task.ts';
import { type FromIsolate, fromWire, type RunMessage, type ToIsolate, toWire } from './isolate-protocol.ts';

/** After an abort other than a timeout, how long an isolated handler has to return before its isolate is stopped, in ms. */
export const ABORT_GRACE_MS = 1000;

/** How long closing the pool waits for its isolates to end, in ms (a SIGKILL or terminate() takes far less). */
const CLOSE_WAIT_MS = 5000;

const ENTRY = new URL(import.meta.url.endsWith('.ts') ? './isolate-entry.ts' : './isolate-entry.js', import.meta.url);

/** One attempt handed to an isolate. */
export interface IsolatedAttempt {
  message: RunMessage;
  /** Aborts when the worker stops the attempt (the reason says why). */
  signal: AbortSignal;
  progress(value: unknown): void;
  log(line: string): void;
}

interface Job {
  attempt: IsolatedAttempt;
  resolve(value: unknown): void;
  reject(err: unknown): void;
  done: boolean;
}

/** The tail of a process's stderr kept to tell an out-of-memory death from another crash. */
const STDERR_TAIL = 4096;

class Isolate {
  readonly kind: 'thread' | 'process';
  readonly key: string;
  readonly memoryLimitMb: number | undefined;
  readonly #thread: Thread | undefined;
  readonly #child: ChildProcess | undefined;
  job: Job | undefined;
  dead = false;
  #stderr = '';
  #memoryError: string | undefined;
  /** Why the worker stopped it (it then ended as asked, not by a crash). */
  #stoppedFor: unknown;
  /** Resolves once the thread or process has ended. */
  readonly ended: Promise<void>;
  #ended!: () => void;
  readonly #onGone: (iso: Isolate) => void;

  constructor(kind: 'thread' | 'process', key: string, memoryLimitMb: number | undefined, onGone: (iso: Isolate) => void) {
    this.kind = kind;
    this.key = key;
    this.memoryLimitMb = memoryLimitMb;
    this.#onGone = onGone;
    this.ended = new Promise((resolve) => {
      this.#ended = resolve;
    });
    if (kind === 'thread') {
      const thread = new Thread(ENTRY, {
        ...(memoryLimitMb ? { resourceLimits: { maxOldGenerationSizeMb: memoryLimitMb } } : {}),
      });
      thread.on('message', (m: FromIsolate) => this.#onMessage(m));
      thread.on('error', (err: Error & { code?: string }) => {
        if (err?.code === 'ERR_WORKER_OUT_OF_MEMORY') this.#memoryError = err.message;
        else
          this.#fail(
            new IsolateCrashedError(`The thread running this attempt ended with an uncaught error: ${err?.message ?? String(err)}`),
          );
      });
      thread.on('exit', (code) => this.#exited(`exited with code ${code}`));
      this.#thread = thread;
    } else {
      const execArgv = process.execArgv.filter((a) => !/^--(inspect|test|max-old-space-size|watch)/.test(a));
      if (memoryLimitMb) execArgv.push(`--max-old-space-size=${memoryLimitMb}`);
      const child = fork(ENTRY, [], { serialization: 'advanced', execArgv, stdio: ['ignore', 'inherit', 'pipe', 'ipc'] });
      child.on('message', (m: FromIsolate) => this.#onMessage(m));
      child.stderr?.on('data', (chunk: Buffer) => {
        process.stderr.write(chunk);
        this.#stderr = (this.#stderr + chunk.toString()).slice(-STDERR_TAIL);
      });
      child.on('error', () => {}); // a failed spawn or send also ends in 'exit'
      child.on('exit', (code, signal) => this.#exited(signal ? `was killed by ${signal}` : `exited with code ${code}`));
      this.#child = child;
    }
  }

  /** The isolate's process id (the worker's own for a thread). */
  get pid(): number {
    return this.#child?.pid ?? process.pid;
  }

  run(job: Job): void {
    this.job = job;
    this.#ref(true);
    const { signal } = job.attempt;
    const onAbort = () => {
      if (this.job !== job) return;
      const reason = signal.reason;
      if (reason instanceof TaskTimeoutError) return this.stop(reason);
      this.#send({ t: 'abort', reason: toWire(reason) });
      const timer = setTimeout(() => {
        if (this.job === job) this.stop(reason);
      }, ABORT_GRACE_MS);
      timer.unref();
    };
    if (signal.aborted) {
      // Stopped before it started: the isolate never saw it, and stays for the next run.
      this.job = undefined;
      this.#ref(false);
      job.done = true;
      job.reject(signal.reason);
      this.#onGone(this);
      return;
    }
    signal.addEventListener('abort', onAbort, { once: true });
    this.#send(job.attempt.message);
  }

  /** Stops the isolate for real: the thread is terminated, the process killed (SIGKILL). */
  stop(reason: unknown): void {
    if (this.dead) return;
    this.#stoppedFor = reason;
    if (this.#thread) void this.#thread.terminate();
    else this.#child?.kill('SIGKILL');
  }

  #send(message: ToIsolate): void {
    try {
      if (this.#thread) this.#thread.postMessage(message);
      else this.#child?.send(message);
    } catch (err) {
      this.#fail(err);
    }
  }

  #ref(busy: boolean): void {
    if (this.#thread) busy ? this.#thread.ref() : this.#thread.unref();
    else if (this.#child) {
      busy ? this.#child.ref() : this.#child.unref();
      const channel = this.#child.channel as { ref(): void; unref(): void } | undefined;
      busy ? channel?.ref() : channel?.unref();
    }
  }

  #onMessage(m: FromIsolate): void {
    const job = this.job;
    if (!job || job.done) return;
    if (m.t === 'progress') {
      try {
        job.attempt.progress(m.value);
      } catch {
        // already checked in the isolate
      }
    } else if (m.t === 'log') job.attempt.log(m.line);
    else if (m.t === 'done') {
      this.job = undefined;
      this.#ref(false);
      job.done = true;
      if (m.ok) job.resolve(m.value);
      else job.reject(fromWire(m.error));
      this.#onGone(this); // back to the pool, unless it is being stopped
    } else if (m.t === 'crash') {
      this.#fail(new IsolateCrashedError(`The ${this.kind} running this attempt crashed: ${m.error.name}: ${m.error.message}`));
    }
  }

  #fail(err: unknown): void {
    const job = this.job;
    if (job && !job.done) {
      job.done = true;
      job.reject(err);
    }
  }

  #exited(how: string): void {
    if (this.dead) return;
    this.dead = true;
    this.#ended();
    const job = this.job;
    this.job = undefined;
    if (job && !job.done) {
      const memory = this.#memoryError ?? (/heap limit|heap out of memory/i.test(this.#stderr) ? 'heap limit reached' : undefined);
      const what = this.kind === 'thread' ? 'thread' : `process ${this.pid}`;
      let err: unknown;
      if (this.#stoppedFor !== undefined) err = this.#stoppedFor;
      else if (memory)
        err = new IsolateMemoryError(
          `The ${what} running this attempt went past its memory limit${this.memoryLimitMb ? ` of ${this.memoryLimitMb} MB` : ''} (${memory}) and was stopped`,
        );
      else err = new IsolateCrashedError(`The ${what} running this attempt ${how}`);
      job.done = true;
      job.reject(err);
    }
    this.#onGone(this);
  }
}

/** The isolates of one worker. */
export class IsolatePool {
  /** Idle isolates kept per kind and memory limit (the worker's concurrency). */
  readonly #size: number;
  readonly #idle = new Map<string, Isolate[]>();
  readonly #all = new Set<Isolate>();
  #closed = false;

  constructor(size: number) {
    this.#size = size;
  }

  /** How many isolates are alive (busy or idle). */
  get size(): number {
    return this.#all.size;
  }

  /** Runs one attempt in an isolate of the task's kind; resolves with the handler's value, rejects with its error (or why the isolate ended). */
  run(task: TaskDefinition, attempt: IsolatedAttempt): Promise<unknown> {
    if (task.isolation === 'none') throw new TypeError(`Task "${task.name}" is not isolated`);
    return new Promise((resolve, reject) => {
      if (this.#closed) return reject(new IsolateCrashedError('The worker is stopping: no new isolated attempt starts'));
      const key = `${task.isolation}:${task.memoryLimitMb ?? ''}`;
      const idle = this.#idle.get(key);
      let iso = idle?.pop();
      if (!iso) {
        iso = new Isolate(task.isolation as 'thread' | 'process', key, task.memoryLimitMb, (i) => this.#gone(i));
        this.#all.add(iso);
      }
      iso.run({ attempt, resolve, reject, done: false });
    });
  }

  /** An isolate finished its attempt (back to the idle list) or ended (forgotten). */
  #gone(iso: Isolate): void {
    const idle = this.#idle.get(iso.key) ?? [];
    if (iso.dead) {
      this.#all.delete(iso);
      const at = idle.indexOf(iso);
      if (at >= 0) idle.splice(at, 1);
      return;
    }
    if (this.#closed || idle.length >= this.#size) {
      iso.stop(undefined);
      return;
    }
    idle.push(iso);
    this.#idle.set(iso.key, idle);
  }

  /** Stops every isolate (busy ones too: their runs were handed back or settled by now); resolves once they have ended. */
  async close(): Promise<void> {
    this.#closed = true;
    const all = [...this.#all];
    for (const iso of all) iso.stop(new IsolateCrashedError('The worker stopped'));
    this.#idle.clear();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all(all.map((iso) => iso.ended)),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, CLOSE_WAIT_MS);
        timer.unref();
      }),
    ]);
    clearTimeout(timer);
  }
}
