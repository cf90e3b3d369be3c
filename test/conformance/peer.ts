/**
 * A broker in another process, for the conformance suite's cross-process tests.
 *
 * The parent forks this file with the broker URL and options as JSON (argv[2]), the child opens the
 * broker with `connectBroker` (the public way) and answers `{ seq, method, args }` messages with
 * `{ seq, ok, value | error }`. `{ close: true }` closes the broker and exits. The child also exits
 * when the parent goes away, so no test leaves a process behind.
 */
import { connectBroker } from '../../src/broker/connect.ts';
import type { Broker } from '../../src/broker/types.ts';

interface Call {
  seq: number;
  method: string;
  args: unknown[];
}

async function main(): Promise<void> {
  const { url, options } = JSON.parse(process.argv[2] ?? '{}') as { url: string; options?: Record<string, unknown> };
  const send = (msg: unknown) => process.send?.(msg);

  let broker: Broker;
  try {
    broker = await connectBroker(url, options ?? {});
    await broker.ping();
  } catch (err) {
    send({ ready: false, error: err instanceof Error ? (err.stack ?? err.message) : String(err) });
    process.exit(1);
  }

  const shutdown = async (code: number): Promise<void> => {
    try {
      await broker.close();
    } finally {
      process.exit(code);
    }
  };

  process.on('disconnect', () => void shutdown(0));
  process.on('message', (msg: Call | { close: true }) => {
    if ('close' in msg) {
      void shutdown(0);
      return;
    }
    const fn = (broker as unknown as Record<string, unknown>)[msg.method];
    if (typeof fn !== 'function') {
      send({ seq: msg.seq, ok: false, error: `peer: no broker method ${msg.method}` });
      return;
    }
    Promise.resolve()
      .then(() => (fn as (...a: unknown[]) => unknown).apply(broker, msg.args))
      .then(
        (value) => send({ seq: msg.seq, ok: true, value }),
        (err: unknown) => send({ seq: msg.seq, ok: false, error: err instanceof Error ? (err.stack ?? err.message) : String(err) }),
      );
  });
  send({ ready: true, pid: process.pid });
}

// Only when forked by the suite (with an IPC channel): `node --test` without arguments also loads
// every .ts file under test/, and then this file must do nothing.
if (process.send) await main();
