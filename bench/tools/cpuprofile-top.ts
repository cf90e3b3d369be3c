/**
 * Summarises V8 CPU profiles (`node --cpu-prof`): the functions with the most self time and the most
 * total (inclusive) time, aggregated by function and file.
 *
 *   node bench/tools/cpuprofile-top.ts <file.cpuprofile>... [--top 30] [--filter src/]
 *
 * To profile the benchmark's children: BENCH_CHILD_EXEC_ARGV="--cpu-prof --cpu-prof-dir=/tmp/prof" npm run bench -- ...
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}
interface Profile {
  nodes: Node[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { top: { type: 'string', default: '30' }, filter: { type: 'string' } },
});
const top = Number(values.top);
process.stdout.on('error', () => process.exit(0)); // piped into head
const self = new Map<string, number>();
const total = new Map<string, number>();
let all = 0;

const short = (url: string) =>
  url
    .replace(/^file:\/\//, '')
    .replace(/.*\/node_modules\//, 'npm:')
    .replace(/.*\/work\/main\//, '');

for (const file of positionals) {
  const p = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  // Time per node from samples and deltas (more exact than hitCount x interval).
  const time = new Map<number, number>();
  for (let i = 0; i < p.samples.length; i++) {
    const dt = (p.timeDeltas[i + 1] ?? 0) / 1000;
    time.set(p.samples[i]!, (time.get(p.samples[i]!) ?? 0) + dt);
  }
  for (const [id, ms] of time) {
    const n = byId.get(id)!;
    const key = `${n.callFrame.functionName || '(anonymous)'} ${short(n.callFrame.url)}:${n.callFrame.lineNumber + 1}`;
    self.set(key, (self.get(key) ?? 0) + ms);
    all += ms;
    // Inclusive: every distinct frame on the stack gets the sample once.
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const m = byId.get(cur)!;
      const k = `${m.callFrame.functionName || '(anonymous)'} ${short(m.callFrame.url)}:${m.callFrame.lineNumber + 1}`;
      if (seen.has(k)) continue;
      seen.add(k);
      total.set(k, (total.get(k) ?? 0) + ms);
    }
  }
}

function print(title: string, m: Map<string, number>): void {
  process.stdout.write(`\n${title} (of ${all.toFixed(0)} ms sampled)\n`);
  const rows = [...m.entries()]
    .filter(([k]) => !values.filter || k.includes(values.filter))
    .sort((a, b) => b[1] - a[1])
    .slice(0, top);
  for (const [k, ms] of rows) process.stdout.write(`${ms.toFixed(0).padStart(8)} ms ${((ms / all) * 100).toFixed(1).padStart(5)}%  ${k}\n`);
}

print('self time', self);
print('total time', total);
