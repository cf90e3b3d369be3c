/**
 * The default logger of an Errand app (and so of `errand worker`, `errand dashboard` and the users
 * service): pino, one JSON object per line, for log collectors; readable, coloured lines for a
 * person at a terminal.
 *
 * `LOG_FORMAT` chooses: `json`, `pretty`, or unset: `pretty` when stdout is a terminal, `json`
 * otherwise (a pipe, a file, a container's log driver). `LOG_LEVEL` sets the level (default `info`).
 *
 * Pretty lines come from pino-pretty, an optional peer dependency: it adds about 14 packages and
 * 1.7 MB that a server writing JSON never uses, so a bare `npm install errand` leaves it out
 * (`npm install --save-dev pino-pretty` brings it in). It is loaded synchronously (an app's logger
 * is made in its constructor) and in-process (no worker thread; lines are written synchronously,
 * so none is lost at `process.exit`). Without it, pretty falls back to JSON and says so once on
 * stderr.
 */
import { createRequire } from 'node:module';
import pino, { type DestinationStream, type Logger } from 'pino';
import { ConfigError } from './errors.ts';

export type LogFormat = 'json' | 'pretty';

export interface CreateLoggerOptions {
  /** Default: `LOG_LEVEL`, else `info`. */
  level?: string;
  /** Default: `LOG_FORMAT`, else `pretty` when stdout is a terminal and `json` otherwise. */
  format?: LogFormat;
}

/** The format `LOG_FORMAT` asks for, or the one that suits stdout. Throws `ConfigError` for another value. */
export function logFormat(env: NodeJS.ProcessEnv = process.env, isTTY = Boolean(process.stdout.isTTY)): LogFormat {
  const raw = env.LOG_FORMAT;
  const value = raw?.trim().toLowerCase();
  if (value === undefined || value === '') return isTTY ? 'pretty' : 'json';
  if (value === 'json' || value === 'pretty') return value;
  throw new ConfigError(`LOG_FORMAT must be "json" or "pretty" (unset: pretty on a terminal, else json), got ${JSON.stringify(raw)}`);
}

type PrettyFactory = (options: Record<string, unknown>) => DestinationStream;

let prettyModule: PrettyFactory | null | undefined;
let warned = false;

/** pino-pretty when installed (resolved from Errand's own location, as any dependency), else null. */
function loadPretty(): PrettyFactory | null {
  if (prettyModule !== undefined) return prettyModule;
  try {
    const mod = createRequire(import.meta.url)('pino-pretty') as PrettyFactory & { default?: PrettyFactory };
    prettyModule = mod.default ?? mod;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'MODULE_NOT_FOUND' && code !== 'ERR_MODULE_NOT_FOUND') throw err;
    prettyModule = null;
  }
  return prettyModule;
}

/** A pino logger in the format of `LOG_FORMAT` (or the terminal's), at `LOG_LEVEL`, with the process id on each line. */
export function createLogger(options: CreateLoggerOptions = {}): Logger {
  const level = options.level ?? (process.env.LOG_LEVEL || 'info');
  const format = options.format ?? logFormat();
  const base = { pid: process.pid };
  if (format === 'pretty') {
    const pretty = loadPretty();
    if (pretty) {
      // Colours when the output supports them (a terminal; NO_COLOR and FORCE_COLOR are honoured).
      return pino({ level, base }, pretty({ translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname', singleLine: true, sync: true }));
    }
    if (!warned) {
      warned = true;
      process.stderr.write(
        'errand: readable logs need pino-pretty (npm install --save-dev pino-pretty); logging JSON. Set LOG_FORMAT=json to silence this.\n',
      );
    }
  }
  return pino({ level, base });
}
