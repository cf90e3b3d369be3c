/**
 * HTTP load with autocannon in its own process: POST /users/ with a unique user per request, either
 * for a duration (`durationS`) or a fixed number of requests (`amount`). Replies over IPC with the
 * summary. Used for the email phase always, and for requests/s when wrk is not installed.
 */
import autocannon from 'autocannon';

interface Job {
  url: string;
  connections: number;
  durationS?: number;
  amount?: number;
  prefix: string;
}

process.on('message', (msg: { cmd: string; reqId?: number; job?: Job }) => {
  if (msg.cmd === 'exit') process.exit(0);
  if (msg.cmd !== 'run' || !msg.job) return;
  const job = msg.job;
  let n = 0;
  const opts: autocannon.Options = {
    url: job.url,
    connections: job.connections,
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    requests: [
      {
        setupRequest: (req) => {
          n++;
          const name = `${job.prefix}n${n}`;
          return { ...req, body: JSON.stringify({ username: name, email: `${name}@example.com` }) };
        },
      },
    ],
  };
  if (job.amount) opts.amount = job.amount;
  else opts.duration = job.durationS ?? 5;
  const t0 = Number(process.hrtime.bigint() / 1000n);
  autocannon(opts, (err, result) => {
    if (err) {
      process.send?.({ type: 'error', reqId: msg.reqId, message: err.message });
      return;
    }
    process.send?.({
      type: 'reply',
      reqId: msg.reqId,
      startUs: t0,
      requests: result.requests.total,
      ok2xx: result['2xx'],
      non2xx: result.non2xx,
      errors: result.errors,
      timeouts: result.timeouts,
      durationS: result.duration,
      p50ms: result.latency.p50,
      p99ms: result.latency.p99,
    });
  });
});
process.on('disconnect', () => process.exit(0));
process.send?.({ type: 'ready' });
