// Human logs in development (src/core/logger.ts): `errand worker` and the users service write
// readable coloured lines on a terminal (a pseudo-terminal made by `script`), JSON lines into a pipe,
// and follow LOG_FORMAT either way; without pino-pretty, pretty falls back to JSON and says so.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { APP_MAIN, CLI, cleanEnv, NODE } from '../fixtures/procs.ts';
import { tempDir, within } from '../helpers.ts';

const TASKS = new URL('../fixtures/echo-tasks.ts', import.meta.url).pathname;
const WITHOUT_PRETTY = new URL('../fixtures/without-pino-pretty.ts', import.meta.url).pathname;
const hasScript = spawnSync('script', ['--version'], { encoding: 'utf8' }).status === 0;
// biome-ignore lint/suspicious/noControlCharactersInRegex: ANSI colour codes are what is looked for
const ANSI = /\u001b\[\d+m/;
const READY = 'worker started';

interface Output {
  stdout: string;
  stderr: string;
  code: number | null;
}

/**
 * Runs `args` with node until its output shows the worker started, then stops it (SIGINT: Ctrl-C
 * typed into the terminal when `tty`, else a signal) and returns everything it wrote.
 */
async function runUntilStarted(args: string[], env: Record<string, string>, tty: boolean): Promise<Output> {
  const command = [NODE, ...args];
  const childEnv = colourEnv(env, tty);
  const child = tty
    ? // `exec`: the shell that `script` starts (sh -c when SHELL is unset, as under CI) must not stay
      // in the terminal's process group, where Ctrl-C would kill it (exit 130) before node stops.
      spawn('script', ['-qec', `exec ${command.map(shellQuote).join(' ')}`, '/dev/null'], {
        env: childEnv,
        stdio: ['pipe', 'pipe', 'pipe'],
      })
    : spawn(command[0]!, command.slice(1), { env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  let stopped = false;
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const onData = () => {
    if (stopped || !(stdout + stderr).includes(READY)) return;
    stopped = true;
    if (tty) child.stdin!.write('\u0003');
    else child.kill('SIGINT');
  };
  child.stdout!.on('data', (d: Buffer) => {
    stdout += d.toString();
    onData();
  });
  child.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString();
    onData();
  });
  try {
    const code = await within(exited, 60_000, `${args.join(' ')} to start and stop; output so far:\n${stdout}\n${stderr}`);
    return { stdout, stderr, code };
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
  }
}

/** `s` as one word for a POSIX shell. */
function shellQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

/** The environment, without what forces colours on or off (pino-pretty colours in a pipe when CI is set), with a terminal that has colours. */
function colourEnv(vars: Record<string, string>, tty: boolean): NodeJS.ProcessEnv {
  const env = cleanEnv(vars);
  for (const k of ['CI', 'FORCE_COLOR', 'NO_COLOR']) delete env[k];
  if (tty) env.TERM = 'xterm-256color';
  return env;
}

const worker = (dir: string) => [CLI, 'worker', TASKS, '--broker', `sqlite:${join(dir, 'e.db')}`];
const service = [APP_MAIN, 'worker'];

function assertPretty(out: Output, colours: boolean): void {
  const line = out.stdout.split(/\r?\n/).find((l) => l.includes(READY));
  assert.ok(line, `a "${READY}" line in:\n${out.stdout}`);
  assert.doesNotMatch(line, /^\{/, 'not JSON');
  assert.match(line, /^\[\d\d:\d\d:\d\d\.\d{3}\] /, 'starts with the time');
  assert.match(line, /INFO/);
  assert.equal(ANSI.test(line), colours, colours ? 'coloured' : 'no colour codes');
}

function assertJson(out: Output): void {
  const line = out.stdout.split(/\r?\n/).find((l) => l.includes(READY));
  assert.ok(line, `a "${READY}" line in:\n${out.stdout}`);
  const entry = JSON.parse(line) as { level: number; msg: string; pid: number };
  assert.equal(entry.msg, READY);
  assert.equal(entry.level, 30);
  assert.equal(typeof entry.pid, 'number');
}

describe('logs: errand worker', () => {
  it('writes JSON lines into a pipe', async () => {
    const out = await runUntilStarted(worker(tempDir('errand-logs')), { LOG_LEVEL: 'info' }, false);
    assertJson(out);
    assert.equal(out.code, 0);
  });

  it('writes readable lines into a pipe with LOG_FORMAT=pretty (without colour: a pipe is not a terminal)', async () => {
    const out = await runUntilStarted(worker(tempDir('errand-logs')), { LOG_LEVEL: 'info', LOG_FORMAT: 'pretty' }, false);
    assertPretty(out, false);
  });

  it('writes coloured readable lines on a terminal', { skip: hasScript ? false : 'script (util-linux) is missing' }, async () => {
    const out = await runUntilStarted(worker(tempDir('errand-logs')), { LOG_LEVEL: 'info' }, true);
    assertPretty(out, true);
    assert.match(out.stdout, /stopping: finishing active runs/, 'Ctrl-C stopped it gracefully');
    assert.equal(out.code, 0);
  });

  it('writes JSON on a terminal with LOG_FORMAT=json', { skip: hasScript ? false : 'script (util-linux) is missing' }, async () => {
    const out = await runUntilStarted(worker(tempDir('errand-logs')), { LOG_LEVEL: 'info', LOG_FORMAT: 'json' }, true);
    assertJson(out);
  });

  it('falls back to JSON, saying why once, when pino-pretty is not installed', async () => {
    const args = ['--import', WITHOUT_PRETTY, ...worker(tempDir('errand-logs'))];
    const out = await runUntilStarted(args, { LOG_LEVEL: 'info', LOG_FORMAT: 'pretty' }, false);
    assertJson(out);
    const hints = out.stderr.split('\n').filter((l) => l.includes('readable logs need pino-pretty'));
    assert.equal(hints.length, 1, out.stderr);
    assert.match(hints[0]!, /npm install --save-dev pino-pretty/);
  });

  it('refuses another LOG_FORMAT, naming it', () => {
    const r = spawnSync(NODE, worker(tempDir('errand-logs')), { env: cleanEnv({ LOG_FORMAT: 'xml' }), encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /LOG_FORMAT must be "json" or "pretty".*got "xml"/);
  });
});

describe('logs: the users service', () => {
  it('writes coloured readable lines on a terminal', { skip: hasScript ? false : 'script (util-linux) is missing' }, async () => {
    const out = await runUntilStarted(service, { LOG_LEVEL: 'info', DATA_DIR: tempDir('errand-logs-app') }, true);
    assertPretty(out, true);
  });

  it('writes JSON lines into a pipe, and with LOG_FORMAT=json on a terminal', async () => {
    assertJson(await runUntilStarted(service, { LOG_LEVEL: 'info', DATA_DIR: tempDir('errand-logs-app') }, false));
    if (hasScript)
      assertJson(await runUntilStarted(service, { LOG_LEVEL: 'info', LOG_FORMAT: 'json', DATA_DIR: tempDir('errand-logs-app') }, true));
  });

  it('stops on a bad LOG_FORMAT with the configuration error', () => {
    const r = spawnSync(NODE, service, {
      env: cleanEnv({ LOG_FORMAT: 'fancy', DATA_DIR: tempDir('errand-logs-app') }),
      encoding: 'utf8',
      timeout: 60_000,
    });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /Configuration error: LOG_FORMAT must be json or pretty .*got "fancy"/);
  });
});
