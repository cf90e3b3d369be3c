/**
 * An SMTP sink in its own process: accepts every message (no auth, no TLS), discards it, and counts.
 * IPC: `ready { port }`; commands `count` -> { count, firstUs, lastUs } and `reset`.
 * Times are microseconds of CLOCK_MONOTONIC, comparable with the harness's.
 */
import { SMTPServer } from 'smtp-server';

const nowUs = () => Number(process.hrtime.bigint() / 1000n);
let count = 0;
let firstUs = 0;
let lastUs = 0;
let connections = 0;

const server = new SMTPServer({
  authOptional: true,
  disabledCommands: ['STARTTLS', 'AUTH'],
  logger: false,
  size: 1024 * 1024,
  maxClients: 10_000,
  onConnect(_session, cb) {
    connections++;
    cb();
  },
  onData(stream, _session, cb) {
    stream.on('data', () => {});
    stream.on('end', () => {
      count++;
      lastUs = nowUs();
      if (count === 1) firstUs = lastUs;
      cb();
    });
  },
});
server.on('error', (err) => process.stderr.write(`smtp sink error: ${err.message}\n`));

type Cmd = { cmd: string; reqId?: number };
process.on('message', (msg: Cmd) => {
  if (msg.cmd === 'exit') {
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 1000).unref();
    return;
  }
  if (msg.cmd === 'reset') {
    count = 0;
    firstUs = 0;
    lastUs = 0;
    connections = 0;
  }
  process.send?.({ type: 'reply', reqId: msg.reqId, count, firstUs, lastUs, connections });
});
process.on('disconnect', () => process.exit(0));

server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
  const addr = server.server.address();
  process.send?.({ type: 'ready', port: typeof addr === 'object' && addr ? addr.port : 0 });
});
