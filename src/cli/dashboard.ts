/** `errand dashboard`: serve the dashboard for a broker, without defining any task. */
import { existsSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { connectBroker, defaultBrokerUrl, isSqliteMemoryUrl, pingWithin, sqliteFileOf } from '../broker/connect.ts';
import { redactUrl } from '../core/urls.ts';
import { ConfigError, EmptyPrefixError, ErrandError } from '../core/errors.ts';
import { createLogger } from '../core/logger.ts';
import { argsErrorMessage } from './format.ts';
import { createErrand } from '../errand.ts';
import { authFromEnv } from '../web/auth.ts';
import { createDashboardServer } from '../dashboard/server.ts';

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host.startsWith('127.');
}

/** Parses the flags, checks the broker answers, and listens. Resolves once listening. */
export async function dashboardCommand(args: string[]): Promise<void> {
  let values: { broker?: string; port?: string; host?: string };
  try {
    const parsed = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: { broker: { type: 'string' }, port: { type: 'string' }, host: { type: 'string' } },
    });
    values = parsed.values;
  } catch (err) {
    throw new ConfigError(`dashboard: ${argsErrorMessage(err)} (see errand help)`);
  }
  const portText = values.port ?? '8080';
  if (!/^\d{1,5}$/.test(portText) || Number(portText) > 65535)
    throw new ConfigError(`--port must be an integer from 0 to 65535, got ${JSON.stringify(portText)}`);
  const port = Number(portText);
  const host = (values.host ?? '127.0.0.1').trim();
  if (host === '' || /\s|\//.test(host))
    throw new ConfigError(`--host must be an address or host name, got ${JSON.stringify(values.host)}`);
  const url = values.broker ?? defaultBrokerUrl();
  if (values.broker !== undefined && values.broker.trim() === '')
    throw new ConfigError('--broker is empty: give redis://host:port[/db] or sqlite:path/to/file.db');
  // As `errand inspect`: opening a SQLite path creates the file, and a typo would show an empty broker.
  const file = sqliteFileOf(url);
  if (file !== undefined && !existsSync(file))
    throw new ConfigError(`no SQLite broker file at ${file} (from ${redactUrl(url)}): check --broker or ERRAND_BROKER_URL`);
  if (isSqliteMemoryUrl(url))
    throw new ConfigError(
      `${redactUrl(url)} is a SQLite memory URI: its storage lives in the process that opened it, not here; give a file or Redis URL`,
    );
  const auth = authFromEnv();

  // As the admin commands: nothing is written under a Redis prefix nothing was stored under
  // (existingPrefix), so a mistyped ERRAND_PREFIX leaves no layout record behind. The dashboard
  // still serves (a fresh service may not have written yet): see `emptyPrefix` below.
  const prefix = process.env.ERRAND_PREFIX || undefined;
  const logger = createLogger();
  const raw = await connectBroker(url, { logger, prefix, existingPrefix: file === undefined }); // a malformed URL throws a ConfigError here
  const errand = createErrand({ broker: raw, logger });
  const broker = await errand.broker();
  let emptyPrefix = false;
  try {
    await pingWithin(broker);
  } catch (err) {
    if (err instanceof EmptyPrefixError) emptyPrefix = true;
    else {
      await errand.close().catch(() => {});
      throw new ErrandError(`cannot reach the broker at ${redactUrl(url)}: ${(err as Error)?.message ?? String(err)}`);
    }
  }

  const app = await createDashboardServer({ errand, auth });
  let address: string;
  try {
    address = await app.listen({ port, host });
  } catch (err) {
    await errand.close().catch(() => {});
    const code = (err as NodeJS.ErrnoException).code;
    const where = `${host}:${port}`;
    if (code === 'EADDRINUSE') throw new ErrandError(`cannot listen on ${where}: the port is already in use; choose another with --port`);
    if (code === 'EACCES')
      throw new ErrandError(`cannot listen on ${where}: permission denied (ports below 1024 need privileges); choose another with --port`);
    if (code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND' || code === 'EAI_AGAIN')
      throw new ErrandError(`cannot listen on ${where}: ${JSON.stringify(host)} is not an address of this machine; check --host`);
    throw err;
  }
  const tokens = (auth.admin?.length ?? 0) + (auth.read?.length ?? 0) > 0;
  errand.logger.info({ broker: redactUrl(url), auth: tokens ? 'tokens' : 'off' }, `dashboard at ${address}/dashboard/`);
  if (emptyPrefix)
    errand.logger.warn(
      { broker: redactUrl(url), prefix: prefix ?? 'errand' },
      `nothing under the key prefix ${JSON.stringify(prefix ?? 'errand')} at ${redactUrl(url)} yet: the dashboard writes nothing there and ` +
        "answers 503 (saying so) until an app on this prefix does (a worker starting, an enqueue); if it should not be empty, check ERRAND_PREFIX (the workers' prefix) or --broker",
    );
  if (!tokens && !isLoopback(host))
    errand.logger.warn(
      `the dashboard on ${host} has no auth: anyone who can reach it may purge queues; set ERRAND_ADMIN_TOKENS (and ERRAND_READ_TOKENS)`,
    );
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    await app.close().catch(() => {});
    await errand.close().catch(() => {});
    process.exit(0);
  };
  process.once('SIGINT', () => void stop());
  process.once('SIGTERM', () => void stop());
}
