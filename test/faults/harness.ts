/**
 * The fault tests' peers, all real and all owned by the test that starts them:
 *
 * - `Procs`: child processes (workers, the service) tracked so that `killAll()` in a `finally`
 *   leaves nothing behind; stdout and stderr kept as a short tail for failure messages.
 * - `startRedis`: a `redis-server` of the test's own on a free port, with AOF and
 *   `appendfsync always` in a temp dir, that can be killed with SIGKILL and started again on the
 *   same port and dir. The machine's shared Redis is never touched.
 * - `TcpProxy`: a small `net` proxy between the service and Redis that the test controls:
 *   `forward`, `drop` (resets every connection, and every new one), `blackhole` (accepts, forwards
 *   nothing, holds the bytes; `forward` again delivers them, as TCP would after a partition heals).
 * - `startSmtpSink`: a real SMTP server (smtp-server) counting the messages per recipient.
 * - `UserLoad`: a steady stream of `POST /users/` requests, every answer recorded.
 * - `workflowKillRig`: what the workflow kill tests (workflow-kill, spawn-kill) set up alike: their
 *   Redis, the worker processes' environment and flags, an app to build workflows with, and the
 *   check that a run ran again only after a kill.
 *
 * Every wait here has a limit: a fault test fails with a message, it never hangs.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { SMTPServer } from 'smtp-server';
import type { Broker } from '../../src/broker/types.ts';
import { createErrand, Errand } from '../../src/index.ts';
import { quietLogger } from '../fixtures/brokers.ts';
import { freePort } from '../fixtures/redis-servers.ts';
import { tempDir, waitFor } from '../helpers.ts';

export const NODE = process.execPath;
export const ROOT = new URL('../../', import.meta.url).pathname;
export const CLI = join(ROOT, 'src/cli/main.ts');
export const APP_MAIN = join(ROOT, 'app/main.ts');
export const FIXTURE_TASKS = join(ROOT, 'test/faults/fixtures/tasks.ts');

/** Prints a measured figure (for docs/reliability.md), one line, easy to grep: `[fault-figures] ...`. */
export function figure(name: string, values: Record<string, unknown>): void {
  process.stdout.write(`[fault-figures] ${name} ${JSON.stringify(values)}\n`);
}

/** Waits for `promise`, at most `ms` (without leaving a timer behind that would hold the process). */
export async function atMost(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([promise.catch(() => undefined), new Promise((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}

export { freePort };

/**
 * The lease of the kill tests: only a kill ends it, never the load. A live worker renews every
 * lease/4; on a machine at load 20 its event loop can stall for a second or more, which a 1 s lease
 * did not survive (a run was then run again by a live process, which is at-least-once, but not what
 * those tests are about).
 */
export const KILL_LEASE_MS = 3000;

/**
 * A safety net for a process to start (Node loading the project's TypeScript, connecting): on a
 * loaded machine (2 cores at load 20) that takes tens of seconds, not the one or two of a quiet one.
 * Not a timing assertion: a wait that reaches it fails the test with a message instead of hanging.
 */
export const START_LIMIT_MS = 180_000;

// -------------------------------------------------------------------------------------------------
// Child processes

// Variables of the service that must not leak in from the environment running the tests.
const CLEAN = [
  'PORT',
  'HOST',
  'DATA_DIR',
  'REDIS_URL',
  'DATABASE_URL',
  'SMTP_URL',
  'MAIL_FROM',
  'ERRAND_PREFIX',
  'ERRAND_BROKER_URL',
  'ERRAND_ADMIN_TOKENS',
  'ERRAND_READ_TOKENS',
  'WORKER_CONCURRENCY',
  'NODE_TEST_CONTEXT',
];

export interface Proc {
  readonly name: string;
  readonly child: ChildProcess;
  readonly pid: number;
  /** Resolves with the exit code (null when killed by a signal) and the signal. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  readonly alive: boolean;
  /** The last few KB of stdout and stderr. */
  tail(): string;
}

export class Procs {
  readonly all = new Set<Proc>();

  spawn(name: string, args: string[], env: Record<string, string>, cwd = ROOT): Proc {
    const base = { ...process.env };
    for (const k of CLEAN) delete base[k];
    const child = spawn(NODE, args, { cwd, env: { ...base, LOG_LEVEL: 'warn', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const keep = (c: Buffer) => {
      out += c.toString();
      if (out.length > 8192) out = out.slice(-6144);
    };
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    let alive = true;
    const exited = once(child, 'exit').then(([code, signal]) => {
      alive = false;
      return { code: code as number | null, signal: signal as NodeJS.Signals | null };
    });
    const proc: Proc = {
      name,
      child,
      pid: child.pid ?? -1,
      exited,
      get alive() {
        return alive;
      },
      tail: () => out,
    };
    this.all.add(proc);
    return proc;
  }

  /** `errand worker <module>` with the fixture tasks (or `module`). */
  worker(name: string, env: Record<string, string>, flags: string[] = [], module = FIXTURE_TASKS): Proc {
    return this.spawn(name, [CLI, 'worker', module, ...flags], env);
  }

  /** Sends `signal` and waits (boundedly) for the exit. */
  async kill(
    proc: Proc,
    signal: NodeJS.Signals = 'SIGKILL',
    limitMs = 30_000,
  ): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (proc.alive) proc.child.kill(signal);
    let timer: NodeJS.Timeout | undefined;
    const limit = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`${proc.name} (pid ${proc.pid}) did not exit within ${limitMs} ms of ${signal}:\n${proc.tail()}`)),
        limitMs,
      );
    });
    try {
      return await Promise.race([proc.exited, limit]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** SIGKILL to every process still running, and waits for them. For `finally`. */
  async killAll(): Promise<void> {
    await Promise.all(
      [...this.all].map(async (p) => {
        if (p.alive) p.child.kill('SIGKILL');
        await atMost(p.exited, 5000);
      }),
    );
  }
}

// -------------------------------------------------------------------------------------------------
// The test's own Redis

export interface OwnRedis {
  port: number;
  url: string;
  dir: string;
  proc: Proc | undefined;
  /** SIGKILL, waits for the exit. */
  kill9(): Promise<void>;
  /** Starts it again on the same port and dir (it reloads its AOF), waits until it answers PING. */
  start(): Promise<void>;
  /** A command through redis-cli-free raw RESP: used for PING and INFO. */
  command(...args: string[]): Promise<string>;
  stop(): Promise<void>;
}

/**
 * A redis-server of the test's own. `persistent`: AOF with `appendfsync` always (default: nothing
 * acknowledged is lost by a kill -9) or everysec; otherwise no persistence at all (`--save ""
 * --appendonly no`, the machine's shared Redis's settings).
 */
export async function startRedis(
  procs: Procs,
  dir: string,
  { persistent = true, appendfsync = 'always' }: { persistent?: boolean; appendfsync?: 'always' | 'everysec' } = {},
): Promise<OwnRedis> {
  mkdirSync(dir, { recursive: true });
  let port = await freePort();
  const args = [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--protected-mode',
    'no',
    '--dir',
    dir,
    '--save',
    '',
    '--maxmemory-policy',
    'noeviction',
    '--appendonly',
    persistent ? 'yes' : 'no',
    '--appendfsync',
    appendfsync,
  ];
  const redis: OwnRedis = {
    port,
    url: `redis://127.0.0.1:${port}`,
    dir,
    proc: undefined,
    async kill9() {
      if (redis.proc) await procs.kill(redis.proc, 'SIGKILL');
    },
    async start() {
      const child = spawn('redis-server', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      const keep = (c: Buffer) => {
        out += c.toString();
        if (out.length > 8192) out = out.slice(-6144);
      };
      child.stdout!.on('data', keep);
      child.stderr!.on('data', keep);
      let alive = true;
      const exited = once(child, 'exit').then(([code, signal]) => {
        alive = false;
        return { code: code as number | null, signal: signal as NodeJS.Signals | null };
      });
      const proc: Proc = {
        name: `redis-server:${port}`,
        child,
        pid: child.pid ?? -1,
        exited,
        get alive() {
          return alive;
        },
        tail: () => out,
      };
      procs.all.add(proc);
      redis.proc = proc;
      // Until it answers PONG (loading the AOF answers -LOADING); a server that exited fails at once.
      const deadline = Date.now() + START_LIMIT_MS;
      for (;;) {
        if (!proc.alive) {
          // Its last words (the reason) may still be in the pipe.
          await atMost(new Promise((r) => (child.stdout!.readableEnded ? r(null) : child.stdout!.once('end', r))), 1000);
          throw new Error(`redis-server on port ${port} exited: ${out}`);
        }
        if ((await redis.command('PING').catch(() => '')) === 'PONG') break;
        if (Date.now() > deadline) throw new Error(`redis-server on port ${port} did not answer PING within ${START_LIMIT_MS} ms: ${out}`);
        await sleep(50);
      }
    },
    command: (...cmd: string[]) => rawCommand(port, cmd),
    async stop() {
      if (redis.proc?.alive) {
        await rawCommand(port, ['SHUTDOWN', 'NOSAVE']).catch(() => {});
        await atMost(redis.proc.exited, 5000);
        if (redis.proc.alive) await procs.kill(redis.proc, 'SIGKILL');
      }
    },
  };
  // The port was free when freePort() looked; another process (tests of other checkouts run
  // alongside) may have taken it since: then another one.
  for (let tries = 1; ; tries++) {
    try {
      await redis.start();
      return redis;
    } catch (err) {
      if (tries >= 5 || !/Address already in use/i.test((err as Error).message)) throw err;
      port = await freePort();
      args[1] = String(port);
      redis.port = port;
      redis.url = `redis://127.0.0.1:${port}`;
    }
  }
}

/** One command over a fresh connection (inline RESP), the reply as text; for PING, INFO, DBSIZE. */
function rawCommand(port: number, cmd: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = createConnection({ port, host: '127.0.0.1' });
    let buf = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`no answer to ${cmd[0]} on port ${port}`));
    }, 3000);
    sock.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    sock.on('data', (c) => {
      buf += c.toString();
      const reply = parseReply(buf);
      if (reply !== undefined) {
        clearTimeout(timer);
        sock.end();
        resolve(reply);
      }
    });
    sock.on('close', () => {
      clearTimeout(timer);
      if (parseReply(buf) === undefined) reject(new Error(`connection closed before the answer to ${cmd[0]}`));
    });
    sock.write(`*${cmd.length}\r\n${cmd.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`);
  });
}

function parseReply(buf: string): string | undefined {
  const nl = buf.indexOf('\r\n');
  if (nl < 0) return undefined;
  const type = buf[0];
  const line = buf.slice(1, nl);
  if (type === '+' || type === ':') return line;
  if (type === '-') return `ERR:${line}`;
  if (type === '$') {
    const len = Number(line);
    if (len < 0) return '';
    const body = Buffer.from(buf.slice(nl + 2));
    if (body.length < len + 2) return undefined;
    return body.subarray(0, len).toString();
  }
  return line;
}

// -------------------------------------------------------------------------------------------------
// A TCP proxy the test controls

export type ProxyMode = 'forward' | 'drop' | 'blackhole';

interface Pair {
  client: Socket;
  upstream: Socket | undefined;
  /** Bytes held in black-hole mode, per direction. */
  toUpstream: Buffer[];
  toClient: Buffer[];
}

export class TcpProxy {
  readonly port: number;
  readonly #server: Server;
  readonly #target: { host: string; port: number };
  readonly #pairs = new Set<Pair>();
  #mode: ProxyMode = 'forward';
  /** Connections accepted, for the report. */
  accepted = 0;

  private constructor(server: Server, port: number, target: { host: string; port: number }) {
    this.#server = server;
    this.port = port;
    this.#target = target;
    server.on('connection', (client) => this.#accept(client));
  }

  static async start(targetPort: number, host = '127.0.0.1'): Promise<TcpProxy> {
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', resolve);
    });
    const { port } = server.address() as { port: number };
    return new TcpProxy(server, port, { host, port: targetPort });
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  get mode(): ProxyMode {
    return this.#mode;
  }

  /**
   * `drop`: resets every open connection now and every new one at once. `blackhole`: open and new
   * connections stay up but nothing goes through (bytes are held). `forward`: normal again; bytes
   * held by a black hole are delivered, held connections are connected upstream.
   */
  setMode(mode: ProxyMode): void {
    this.#mode = mode;
    if (mode === 'drop') {
      for (const p of [...this.#pairs]) this.#close(p);
    } else if (mode === 'forward') {
      for (const p of [...this.#pairs]) {
        if (!p.upstream) this.#connect(p);
        else this.#drain(p);
      }
    }
  }

  #accept(client: Socket): void {
    this.accepted++;
    client.setNoDelay(true);
    if (this.#mode === 'drop') {
      client.on('error', () => {});
      client.resetAndDestroy();
      return;
    }
    const pair: Pair = { client, upstream: undefined, toUpstream: [], toClient: [] };
    this.#pairs.add(pair);
    client.on('data', (c: Buffer) => {
      if (this.#mode === 'forward' && pair.upstream && pair.toUpstream.length === 0) pair.upstream.write(c);
      else pair.toUpstream.push(c);
    });
    client.on('error', () => this.#close(pair));
    client.on('close', () => this.#close(pair));
    if (this.#mode === 'forward') this.#connect(pair);
  }

  #connect(pair: Pair): void {
    const up = createConnection(this.#target);
    up.setNoDelay(true);
    pair.upstream = up;
    up.on('connect', () => this.#drain(pair));
    up.on('data', (c: Buffer) => {
      if (this.#mode === 'forward' && pair.toClient.length === 0) pair.client.write(c);
      else pair.toClient.push(c);
    });
    up.on('error', () => this.#close(pair));
    up.on('close', () => this.#close(pair));
  }

  #drain(pair: Pair): void {
    if (this.#mode !== 'forward' || !pair.upstream || pair.upstream.connecting) return;
    for (const c of pair.toUpstream.splice(0)) pair.upstream.write(c);
    for (const c of pair.toClient.splice(0)) pair.client.write(c);
  }

  #close(pair: Pair): void {
    if (!this.#pairs.delete(pair)) return;
    pair.client.on('error', () => {});
    pair.client.resetAndDestroy();
    if (pair.upstream) {
      pair.upstream.on('error', () => {});
      pair.upstream.destroy();
    }
  }

  async close(): Promise<void> {
    for (const p of [...this.#pairs]) this.#close(p);
    await new Promise((resolve) => this.#server.close(resolve));
  }
}

// -------------------------------------------------------------------------------------------------
// SMTP sink

export interface SmtpSink {
  url: string;
  /** Messages accepted, per recipient address (lower case). */
  perRecipient: Map<string, number>;
  /** Distinct Message-IDs accepted, per recipient address (lower case). */
  messageIds: Map<string, Set<string>>;
  /** When each message was accepted (epoch ms), in order. */
  times: number[];
  /** Every message accepted, in order. */
  deliveries: { to: string; messageId: string; at: number }[];
  total(): number;
  close(): Promise<void>;
}

/** A real SMTP server (no TLS, no auth) on a free port, counting the messages it accepts per recipient. */
export async function startSmtpSink(): Promise<SmtpSink> {
  const perRecipient = new Map<string, number>();
  const messageIds = new Map<string, Set<string>>();
  const times: number[] = [];
  const deliveries: { to: string; messageId: string; at: number }[] = [];
  let total = 0;
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS', 'AUTH'],
    logger: false,
    size: 1024 * 1024,
    // Closing waits this long for clients' pooled connections (the default is 30 s).
    closeTimeout: 500,
    onData(stream, session, callback) {
      let head = '';
      stream.on('data', (c: Buffer) => {
        if (head.length < 8192) head += c.toString('latin1');
      });
      stream.on('end', () => {
        total++;
        times.push(Date.now());
        const messageId = /^message-id:\s*(\S+)/im.exec(head)?.[1] ?? `(none ${total})`;
        for (const r of session.envelope.rcptTo) {
          const a = r.address.toLowerCase();
          perRecipient.set(a, (perRecipient.get(a) ?? 0) + 1);
          let ids = messageIds.get(a);
          if (!ids) messageIds.set(a, (ids = new Set()));
          ids.add(messageId);
          deliveries.push({ to: a, messageId, at: Date.now() });
        }
        callback(null);
      });
    },
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  // Clients killed mid-session (the point of these tests) reset their connections: the server
  // reports each as an 'error' event, which would otherwise be thrown as uncaught.
  server.on('error', () => {});
  const { port } = server.server.address() as { port: number };
  return {
    url: `smtp://127.0.0.1:${port}`,
    perRecipient,
    messageIds,
    times,
    deliveries,
    total: () => total,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

// -------------------------------------------------------------------------------------------------
// HTTP load on the service

export interface Answer {
  email: string;
  /** HTTP status, or 0 when the request got no answer (connection refused or reset). */
  status: number;
  retryAfter: string | null;
  userId?: string;
  /** The run id, or null when the API answered 201 without one (the broker was unreachable). */
  runId?: string | null;
  /** When the request was sent, and when its answer (or failure) came. */
  at: number;
  doneAt: number;
  /** For status 0, the error code (`ECONNREFUSED`: the request was never taken) or message; else the body. */
  error?: string;
}

/** `POST /users/` from `concurrency` loops until stopped; every answer is recorded. */
export class UserLoad {
  readonly answers: Answer[] = [];
  readonly #base: () => string;
  readonly #tag: string;
  #n = 0;
  #stopped = false;
  #loops: Promise<void>[] = [];
  /** Pause between requests of one loop, in ms. */
  readonly #pauseMs: number;

  constructor(base: string | (() => string), tag: string, { concurrency = 4, pauseMs = 10 } = {}) {
    this.#base = typeof base === 'string' ? () => base : base;
    this.#tag = tag;
    this.#pauseMs = pauseMs;
    for (let i = 0; i < concurrency; i++) this.#loops.push(this.#loop());
  }

  async #loop(): Promise<void> {
    while (!this.#stopped) {
      await this.post();
      await sleep(this.#pauseMs);
    }
  }

  /** One request, recorded. */
  async post(): Promise<Answer> {
    const email = `${this.#tag}-${++this.#n}@example.com`;
    const at = Date.now();
    let answer: Answer;
    try {
      const res = await fetch(`${this.#base()}/users/`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ username: `u${this.#n}`, email }),
        signal: AbortSignal.timeout(30_000),
      });
      const text = await res.text();
      answer = { email, status: res.status, retryAfter: res.headers.get('retry-after'), at, doneAt: Date.now() };
      if (res.status === 201) {
        const body = JSON.parse(text) as { user: { id: string }; task: { id: string } | null };
        answer.userId = body.user.id;
        answer.runId = body.task?.id ?? null;
      } else {
        answer.error = text.slice(0, 300);
      }
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause?.code;
      answer = { email, status: 0, retryAfter: null, at, doneAt: Date.now(), error: cause ?? (err as Error).message };
    }
    this.answers.push(answer);
    return answer;
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    await atMost(Promise.all(this.#loops), 35_000);
  }

  /** Counts of answers by status. */
  summary(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const a of this.answers) out[a.status] = (out[a.status] ?? 0) + 1;
    return out;
  }
}

/** Waits for `GET /healthz` to answer 200 (the process may still be starting). */
export async function waitHttp(base: string, proc: Proc, path = '/healthz', timeoutMs = START_LIMIT_MS): Promise<void> {
  await waitFor(
    async () => {
      if (!proc.alive) throw new Error(`${proc.name} exited:\n${proc.tail()}`);
      const res = await fetch(`${base}${path}`, { signal: AbortSignal.timeout(2000) });
      await res.arrayBuffer();
      return res.ok;
    },
    { timeoutMs, intervalMs: 100, message: `${base}${path} (${proc.name})` },
  );
}

/**
 * Waits until the test's own client answers (its first connection made, Redis's ready check done).
 * A command waits for a client's first connection up to 10 s (the connect timeout); on a very
 * loaded machine even that can pass, and the first command would then fail with
 * `BrokerUnavailableError` although Redis is up. The workers under test retry by themselves; the
 * test's client waits here, once, before its first use. A safety net, not a timing.
 */
export async function connected(client: Errand | Broker): Promise<void> {
  const broker = client instanceof Errand ? await client.broker() : client;
  const answers = async () => {
    await broker.ping();
    return true;
  };
  await waitFor(answers, { timeoutMs: START_LIMIT_MS, intervalMs: 100, message: 'the test client to connect' });
}

export function ensureDir(dir: string): string {
  if (!existsSync(dir)) mkdirSync(dir, { recursive: true });
  return dir;
}

/** One execution of a fixture task's handler, from its log lines. */
export interface Execution {
  attempt: number;
  pid: number;
  /** When the handler started, and when it finished (absent: it never did; its process was killed). */
  startedAt: number;
  endedAt?: number;
}

/**
 * The executions recorded by the fixture tasks (`<runId> <attempt> <pid> <startMs>` and
 * `end <runId> <attempt> <pid> <endMs>` lines, one file per process), by run, in attempt order.
 */
export function executions(logDir: string): Map<string, Execution[]> {
  const out = new Map<string, Execution[]>();
  const ends = new Map<string, number>();
  for (const f of readdirSync(logDir)) {
    for (const line of readFileSync(join(logDir, f), 'utf8').split('\n')) {
      if (!line) continue;
      const fields = line.split(' ');
      if (fields[0] === 'end') {
        ends.set(`${fields[1]} ${fields[2]}`, Number(fields[4]));
        continue;
      }
      const [id, attempt, pid, at] = fields;
      let list = out.get(id!);
      if (!list) out.set(id!, (list = []));
      list.push({ attempt: Number(attempt), pid: Number(pid), startedAt: Number(at ?? Number.NaN) });
    }
  }
  for (const [id, list] of out) {
    list.sort((a, b) => a.attempt - b.attempt);
    for (const e of list) {
      const end = ends.get(`${id} ${e.attempt}`);
      if (end !== undefined) e.endedAt = end;
    }
  }
  return out;
}

// -------------------------------------------------------------------------------------------------
// The workflow kill rigs

/** Runs each worker process of a workflow kill rig executes at once. */
const WORKFLOW_KILL_CONCURRENCY = 4;

/**
 * What the workflow kill tests (workflow-kill, spawn-kill) set up alike: a Redis of their own (AOF,
 * `appendfsync always`), worker processes of the fixture tasks (fixtures/tasks.ts) on the rig's
 * queues with the kill tests' lease (KILL_LEASE_MS) and lease losses unbounded (a run is in flight
 * at many kills: these tests are about redelivery, not the poison bound), and an app on that Redis,
 * connected, on which the test defines the tasks as the workers do, to build and enqueue workflows.
 */
export interface WorkflowKillRig {
  readonly procs: Procs;
  readonly redis: OwnRedis;
  readonly app: Errand;
  readonly broker: Broker;
  /** Starts a worker process on the rig's queues. */
  worker(name: string): Proc;
  /** The fixture tasks' executions so far (`executions` of the rig's log directory). */
  executions(): Map<string, Execution[]>;
  /**
   * At least once, and again only after a kill: asserts that every execution of a run but its last
   * was in a process no longer alive among `workers`, or in one of `stalled` (pids of processes
   * stopped past their lease); returns how many executions were such repeats.
   */
  ranAgainOnlyAfterKills(workers: readonly Proc[], stalled?: ReadonlySet<number>): number;
  /** Kills every process it started, closes the app and stops Redis. For `finally`. */
  close(): Promise<void>;
}

/**
 * Starts a workflow kill rig. `partMs`: how long a workflow part works (FAULT_WF_PART_MS); `env`:
 * more of the workers' environment. If the app cannot connect, what was started is stopped.
 */
export async function workflowKillRig(options: {
  label: string;
  prefix: string;
  queues: readonly string[];
  partMs: number;
  env?: Record<string, string>;
}): Promise<WorkflowKillRig> {
  const { label, prefix, queues, partMs } = options;
  const procs = new Procs();
  const dir = tempDir(label);
  const logDir = ensureDir(join(dir, 'log'));
  const redis = await startRedis(procs, join(dir, 'redis'));
  const env = {
    ERRAND_BROKER_URL: redis.url,
    ERRAND_PREFIX: prefix,
    FAULT_LOG_DIR: logDir,
    FAULT_MAX_LEASE_LOSSES: '1000',
    FAULT_WF_PART_MS: String(partMs),
    ...options.env,
  };
  const flags = ['--concurrency', String(WORKFLOW_KILL_CONCURRENCY), '--lease-ms', String(KILL_LEASE_MS), '--queues', queues.join(',')];
  const app = createErrand({ broker: redis.url, prefix, logger: quietLogger });
  const close = async () => {
    await procs.killAll();
    await app.close().catch(() => {});
    await redis.stop();
  };
  let broker: Broker;
  try {
    broker = await app.broker();
    await connected(broker);
  } catch (err) {
    await close();
    throw err;
  }
  return {
    procs,
    redis,
    app,
    broker,
    worker: (name) => procs.worker(name, env, flags),
    executions: () => executions(logDir),
    ranAgainOnlyAfterKills(workers, stalled = new Set()) {
      const alive = new Set(workers.filter((w) => w.alive).map((w) => w.pid));
      let repeats = 0;
      for (const [id, list] of executions(logDir)) {
        repeats += list.length - 1;
        for (const e of list.slice(0, -1)) {
          assert.ok(!alive.has(e.pid) || stalled.has(e.pid), `run ${id} ran again after attempt ${e.attempt} in a live process`);
        }
      }
      return repeats;
    },
    close,
  };
}
