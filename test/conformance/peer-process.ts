/**
 * A broker opened in a child process (`peer.ts`), driven over IPC: the conformance suites' "another
 * process", which shares nothing with the broker under test but its storage.
 */
import { type ChildProcess, fork } from 'node:child_process';
import type { Broker } from '../../src/broker/types.ts';
import { within } from '../helpers.ts';
/** The methods a peer process answers (everything but the callback-based ones). */
export type PeerBroker = Pick<
  Broker,
  'enqueue' | 'reserve' | 'settle' | 'renew' | 'release' | 'progress' | 'getRun' | 'cancel' | 'retry' | 'counts' | 'prune'
>;

const PEER_SCRIPT = new URL('./peer.ts', import.meta.url);

/** A broker opened in a child process (`peer.ts`), driven over IPC. */
export class PeerProcess {
  readonly broker: PeerBroker;
  #child: ChildProcess;
  #seq = 0;
  #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; method: string }>();
  #exited: Promise<void>;

  private constructor(child: ChildProcess, extraMethods: readonly string[]) {
    this.#child = child;
    this.#exited = new Promise((resolve) => child.once('exit', () => resolve()));
    child.on('message', (msg: { seq?: number; ok?: boolean; value?: unknown; error?: string }) => {
      if (msg.seq === undefined) return;
      const p = this.#pending.get(msg.seq);
      if (!p) return;
      this.#pending.delete(msg.seq);
      if (msg.ok) p.resolve(msg.value);
      else p.reject(new Error(`peer process ${p.method}() failed: ${msg.error}`));
    });
    child.once('exit', (code, signal) => {
      for (const p of this.#pending.values())
        p.reject(new Error(`peer process exited (code ${code}, signal ${signal}) during ${p.method}()`));
      this.#pending.clear();
    });
    const call =
      (method: string) =>
      (...args: unknown[]): Promise<unknown> =>
        new Promise((resolve, reject) => {
          const seq = ++this.#seq;
          this.#pending.set(seq, { resolve, reject, method });
          child.send({ seq, method, args });
        });
    const methods = ['enqueue', 'reserve', 'settle', 'renew', 'release', 'progress', 'getRun', 'cancel', 'retry', 'counts', 'prune'];
    methods.push(...extraMethods);
    this.broker = Object.fromEntries(methods.map((m) => [m, call(m)])) as unknown as PeerBroker;
  }

  /** `extraMethods`: more methods the peer answers (the BrokerInspector ones, say), on `broker` too. */
  static async start(
    connection: { url: string; options?: Record<string, unknown> },
    extraMethods: readonly string[] = [],
  ): Promise<PeerProcess> {
    const child = fork(PEER_SCRIPT, [JSON.stringify(connection)], {
      execPath: process.execPath,
      execArgv: [],
      serialization: 'advanced',
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    const ready = new Promise<void>((resolve, reject) => {
      child.once('message', (msg: { ready?: boolean; error?: string }) => {
        if (msg.ready) resolve();
        else reject(new Error(`peer process could not open the broker: ${msg.error}`));
      });
      child.once('exit', (code) => reject(new Error(`peer process exited with code ${code} before it was ready`)));
      child.once('error', reject);
    });
    try {
      await within(ready, 15_000, 'peer process start');
    } catch (err) {
      child.kill();
      throw err;
    }
    return new PeerProcess(child, extraMethods);
  }

  async close(): Promise<void> {
    if (this.#child.exitCode !== null || this.#child.signalCode !== null) return;
    this.#child.send({ close: true });
    try {
      await within(this.#exited, 5_000, 'peer process exit');
    } catch (err) {
      this.#child.kill('SIGKILL');
      throw err;
    }
  }
}
