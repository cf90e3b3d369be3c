/**
 * A peer: a broker on the storage of the broker under test, opened elsewhere (`peer.ts`) and driven
 * by messages. The conformance suites' "another process": a child process for storage that other
 * processes can open (a file, Redis), a worker thread of this process for storage only this process
 * can open (the memory broker of errand/testing). Either way the peer has its own modules, its own
 * connection and its own wake-ups, runs concurrently with the test, and shares nothing with the
 * broker under test but its storage.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import type { Broker } from '../../src/broker/types.ts';
import { within } from '../helpers.ts';

/** The methods a peer answers (everything but the callback-based ones). */
export type PeerBroker = Pick<
  Broker,
  'enqueue' | 'reserve' | 'settle' | 'renew' | 'release' | 'progress' | 'getRun' | 'cancel' | 'retry' | 'counts' | 'prune'
>;

/** Where a peer runs: a child process (`fork`), or a worker thread of this process. */
export type PeerWhere = 'process' | 'thread';

export interface PeerConnection {
  url: string;
  options?: Record<string, unknown>;
}

const PEER_SCRIPT = new URL('./peer.ts', import.meta.url);

type Message = { seq?: number; ok?: boolean; value?: unknown; error?: string; ready?: boolean };

/** The one side of a peer the parent talks to: a child process or a worker thread. */
interface Endpoint {
  send(msg: unknown): void;
  onMessage(handler: (msg: Message) => void): void;
  onceExit(handler: (code: number | null, signal: string | null) => void): void;
  onceError(handler: (err: Error) => void): void;
  exited(): boolean;
  kill(): void;
}

function processEndpoint(connection: PeerConnection): Endpoint {
  const child: ChildProcess = fork(PEER_SCRIPT, [JSON.stringify(connection)], {
    execPath: process.execPath,
    execArgv: [],
    serialization: 'advanced',
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  return {
    send: (msg) => child.send(msg as object),
    onMessage: (h) => child.on('message', h),
    onceExit: (h) => child.once('exit', (code, signal) => h(code, signal)),
    onceError: (h) => child.once('error', h),
    exited: () => child.exitCode !== null || child.signalCode !== null,
    kill: () => child.kill('SIGKILL'),
  };
}

function threadEndpoint(connection: PeerConnection): Endpoint {
  const worker = new Worker(PEER_SCRIPT, { workerData: { errandPeer: connection }, execArgv: [] });
  let done = false;
  worker.once('exit', () => {
    done = true;
  });
  // An error thrown in the thread ends it ('exit' follows, failing the calls in flight); say what it was.
  worker.on('error', (err) => process.stderr.write(`peer thread failed: ${err.stack ?? err.message}\n`));
  return {
    send: (msg) => worker.postMessage(msg),
    onMessage: (h) => worker.on('message', h),
    onceExit: (h) => worker.once('exit', (code) => h(code, null)),
    onceError: (h) => worker.once('error', h),
    exited: () => done,
    kill: () => void worker.terminate(),
  };
}

/** A broker opened in a child process or a worker thread (`peer.ts`), driven by messages. */
export class Peer {
  readonly broker: PeerBroker;
  readonly where: PeerWhere;
  #end: Endpoint;
  #seq = 0;
  #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; method: string }>();
  #exited: Promise<void>;

  private constructor(end: Endpoint, where: PeerWhere, extraMethods: readonly string[]) {
    this.#end = end;
    this.where = where;
    const what = where === 'process' ? 'peer process' : 'peer thread';
    this.#exited = new Promise((resolve) => end.onceExit(() => resolve()));
    end.onMessage((msg) => {
      if (msg.seq === undefined) return;
      const p = this.#pending.get(msg.seq);
      if (!p) return;
      this.#pending.delete(msg.seq);
      if (msg.ok) p.resolve(msg.value);
      else p.reject(new Error(`${what} ${p.method}() failed: ${msg.error}`));
    });
    end.onceExit((code, signal) => {
      for (const p of this.#pending.values()) p.reject(new Error(`${what} exited (code ${code}, signal ${signal}) during ${p.method}()`));
      this.#pending.clear();
    });
    const call =
      (method: string) =>
      (...args: unknown[]): Promise<unknown> =>
        new Promise((resolve, reject) => {
          const seq = ++this.#seq;
          this.#pending.set(seq, { resolve, reject, method });
          end.send({ seq, method, args });
        });
    const methods = ['enqueue', 'reserve', 'settle', 'renew', 'release', 'progress', 'getRun', 'cancel', 'retry', 'counts', 'prune'];
    methods.push(...extraMethods);
    this.broker = Object.fromEntries(methods.map((m) => [m, call(m)])) as unknown as PeerBroker;
  }

  /** `extraMethods`: more methods the peer answers (the BrokerInspector ones, say), on `broker` too. */
  static async start(connection: PeerConnection, where: PeerWhere = 'process', extraMethods: readonly string[] = []): Promise<Peer> {
    const what = where === 'process' ? 'peer process' : 'peer thread';
    const end = where === 'process' ? processEndpoint(connection) : threadEndpoint(connection);
    const ready = new Promise<void>((resolve, reject) => {
      let first = true;
      end.onMessage((msg) => {
        if (!first) return;
        first = false;
        if (msg.ready) resolve();
        else reject(new Error(`${what} could not open the broker: ${msg.error}`));
      });
      end.onceExit((code) => reject(new Error(`${what} exited with code ${code} before it was ready`)));
      end.onceError(reject);
    });
    try {
      await within(ready, 15_000, `${what} start`);
    } catch (err) {
      end.kill();
      throw err;
    }
    return new Peer(end, where, extraMethods);
  }

  async close(): Promise<void> {
    if (this.#end.exited()) return;
    this.#end.send({ close: true });
    try {
      await within(this.#exited, 5_000, `peer ${this.where} exit`);
    } catch (err) {
      this.#end.kill();
      throw err;
    }
  }
}
