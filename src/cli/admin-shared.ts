/** What the admin commands share: flags, output, errors, and the broker they open. */
import { existsSync } from 'node:fs';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { connectBroker, defaultBrokerUrl, isSqliteMemoryUrl, pingWithin, sqliteFileOf } from '../broker/connect.ts';
import { redactUrl } from '../core/urls.ts';
import type { Broker, BrokerInspector } from '../broker/types.ts';
import { BrokerConfigError, brokerFailure, EmptyPrefixError } from '../core/errors.ts';
import { isRunId, QUEUE_NAME } from '../core/ids.ts';
import { checkRedactPaths, mergeRedactPaths, redactPathsFromEnv } from '../core/redact.ts';
import { argsErrorMessage, cut } from './format.ts';

export const DEFAULT_LIMIT = 20;
export const EXAMPLE_ID = 'default.01JD3M5S7T8X9Y0Z1A2B3C4D5E';

/** An error the user can act on: printed without a stack, with its code in `--json` mode. */
export class CliError extends Error {
  override name = 'CliError';
  readonly code: string;
  readonly exitCode: number;
  readonly details: Record<string, unknown> | undefined;
  constructor(code: string, message: string, options: { exitCode?: number; details?: Record<string, unknown> } = {}) {
    super(message);
    this.code = code;
    this.exitCode = options.exitCode ?? 2;
    this.details = options.details;
  }
}

export type Inspector = Broker & BrokerInspector;

export interface Common {
  broker?: string;
  json?: boolean;
}

export const COMMON = { broker: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } as const;

export class Output {
  readonly json: boolean;
  #text = '';
  constructor(json: boolean) {
    this.json = json;
  }
  text(s: string): void {
    this.#text += s;
  }
  data(value: unknown): void {
    this.#text += `${JSON.stringify(value, null, 2)}\n`;
  }
  flush(): void {
    if (this.#text) process.stdout.write(this.#text);
    this.#text = '';
  }
}

export function usage(message: string): CliError {
  return new CliError('usage', `${message} (see errand help)`);
}

export function parse<T extends Record<string, { type: 'string' | 'boolean'; short?: string }>>(
  name: string,
  args: string[],
  options: T,
  positionals: { min: number; max: number; what: string },
) {
  let parsed: { values: Record<string, string | boolean | undefined>; positionals: string[] };
  try {
    parsed = parseArgs({ args, options: { ...COMMON, ...options }, strict: true, allowPositionals: true }) as typeof parsed;
  } catch (err) {
    throw usage(`${name}: ${argsErrorMessage(err)}`);
  }
  const { values, positionals: pos } = parsed;
  if (values.help) throw new HelpRequested();
  if (pos.length < positionals.min || pos.length > positionals.max) {
    const got = pos.length === 0 ? 'nothing' : pos.map((p) => JSON.stringify(p)).join(' ');
    throw usage(`${name} takes ${positionals.what}, got ${got}`);
  }
  for (const [key, value] of Object.entries(values))
    if (typeof value === 'string' && value.trim() === '') throw usage(`${name}: --${key} is empty`);
  return { values: values as Common & Record<string, string | boolean | undefined>, positionals: pos };
}

export class HelpRequested extends Error {}

// ---- the broker ----------------------------------------------------------------------------------

/** Opens the broker named by --broker (or the default), checks it answers and can be inspected, runs `fn`, closes it. */
export async function withBroker<T>(values: Common, fn: (broker: Inspector) => Promise<T>): Promise<T> {
  const url = values.broker ?? defaultBrokerUrl();
  const shown = redactUrl(url);
  // Opening a SQLite path creates the file: an inspection must not make an empty broker out of a typo.
  const file = sqliteFileOf(url);
  if (file !== undefined && !existsSync(file))
    throw new CliError('broker_not_found', `no SQLite broker file at ${file} (from ${shown}): check --broker or ERRAND_BROKER_URL`);
  if (isSqliteMemoryUrl(url))
    throw new CliError(
      'broker_not_found',
      `${shown} is a SQLite memory URI: its storage lives in the process that opened it, not here; give a file or Redis URL`,
    );
  // Nor a Redis prefix out of a mistyped ERRAND_PREFIX (existingPrefix: its layout record is not written).
  const prefix = process.env.ERRAND_PREFIX || undefined;
  const broker = await connectBroker(url, { logger: pino({ level: 'silent' }), prefix, existingPrefix: file === undefined });
  try {
    try {
      await pingWithin(broker);
    } catch (err) {
      if (err instanceof EmptyPrefixError)
        throw new CliError(
          'broker_not_found',
          `nothing under the key prefix ${JSON.stringify(prefix ?? 'errand')} at ${shown}: check ERRAND_PREFIX (the workers' prefix) or --broker`,
        );
      const why = (err as Error)?.message ?? String(err);
      // Refused credentials or TLS set-up (BrokerConfigError): waiting will not help, the URL must change.
      if (brokerFailure(err) instanceof BrokerConfigError)
        throw new CliError('config', `the broker at ${shown} refused the connection: ${why}`);
      throw new CliError('broker_unavailable', `cannot reach the broker at ${shown}: ${why}`, { exitCode: 1 });
    }
    if (typeof (broker as Partial<BrokerInspector>).listRuns !== 'function')
      throw new CliError(
        'not_inspectable',
        `the broker at ${shown} (${broker.kind}) cannot be inspected: it does not implement BrokerInspector`,
      );
    return await fn(broker as Inspector);
  } finally {
    await broker.close().catch(() => {});
  }
}

export function checkRunId(id: string): void {
  if (!isRunId(id)) {
    const shown = JSON.stringify(cut(id, 120));
    throw new CliError('invalid_run_id', `${shown} is not a run id: run ids are <queue>.<26 characters>, like ${EXAMPLE_ID}`);
  }
}

export function notFound(id: string): CliError {
  return new CliError('run_not_found', `run ${id} not found (it never existed, or it finished and its retention passed)`);
}

/** Refuses a malformed queue name, then one the broker has never seen (listing those it has). */
export async function checkQueue(broker: Inspector, queue: string, flag = 'queue'): Promise<void> {
  if (!QUEUE_NAME.test(queue))
    throw new CliError(
      'invalid_queue',
      `${JSON.stringify(cut(queue, 120))} is not a valid ${flag} name: 1 to 64 letters, digits, "_" or "-"`,
    );
  const known = (await broker.listQueues()).sort();
  if (!known.includes(queue)) {
    const list = known.length ? `known queues: ${known.join(', ')}` : 'the broker has no queue yet';
    throw new CliError('unknown_queue', `unknown queue ${JSON.stringify(queue)}; ${list}`, { details: { known } });
  }
}

export function redactPaths(values: Record<string, string | boolean | undefined>): string[] {
  let fromFlag: string[] = [];
  if (typeof values.redact === 'string') {
    const list = values.redact
      .split(',')
      .map((p) => p.trim())
      .filter(Boolean);
    try {
      fromFlag = checkRedactPaths(list, '--redact');
    } catch (err) {
      throw new CliError('usage', (err as Error).message);
    }
  }
  let fromEnv: string[];
  try {
    fromEnv = redactPathsFromEnv();
  } catch (err) {
    throw new CliError('config', (err as Error).message);
  }
  return mergeRedactPaths(fromEnv, fromFlag);
}

export function intFlag(value: string | boolean | undefined, name: string, min: number, max: number): number | undefined {
  if (value === undefined || typeof value !== 'string') return undefined;
  if (!/^\d+$/.test(value) || Number(value) < min || Number(value) > max)
    throw new CliError('usage', `--${name} must be an integer from ${min} to ${max}, got ${JSON.stringify(value)}`);
  return Number(value);
}
