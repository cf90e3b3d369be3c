// `errand inspect workflow <id>` (src/cli/inspect.ts), spawned as a user runs it, on a SQLite file:
// the state, each step with what it runs after and still waits for; --json as GET /workflows/{id};
// an unknown workflow or a malformed id exits 2 naming it (as a run not found does).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import pino from 'pino';
import { z } from 'zod';
import { chord, createErrand, group } from '../../src/index.ts';
import { tempDir } from '../helpers.ts';

const MAIN = new URL('../../src/cli/main.ts', import.meta.url).pathname;

function errand(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const env = { ...process.env, ERRAND_BROKER_URL: undefined, REDIS_URL: undefined, ERRAND_PREFIX: undefined, ERRAND_REDACT: undefined };
    const child = spawn(process.execPath, [MAIN, ...args], { env: env as NodeJS.ProcessEnv, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('errand inspect workflow', () => {
  const url = `sqlite:${join(tempDir('errand-cli-wf'), 'wf.db')}`;
  const app = createErrand({ broker: url, logger: pino({ level: 'silent' }) });
  const double = app.task('double', { input: z.number() }, (n) => n * 2);
  const sum = app.task('sum', { input: z.array(z.number()) }, (ns) => ns.reduce((a, b) => a + b, 0));
  after(() => app.close());

  it('shows the steps, what each runs after and waits for; --json; not found', { timeout: 60_000 }, async () => {
    const wf = await app.workflow(chord(group(double.step(1), double.step(2)), sum.next()));
    const r = await errand(['inspect', 'workflow', wf.id, '--broker', url]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^workflow +${wf.id.replace('.', '\\.')}$`, 'm'));
    assert.match(r.stdout, /^state +running$/m);
    assert.match(r.stdout, /^#\s+RUN\s+TASK\s+STATE\s+AFTER\s+WAITS FOR\s+RESULT OR ERROR$/m);
    assert.match(r.stdout, /^#3\s+\S+\s+sum\s+waiting\s+#1,#2\s+#1,#2\s*$/m);

    const j = await errand(['inspect', 'workflow', wf.id, '--json', '--broker', url]);
    assert.equal(j.code, 0, j.stderr);
    const body = JSON.parse(j.stdout);
    assert.equal(body.id, wf.id);
    assert.deepEqual(body.waiting_for, { [wf.runIds[2]!]: [wf.runIds[0], wf.runIds[1]] });

    const missing = await errand(['inspect', 'workflow', 'default.01ARZ3NDEKTSV4RRFFQ69G5FAV', '--broker', url]);
    assert.equal(missing.code, 2, 'as for a run not found');
    assert.match(missing.stderr, /workflow default\.01ARZ3NDEKTSV4RRFFQ69G5FAV not found/);
    const bad = await errand(['inspect', 'workflow', 'nope', '--broker', url]);
    assert.equal(bad.code, 2);
  });
});
