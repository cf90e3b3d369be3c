/**
 * A broker in another process or another thread, for the conformance suite's peer tests.
 *
 * The parent starts this file (a child process forked with the broker URL and options as JSON in
 * argv[2], or a worker thread given them as `workerData`), the peer opens the broker with
 * `connectBroker` (the public way) and answers `{ seq, method, args }` messages with
 * `{ seq, ok, value | error }`. `{ close: true }` closes the broker and exits. A child process also
 * exits when the parent goes away (a worker thread dies with its process), so no test leaves a peer
 * behind.
 *
 * A worker thread has module instances of its own: its own `connectBroker`, its own SQLite
 * connection and wake hub. It shares nothing with the broker under test but the storage (and the
 * process, which is how it can open a memory database of this process).
 */
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { connectBroker } from '../../src/broker/connect.ts';
import type { Broker } from '../../src/broker/types.ts';

interface Call {
  seq: number;
  method: string;
  args: unknown[];
}

interface Transport {
  connection: { url: string; options?: Record<string, unknown> };
  send(msg: unknown): void;
  onMessage(handler: (msg: Call | { close: true }) => void): void;
}

async function main(t: Transport): Promise<void> {
  const { url, options } = t.connection;
  let broker: Broker;
  try {
    broker = await connectBroker(url, options ?? {});
    await broker.ping();
  } catch (err) {
    t.send({ ready: false, error: err instanceof Error ? (err.stack ?? err.message) : String(err) });
    process.exit(1); // in a worker thread, this ends the thread
  }

  const shutdown = async (code: number): Promise<void> => {
    try {
      await broker.close();
    } finally {
      process.exit(code);
    }
  };

  if (isMainThread) process.on('disconnect', () => void shutdown(0));
  t.onMessage((msg) => {
    if ('close' in msg) {
      void shutdown(0);
      return;
    }
    const fn = (broker as unknown as Record<string, unknown>)[msg.method];
    if (typeof fn !== 'function') {
      t.send({ seq: msg.seq, ok: false, error: `peer: no broker method ${msg.method}` });
      return;
    }
    Promise.resolve()
      .then(() => (fn as (...a: unknown[]) => unknown).apply(broker, msg.args))
      .then(
        (value) => t.send({ seq: msg.seq, ok: true, value }),
        (err: unknown) => t.send({ seq: msg.seq, ok: false, error: err instanceof Error ? (err.stack ?? err.message) : String(err) }),
      );
  });
  t.send({ ready: true, pid: process.pid });
}

// Only when started by the suite (a worker thread with its workerData, or a child process with an
// IPC channel): `node --test` without arguments also loads every .ts file under test/, and then this
// file must do nothing.
if (!isMainThread && parentPort && (workerData as { errandPeer?: unknown } | null)?.errandPeer) {
  const port = parentPort;
  await main({
    connection: (workerData as { errandPeer: Transport['connection'] }).errandPeer,
    send: (msg) => port.postMessage(msg),
    onMessage: (handler) => port.on('message', handler),
  });
} else if (isMainThread && process.send) {
  await main({
    connection: JSON.parse(process.argv[2] ?? '{}') as Transport['connection'],
    send: (msg) => process.send?.(msg),
    onMessage: (handler) => process.on('message', handler),
  });
}
