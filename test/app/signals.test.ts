// Stop signals as supervisors send them to the service (issue 20, items 4 and the smaller ones):
// - SIGTERM to the PID of `npm run worker` (what Docker, systemd or Kubernetes hold when the
//   command is an npm script) reaches Node: it stops gracefully and nothing is left running;
// - a SIGTERM while the service is still starting ends it at once, exit 0 (not 143);
// - a second SIGTERM hands the active runs back at once and logs "worker stopped" once.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer as createNetServer, type Server, type Socket } from 'node:net';
import { describe, it } from 'node:test';
import { cleanEnv, exitOf, spawnNode } from '../fixtures/procs.ts';
import { freePort } from '../fixtures/redis-servers.ts';
import { tempDir, waitFor } from '../helpers.ts';

const ROOT = new URL('../../', import.meta.url).pathname;
const MAIN = new URL('../../app/main.ts', import.meta.url).pathname;
const LONG = { timeoutMs: 90_000 }; // a safety net for a loaded machine, not a timing assertion

/** A TCP server that accepts connections and never says a word: a PostgreSQL or SMTP server that hangs. */
async function silentServer(): Promise<{ port: number; connections: () => number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  let count = 0;
  const server: Server = createNetServer((socket) => {
    count++;
    sockets.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    port,
    connections: () => count,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The npm that runs this test (`npm test` sets npm_execpath), else the one on the PATH. */
function npmCommand(args: string[]): [string, string[]] {
  const cli = process.env.npm_execpath;
  return cli?.endsWith('.js') ? [process.execPath, [cli, ...args]] : ['npm', args];
}

describe('stop signals to the service', () => {
  it('SIGTERM to the PID of `npm run worker` reaches Node: it stops gracefully, exits 0, and nothing is left running', async () => {
    const dataDir = tempDir('errand-app-npm');
    const [cmd, args] = npmCommand(['run', '--silent', 'worker']);
    const child = spawn(cmd, args, {
      cwd: ROOT,
      env: cleanEnv({ DATA_DIR: dataDir, LOG_LEVEL: 'info' }),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
    });
    child.stderr!.on('data', (c: Buffer) => {
      out += c.toString();
    });
    const exited = once(child, 'exit');
    let nodePid: number | undefined;
    try {
      const ready = await waitFor(() => /\{[^\n]*"msg":"worker ready"[^\n]*\}/.exec(out)?.[0], {
        ...LONG,
        message: 'the worker started by npm to be ready',
      });
      nodePid = (JSON.parse(ready) as { pid: number }).pid;
      assert.notEqual(nodePid, child.pid, 'npm runs Node as a child process');
      child.kill('SIGTERM'); // what a supervisor does: it knows only the PID it started
      await exited;
      assert.match(out, /"msg":"worker stopped"/, `Node heard the signal and stopped gracefully:\n${out}`);
      assert.equal(alive(nodePid), false, 'no Node process left running after npm exited');
    } finally {
      child.kill('SIGKILL');
      if (nodePid !== undefined && alive(nodePid)) process.kill(nodePid, 'SIGKILL');
    }
  });

  it('a SIGTERM while the service is still starting ends it at once with exit code 0', async () => {
    const pg = await silentServer(); // the service waits for it while it opens the users store
    const p = spawnNode([MAIN, 'worker'], {
      DATA_DIR: tempDir('errand-app-early'),
      DATABASE_URL: `postgres://postgres@127.0.0.1:${pg.port}/app`,
    });
    try {
      await waitFor(() => pg.connections() > 0, { ...LONG, message: 'the service to be connecting to its database' });
      p.child.kill('SIGTERM');
      assert.equal(await exitOf(p, LONG.timeoutMs, 'node app/main.ts'), 0, p.stderr());
      assert.match(p.stderr(), /SIGTERM while starting; nothing was taken/);
    } finally {
      p.child.kill('SIGKILL');
      await pg.close();
    }
  });

  it('a second SIGTERM hands the active run back at once, logs "worker stopped" once, and exits 0', async () => {
    const smtp = await silentServer(); // the welcome email's send hangs: the run stays active
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    const p = spawnNode([MAIN, 'all'], {
      PORT: String(port),
      DATA_DIR: tempDir('errand-app-twice'),
      SMTP_URL: `smtp://127.0.0.1:${smtp.port}`,
      LOG_LEVEL: 'info',
    });
    try {
      await waitFor(async () => (await fetch(`${base}/healthz`)).ok, { ...LONG, message: '/healthz' });
      const res = await fetch(`${base}/users/`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ username: 'twice', email: 'twice@example.com' }),
      });
      assert.equal(res.status, 201);
      await waitFor(() => smtp.connections() > 0, { ...LONG, message: 'the worker to be sending the email' });
      p.child.kill('SIGTERM');
      await waitFor(() => p.stdout().includes('stopping: finishing active runs'), { ...LONG, message: 'the graceful stop to begin' });
      p.child.kill('SIGTERM');
      assert.equal(await exitOf(p, LONG.timeoutMs, 'node app/main.ts'), 0, p.stderr());
      const stopped = p.stdout().match(/"msg":"worker stopped"/g) ?? [];
      assert.equal(stopped.length, 1, p.stdout());
      assert.match(p.stdout(), /"handedBack":1,"msg":"worker stopped"/);
    } finally {
      p.child.kill('SIGKILL');
      await smtp.close();
    }
  });
});
