// The README's "task in thirty lines", as a reader would use it: its tasks.ts written to a folder,
// its worker command run as printed (it exited 2 with `unknown queue "default"`), and its handler
// against a server that fails once with HTTP 500 (it took the error page for an image, so its
// retry policy never applied).
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { CLI, exitOf, spawnNode, stopProc } from '../fixtures/procs.ts';
import { tempDir, waitFor } from '../helpers.ts';

const README = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
const INDEX = new URL('../../src/index.ts', import.meta.url).pathname;
const ZOD = import.meta.resolve('zod'); // the module is written outside the project, where 'zod' does not resolve

/** The README's `// tasks.ts` block, importing Errand from the sources (no installed package here). */
function tasksModule(): string {
  const block = /```ts\n(\/\/ tasks\.ts\n[\s\S]*?)```/.exec(README)?.[1];
  assert.ok(block, 'the README has a tasks.ts block');
  return block.replace(/from 'errand'/g, `from ${JSON.stringify(INDEX)}`).replace(/from 'zod'/g, `from ${JSON.stringify(ZOD)}`);
}

/** The worker command printed after it, as arguments of `errand`. */
function workerCommand(): string[] {
  const start = README.indexOf('// tasks.ts');
  const line = /^npx errand (worker \.\/tasks\.ts[^#\n]*)/m.exec(README.slice(start))?.[1];
  assert.ok(line, 'the README gives the command that runs a worker for tasks.ts');
  return line.trim().split(/\s+/);
}

describe('README: a task in thirty lines', () => {
  it('its worker command starts a worker for tasks.ts (and stops on SIGTERM, exit 0)', async () => {
    const dir = tempDir('errand-readme');
    writeFileSync(join(dir, 'tasks.ts'), tasksModule());
    const args = workerCommand().map((a) => (a === './tasks.ts' ? join(dir, 'tasks.ts') : a));
    const p = spawnNode([CLI, ...args, '--broker', `sqlite:${join(dir, 'errand.db')}`], { LOG_LEVEL: 'info' });
    try {
      await waitFor(() => p.stdout().includes('"msg":"worker started"') || p.child.exitCode !== null, {
        timeoutMs: 60_000,
        message: 'the worker to start',
      });
      assert.equal(p.child.exitCode, null, `the worker exited: ${p.stderr()}`);
      assert.match(p.stdout(), /"queues":\["images"\]/);
    } finally {
      assert.equal(await stopProc(p), 0, p.stderr());
    }
    assert.equal(await exitOf(p, 1000, 'the worker'), 0);
  });

  it('its handler retries an HTTP 500 instead of taking the error page for the image', async () => {
    const dir = tempDir('errand-readme');
    writeFileSync(join(dir, 'tasks.ts'), tasksModule());
    process.env.ERRAND_BROKER_URL = `sqlite:${join(dir, 'errand.db')}`;
    let requests = 0;
    const server = createServer((_req, res) => {
      requests++;
      if (requests === 1) res.writeHead(500).end('<html>internal error, an HTML page of some size</html>');
      else res.writeHead(200, { 'content-type': 'image/png' }).end(Buffer.alloc(640));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/a.png`;
    // biome-ignore lint/suspicious/noExplicitAny: the module is the README's text, written at run time
    let mod: any;
    let worker: { start(): Promise<unknown>; stop(): Promise<void> } | undefined;
    try {
      mod = await import(join(dir, 'tasks.ts'));
      mod.errand.logger.level = 'silent';
      worker = mod.errand.worker();
      await worker!.start();
      const run = await mod.resizeImage.enqueue({ url, width: 640 });
      assert.deepEqual(await run.result({ timeout: 60_000 }), { width: 640, bytes: 640 });
      assert.equal(requests, 2, 'the 500 was retried');
      const record = await (await mod.errand.broker()).getRun(run.id);
      assert.equal(record.attempts, 2);
    } finally {
      await worker?.stop();
      await mod?.errand.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      delete process.env.ERRAND_BROKER_URL;
    }
  });
});
