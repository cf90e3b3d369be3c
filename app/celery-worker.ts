/**
 * `npm run worker:celery`: an Errand worker that serves the seed's Celery task
 * `tasks.send_welcome_email(email, username)` from Celery's default queue `celery`, in place of
 * `celery -A tasks worker`. The seed's FastAPI service keeps calling `send_welcome_email.delay()`
 * unchanged; this process sends the email as the seed's task does (From `MAIL_FROM`, default
 * welcome@example.com; Subject `Welcome, <username>!`; `Hello <username>, welcome aboard.`) and
 * stores `True` in Celery's result backend, so `AsyncResult(id).get()` works as before.
 *
 * Environment: `REDIS_URL` (Celery's broker and backend, required), `SMTP_URL` (absent: `.eml`
 * files in `DATA_DIR/outbox`), `MAIL_FROM`, `WORKER_CONCURRENCY` (default 10), `CELERY_QUEUES`
 * (comma-separated, default `celery`), `CELERY_VISIBILITY_TIMEOUT` (seconds, default 3600: keep it
 * equal to the Python workers' `broker_transport_options`), `LOG_LEVEL`, `LOG_FORMAT`, `METRICS_PORT`
 * (serve Prometheus metrics on it), `CELERY_DASHBOARD` (`on`, the default: every task that ends here is
 * recorded in the service's Errand broker, as queue `celery-<queue>`, so that the service's dashboard
 * shows it; `off`: not recorded). The service's broker is `ERRAND_BROKER_URL`, else `REDIS_URL` (the
 * same Redis, under Errand's own keys). SIGTERM or SIGINT: finishes the running sends, then exits 0.
 *
 * Transient SMTP failures (connection refused, 4xx) are retried Celery's way (a new message, RETRY
 * in the backend), up to 3 times, 10 s apart; a permanent refusal is FAILURE at once.
 */
import { requireNode } from '../bin/node-version.js';

requireNode('node app/celery-worker.ts');

const { createServer } = await import('node:http');
const { z } = await import('zod');
const { createCeleryWorker } = await import('../src/celery/index.ts');
const { connectBroker, createLogger } = await import('../src/index.ts');
const { brokerUrl, loadConfig, mailFromAddress } = await import('./config.ts');
const { classifySendError, createMailer } = await import('./email.ts');

function fail(message: string): never {
  process.stderr.write(`${message}\n`);
  process.exit(2);
}

const env = process.env;
if (!env.REDIS_URL) fail('REDIS_URL: required (the Redis that Celery uses as broker and result backend, e.g. redis://127.0.0.1:6379/0)');
let config: ReturnType<typeof loadConfig>;
try {
  config = loadConfig(env);
} catch (err) {
  fail((err as Error).message);
}
const visibility = Number(env.CELERY_VISIBILITY_TIMEOUT ?? 3600);
if (!Number.isFinite(visibility) || visibility < 1) fail('CELERY_VISIBILITY_TIMEOUT: a number of seconds >= 1');
const queues = (env.CELERY_QUEUES ?? 'celery')
  .split(',')
  .map((q) => q.trim())
  .filter(Boolean);
if (queues.length === 0) fail('CELERY_QUEUES: at least one queue name');
const dashboard = env.CELERY_DASHBOARD ?? 'on';
if (dashboard !== 'on' && dashboard !== 'off') fail(`CELERY_DASHBOARD: "on" or "off", got ${JSON.stringify(dashboard.slice(0, 40))}`);

const logger = createLogger({ level: config.logLevel, format: config.logFormat });
const mailer = createMailer({ smtpUrl: config.smtpUrl, outboxDir: config.outboxDir, logger });
let recordInto: Awaited<ReturnType<typeof connectBroker>> | undefined;
if (dashboard === 'on') {
  try {
    recordInto = await connectBroker(brokerUrl(config), { logger });
  } catch (err) {
    fail(`${config.brokerVariable}: ${(err as Error).message}`);
  }
}
let worker: ReturnType<typeof createCeleryWorker>;
try {
  worker = createCeleryWorker({
    url: env.REDIS_URL,
    queues,
    concurrency: config.workerConcurrency,
    visibilityTimeoutMs: visibility * 1000,
    logger,
    ...(recordInto && { errand: { broker: recordInto } }),
  });
} catch (err) {
  fail(`REDIS_URL: ${(err as Error).message}`); // a cluster URL, which kombu's Redis transport cannot use
}

worker.register(
  'tasks.send_welcome_email',
  {
    args: z.tuple([z.email(), z.string().min(1)]),
    maxRetries: 3,
    retryDelay: 10,
    autoretry: (err) => !classifySendError(err).permanent,
  },
  async ([email, username], _kwargs, ctx) => {
    const info = await mailer.send(
      {
        from: config.mailFrom,
        to: { name: '', address: email as string },
        subject: `Welcome, ${username}!`,
        text: `Hello ${username}, welcome aboard.\n`,
        // One Message-ID per Celery task: a redelivered send is recognisably the same message.
        messageId: `<welcome.${ctx.id}@${mailFromAddress(config.mailFrom).split('@')[1] ?? 'localhost'}>`,
      },
      ctx.signal,
    );
    logger.info({ task: ctx.name, id: ctx.id, to: email, response: info.response }, 'welcome email sent');
    return true;
  },
);

const metricsPort = env.METRICS_PORT ? Number(env.METRICS_PORT) : undefined;
const metricsServer =
  metricsPort !== undefined
    ? createServer((_req, res) => {
        worker.metrics.registry.metrics().then(
          (text) => res.writeHead(200, { 'content-type': worker.metrics.registry.contentType }).end(text),
          (err) => res.writeHead(500).end(String(err)),
        );
      }).listen(metricsPort, '127.0.0.1')
    : undefined;

let stopping = false;
const stop = (signal: string) => {
  if (stopping) process.exit(1);
  stopping = true;
  logger.info({ signal }, 'stopping');
  metricsServer?.close();
  worker
    .stop()
    .then(() => recordInto?.close())
    .then(() => mailer.close())
    .then(
      () => process.exit(0),
      (err) => {
        process.stderr.write(`Error while stopping: ${(err as Error).message}\n`);
        process.exit(1);
      },
    );
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

try {
  await worker.start();
} catch (err) {
  process.stderr.write(`Could not start: REDIS_URL: ${(err as Error).message}\n`);
  process.exit(1);
}
logger.info({ queues, smtp: mailer.kind }, 'serving tasks.send_welcome_email for Celery producers');
