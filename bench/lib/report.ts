/** Turns a run's results into docs/benchmarks.md (tables, ratios, targets) and an SVG chart. */
import { existsSync, readFileSync } from 'node:fs';
import type { Machine } from './env.ts';
import type { ScenarioResult, Sizes } from './context.ts';
import { type Figure, fmt, ok } from './stats.ts';

export interface RunResults {
  format: 1;
  mode: 'quick' | 'full';
  argv: string[];
  machine: Machine;
  sizes: Sizes;
  startedAt: string;
  seconds: number;
  scenarios: Record<string, ScenarioResult>;
  skipped: string[];
  notes: string[];
  targets: TargetResult[];
  loadavgAtEnd: number[];
}

export const PEER_LABELS: Record<string, string> = {
  'errand-redis': 'Errand (Redis)',
  'errand-sqlite': 'Errand (SQLite)',
  bullmq: 'BullMQ',
  'bullmq-autopipe': 'BullMQ (auto-pipelining)',
  'errand-redis-limits': 'Errand (Redis), limits on',
  'errand-sqlite-limits': 'Errand (SQLite), limits on',
  'bullmq-limiter': 'BullMQ, limiter on',
  'errand-seed': 'Errand seed service (Redis)',
  'errand-seed-sqlite': 'Errand seed service (SQLite)',
  'fastify-bullmq': 'Fastify + BullMQ',
  'fastify-bullmq-sqlite': 'Fastify + BullMQ, STORE=sqlite',
  celery: 'FastAPI + Celery',
  'errand-none': 'Errand, inline',
  'errand-thread': 'Errand, isolation thread',
  'errand-process': 'Errand, isolation process',
  'bullmq-inline': 'BullMQ, inline processor',
  'bullmq-thread': 'BullMQ, sandbox (worker threads)',
  'bullmq-process': 'BullMQ, sandbox (processes)',
  'celery-prefork': 'Celery prefork',
  'errand-celery': 'Errand worker (errand/celery)',
  'python-celery': 'Python Celery worker',
};

const COLORS: Record<string, string> = {
  'errand-redis': '#2b6cb0',
  'errand-sqlite': '#38a169',
  bullmq: '#dd6b20',
  'bullmq-autopipe': '#c05621',
  'errand-redis-limits': '#90cdf4',
  'errand-sqlite-limits': '#9ae6b4',
  'bullmq-limiter': '#fbd38d',
  'errand-seed': '#2b6cb0',
  'errand-seed-sqlite': '#38a169',
  'fastify-bullmq': '#dd6b20',
  'fastify-bullmq-sqlite': '#c05621',
  celery: '#805ad5',
  'errand-none': '#90cdf4',
  'errand-thread': '#2b6cb0',
  'errand-process': '#1a365d',
  'bullmq-inline': '#fbd38d',
  'bullmq-thread': '#dd6b20',
  'bullmq-process': '#7b341e',
  'celery-prefork': '#805ad5',
};

/** Metrics where a smaller figure is better. */
export function lowerIsBetter(metric: string, unit: string): boolean {
  return unit === 'ms' || unit === 'bytes' || unit === '%' || unit === 'MiB' || /RSS|bytes|p50|p99/.test(metric);
}

export interface Target {
  text: string;
  scenario: string;
  metric: string | RegExp;
  errand: string;
  /** Peer to compare with; absent for an absolute target. */
  peer?: string;
  /** For a ratio target: errand/peer must be >= min (or <= max). For an absolute target: the figure itself. */
  min?: number;
  max?: number;
  /** Strictly ahead (ratio > 1). */
  ahead?: boolean;
}

export interface TargetResult {
  text: string;
  metric: string;
  value: number;
  /** `ratio` (Errand / peer) or `absolute`. */
  kind: 'ratio' | 'absolute';
  met: boolean | null;
  detail: string;
}

export const TARGETS: Target[] = [
  {
    text: 'processing at concurrency 50: at least 3x BullMQ',
    scenario: 'process',
    metric: /^c=50,/,
    errand: 'errand-redis',
    peer: 'bullmq',
    min: 3,
  },
  {
    text: 'processing at concurrency 100: at least 3x BullMQ',
    scenario: 'process',
    metric: /^c=100,/,
    errand: 'errand-redis',
    peer: 'bullmq',
    min: 3,
  },
  {
    text: 'processing at concurrency 1: at least 1.5x BullMQ',
    scenario: 'process',
    metric: /^c=1,/,
    errand: 'errand-redis',
    peer: 'bullmq',
    min: 1.5,
  },
  {
    text: 'enqueue, concurrent: at least 2x BullMQ',
    scenario: 'enqueue',
    metric: /concurrent/,
    errand: 'errand-redis',
    peer: 'bullmq',
    min: 2,
  },
  { text: 'enqueue, batch API: at least 2x BullMQ', scenario: 'enqueue', metric: /^batch/, errand: 'errand-redis', peer: 'bullmq', min: 2 },
  {
    text: 'enqueue, one at a time: at least 1.2x BullMQ',
    scenario: 'enqueue',
    metric: /^one at a time/,
    errand: 'errand-redis',
    peer: 'bullmq',
    min: 1.2,
  },
  { text: 'latency p99 at or below BullMQ', scenario: 'latency', metric: /^p99/, errand: 'errand-redis', peer: 'bullmq', max: 1 },
  {
    text: 'Redis bytes per queued run at or below BullMQ',
    scenario: 'memory',
    metric: /^Redis used_memory per queued run/,
    errand: 'errand-redis',
    peer: 'bullmq',
    max: 1,
  },
  { text: 'worker RSS grows under 10% over the runs', scenario: 'memory', metric: /^worker RSS growth/, errand: 'errand-redis', max: 10 },
  {
    text: 'seed service: at least 10x Celery on HTTP requests/s',
    scenario: 'service',
    metric: /^HTTP/,
    errand: 'errand-seed',
    peer: 'celery',
    min: 10,
  },
  {
    text: 'seed service: at least 10x Celery on emails/s',
    scenario: 'service',
    metric: /^emails/,
    errand: 'errand-seed',
    peer: 'celery',
    min: 10,
  },
  {
    text: 'seed service: ahead of Fastify+BullMQ on HTTP requests/s',
    scenario: 'service',
    metric: /^HTTP/,
    errand: 'errand-seed',
    peer: 'fastify-bullmq',
    ahead: true,
  },
  {
    text: 'seed service: ahead of Fastify+BullMQ on emails/s',
    scenario: 'service',
    metric: /^emails/,
    errand: 'errand-seed',
    peer: 'fastify-bullmq',
    ahead: true,
  },
  {
    text: 'per-key limits (not binding): processing within 20% of without, Redis',
    scenario: 'limits',
    metric: /^c=50, per-key limits/,
    errand: 'errand-redis-limits',
    peer: 'errand-redis',
    min: 0.8,
  },
  {
    text: 'per-key limits (not binding): processing within 20% of without, SQLite',
    scenario: 'limits',
    metric: /^c=50, per-key limits/,
    errand: 'errand-sqlite-limits',
    peer: 'errand-sqlite',
    min: 0.8,
  },
  {
    text: 'Errand on SQLite: at least 10,000 runs/s processed',
    scenario: 'process',
    metric: /^c=(50|100),/,
    errand: 'errand-sqlite',
    min: 10_000,
  },
];

export function evaluateTargets(scenarios: Record<string, ScenarioResult>, mode: 'quick' | 'full' = 'full'): TargetResult[] {
  const out: TargetResult[] = [];
  for (const t of TARGETS) {
    const sc = scenarios[t.scenario];
    if (!sc) continue;
    for (const [metric, peers] of Object.entries(sc.metrics)) {
      if (typeof t.metric === 'string' ? metric !== t.metric : !t.metric.test(metric)) continue;
      const e = peers[t.errand];
      // Against BullMQ at its best: with or without auto-pipelining, whichever did better here.
      const candidates = t.peer === 'bullmq' ? ['bullmq', 'bullmq-autopipe'] : t.peer ? [t.peer] : [];
      const measured = candidates.filter((c) => ok(peers[c]));
      const better = (a: string, b: string) => {
        const fa = peers[a]!;
        const fb = peers[b]!;
        return (lowerIsBetter(metric, fa.unit) ? fa.median <= fb.median : fa.median >= fb.median) ? a : b;
      };
      const best = measured.length ? measured.reduce(better) : t.peer;
      const p = best ? peers[best] : undefined;
      if (t.peer) {
        if (!ok(e) || !ok(p)) {
          out.push({
            text: t.text,
            metric,
            value: Number.NaN,
            kind: 'ratio',
            met: null,
            detail: `not measured (${!ok(e) ? `${PEER_LABELS[t.errand]}: ${e?.error ?? 'missing'}` : `${PEER_LABELS[t.peer]}: ${p?.error ?? 'missing'}`})`,
          });
          continue;
        }
        const r = e.median / p.median;
        const met = t.ahead ? r > 1 : t.min !== undefined ? r >= t.min : r <= t.max!;
        out.push({
          text: t.text,
          metric,
          value: r,
          kind: 'ratio',
          met,
          detail: `${fmt(e.median)} / ${fmt(p.median)} ${e.unit} = ${fmtRatio(r)}${best !== t.peer ? ` (against ${PEER_LABELS[best!]})` : ''}`,
        });
      } else {
        if (!ok(e)) {
          out.push({
            text: t.text,
            metric,
            value: Number.NaN,
            kind: 'absolute',
            met: null,
            detail: `not measured (${e?.error ?? 'missing'})`,
          });
          continue;
        }
        const met = t.min !== undefined ? e.median >= t.min : e.median < t.max!;
        if (mode === 'quick' && /RSS/.test(metric)) {
          // A few tens of thousands of runs end inside V8's warm-up: not a verdict.
          out.push({
            text: t.text,
            metric,
            value: e.median,
            kind: 'absolute',
            met: null,
            detail: `${fmt(e.median)} ${e.unit} (--quick: too few runs to judge)`,
          });
          continue;
        }
        out.push({ text: t.text, metric, value: e.median, kind: 'absolute', met, detail: `${fmt(e.median)} ${e.unit}` });
      }
    }
  }
  return out;
}

export function fmtRatio(r: number): string {
  if (!Number.isFinite(r)) return 'n/a';
  return `${r >= 10 ? r.toFixed(1) : r.toFixed(2)}x`;
}

function cell(f: Figure | undefined): string {
  if (!f) return '';
  if (!ok(f)) return `n/a${f.error ? ` (${f.error.replace(/\|/g, '/').slice(0, 90)})` : ''}`;
  const u = f.unit === 'runs/s' || f.unit === 'req/s' || f.unit === 'emails/s' ? '' : ` ${f.unit}`;
  if (f.rounds.length <= 1) return `${fmt(f.median)}${u}`;
  return `**${fmt(f.median)}**${u} (${fmt(f.min)}–${fmt(f.max)})`;
}

/** Which ratio columns a scenario's table gets: [errand, peer]. */
function ratioColumns(scenario: string, peers: string[]): [string, string][] {
  const has = (p: string) => peers.includes(p);
  if (scenario === 'service') {
    const out: [string, string][] = [];
    if (has('errand-seed') && has('fastify-bullmq')) out.push(['errand-seed', 'fastify-bullmq']);
    if (has('errand-seed') && has('fastify-bullmq-sqlite')) out.push(['errand-seed', 'fastify-bullmq-sqlite']);
    if (has('errand-seed') && has('celery')) out.push(['errand-seed', 'celery']);
    return out;
  }
  if (scenario === 'limits') {
    const pairs: [string, string][] = [
      ['errand-redis-limits', 'errand-redis'],
      ['errand-sqlite-limits', 'errand-sqlite'],
      ['bullmq-limiter', 'bullmq'],
      ['errand-redis-limits', 'bullmq-limiter'],
    ];
    return pairs.filter(([a, b]) => has(a) && has(b));
  }
  const out: [string, string][] = [];
  if (has('errand-redis') && has('bullmq')) out.push(['errand-redis', 'bullmq']);
  if (has('errand-redis') && has('bullmq-autopipe')) out.push(['errand-redis', 'bullmq-autopipe']);
  if (has('errand-sqlite') && has('bullmq') && scenario !== 'memory') out.push(['errand-sqlite', 'bullmq']);
  return out;
}

const SCENARIO_ORDER = [
  'enqueue',
  'process',
  'latency',
  'service',
  'memory',
  'scale',
  'celery',
  'isolation',
  'flow',
  'schedules',
  'limits',
];
const PEER_ORDER = Object.keys(PEER_LABELS);

function peersOf(sc: ScenarioResult): string[] {
  const set = new Set<string>();
  for (const peers of Object.values(sc.metrics)) for (const p of Object.keys(peers)) set.add(p);
  return PEER_ORDER.filter((p) => set.has(p));
}

/**
 * `previous`: the full run before this one (bench/results/), whose Errand-to-peer ratios are shown
 * beside this run's ("before" columns), so that a figure that moved is seen to move.
 */
export function markdown(r: RunResults, chartPath: string, findingsPath: string, previous?: RunResults): string {
  const m = r.machine;
  const lines: string[] = [];
  lines.push('# Benchmarks');
  lines.push('');
  lines.push(
    'Errand side by side with its peers, measured in one run by `npm run bench` (files under `bench/`). ' +
      "This page is generated by the harness from the run's raw JSON (`bench/results/`); the profiling notes at the end are written by hand (`bench/FINDINGS.md`).",
  );
  lines.push('');
  if (r.mode === 'quick')
    lines.push(
      '> **This is a `--quick` run**: small sizes, short rounds. Its figures show that the harness works and give an order of magnitude, not a verdict. Run `npm run bench` on a quiet machine for the real figures.',
      '',
    );
  // The load at the end includes the benchmark's own processes (their last minutes): only the load
  // at the start says whether other work shared the machine.
  if (m.loadavgAtStart[0]! > m.cores * 0.5)
    lines.push(
      `> **Noise**: the machine was busy with other work during this run (load average ${m.loadavgAtStart.join(', ')} at the start, ${r.loadavgAtEnd.join(', ')} at the end, on ${m.cores} cores). Treat the figures as indicative.`,
    );
  lines.push('');
  lines.push('## Run');
  lines.push('');
  lines.push('| | |');
  lines.push('|---|---|');
  lines.push(`| date | ${r.startedAt} (${Math.round(r.seconds)} s) |`);
  lines.push(`| mode | ${r.mode}, ${r.sizes.rounds} rounds per figure (median, with min–max) |`);
  lines.push(`| command | \`${['npm run bench', ...(r.argv.length ? ['--', ...r.argv] : [])].join(' ')}\` |`);
  lines.push(`| machine | ${m.cpu}, ${m.cores} cores, ${m.memGiB} GiB, ${m.os}, Linux ${m.kernel} |`);
  lines.push(`| load average at start / end | ${m.loadavgAtStart.join(', ')} / ${r.loadavgAtEnd.join(', ')} |`);
  lines.push(
    `| Errand | ${m.versions.errand}, commit ${m.errandCommit}${m.errandDirty ? ' (src/ or app/ had uncommitted changes)' : ''} |`,
  );
  lines.push(`| Node.js | ${m.node} |`);
  const v = m.versions;
  lines.push(`| Redis | ${v.redis ?? 'unknown'} (a server of the benchmark's own, no persistence) |`);
  lines.push(`| BullMQ | ${v.bullmq} (ioredis ${v.ioredis}) |`);
  lines.push(`| Celery | ${v.celery} (Python ${v.python}, FastAPI ${v.fastapi}, uvicorn ${v.uvicorn}) |`);
  lines.push(`| load generators | wrk ${v.wrk}, autocannon ${v.autocannon} |`);
  lines.push('');
  if (previous) {
    lines.push(
      `Each ratio column has a **before** column beside it: the same ratio in the previous full run (${previous.startedAt}, commit ${previous.machine.errandCommit}, ` +
        `load average ${previous.machine.loadavgAtStart.join(', ')} at its start). Ratios compare peers measured in one run, so they travel between runs better than raw figures; ` +
        'a ratio that moved much is discussed under Findings. An empty "before" cell: the figure or the peer is new, or the harness measured it differently then.',
    );
    lines.push('');
  }
  if (r.skipped.length || r.notes.length) {
    for (const n of [...r.skipped, ...r.notes]) lines.push(`- ${n}`);
    lines.push('');
  }

  lines.push('## Targets');
  lines.push('');
  lines.push('| target | figure | measured | met |');
  lines.push('|---|---|---|---|');
  for (const t of r.targets) {
    const verdict = t.met === null ? (t.detail.startsWith('not measured') ? 'not measured' : 'not judged') : t.met ? 'yes' : '**no**';
    lines.push(`| ${t.text} | ${t.metric} | ${t.detail} | ${verdict} |`);
  }
  lines.push('');
  lines.push(`![Chart of the figures](${chartPath})`);
  lines.push('');

  for (const key of SCENARIO_ORDER) {
    const sc = r.scenarios[key];
    if (!sc) continue;
    const peers = peersOf(sc);
    const ratios = ratioColumns(key, peers);
    lines.push(`## ${sc.title}`);
    lines.push('');
    const before = previous?.scenarios[key];
    const head = [
      'figure',
      ...peers.map((p) => PEER_LABELS[p] ?? p),
      ...ratios.flatMap(([a, b]) => (before ? [`${short(a)} / ${short(b)}`, 'before'] : [`${short(a)} / ${short(b)}`])),
    ];
    lines.push(`| ${head.join(' | ')} |`);
    lines.push(`|${head.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`);
    for (const [metric, byPeer] of Object.entries(sc.metrics)) {
      const unit = Object.values(byPeer)[0]?.unit ?? '';
      const row = [`${metric} (${unit}${lowerIsBetter(metric, unit) ? ', lower is better' : ''})`, ...peers.map((p) => cell(byPeer[p]))];
      for (const [a, b] of ratios) {
        row.push(ratioCell(byPeer[a], byPeer[b]));
        if (before) row.push(ratioCell(before.metrics[metric]?.[a], before.metrics[metric]?.[b]));
      }
      lines.push(`| ${row.join(' | ')} |`);
    }
    lines.push('');
    if (sc.cpu && Object.keys(sc.cpu).length) {
      lines.push(
        "CPU time per run, in µs (median round): the peer's process(es) + redis-server. Less sensitive to a busy machine than the throughput above.",
      );
      lines.push('');
      const cpuPeers = PEER_ORDER.filter((p) => Object.values(sc.cpu!).some((byKey) => byKey[`${p} client`]));
      lines.push(`| figure | ${cpuPeers.map((p) => PEER_LABELS[p]).join(' | ')} |`);
      lines.push(`|---|${cpuPeers.map(() => '---:').join('|')}|`);
      for (const [metric, byKey] of Object.entries(sc.cpu)) {
        const cells = cpuPeers.map((p) => {
          const c = byKey[`${p} client`];
          const r = byKey[`${p} redis`];
          if (!ok(c)) return 'n/a';
          if (!ok(r)) return fmt(c.median);
          return `${fmt(c.median)} + ${fmt(r.median)} = ${fmt(c.median + r.median)}`;
        });
        lines.push(`| ${metric} | ${cells.join(' | ')} |`);
      }
      lines.push('');
    }
    for (const n of sc.notes) lines.push(`- ${n}`);
    if (sc.seconds !== undefined) lines.push(`- Scenario time: ${Math.round(sc.seconds)} s.`);
    lines.push('');
  }
  lines.push('## How to run');
  lines.push('');
  lines.push('```sh');
  lines.push('npm run bench                    # the full run (20 to 30 minutes on 2 cores); writes this page');
  lines.push('npm run bench -- --quick         # small sizes, under two minutes: checks the harness');
  lines.push('npm run bench -- --only enqueue,process --peers errand-redis,bullmq --rounds 3');
  lines.push('```');
  lines.push('');
  lines.push(
    'The harness starts its own `redis-server` on a free port (no persistence) and an SMTP sink, runs every peer in its own child processes, ' +
      'and kills every child at the end (or on Ctrl-C). Logs of every child go to a temporary folder named at the start of the run. ' +
      "Celery is skipped, with a note, when Debian's `python3-celery python3-redis python3-fastapi python3-uvicorn` are missing; " +
      'the Fastify+BullMQ anchor is installed once in a copy under `/tmp/errand-bench-anchors/` (its own folder is read-only). ' +
      'The anchors folder is `BENCH_ANCHORS`, else a `shared/anchors` above the checkout or above the checkout it was cloned from (`bench/lib/anchors.ts`). ' +
      '`--quick` runs and runs narrowed with `--only`, `--peers`, `--services` or `--set` write their JSON but not this page, unless `--docs` is given; ' +
      '`npm run bench -- --report bench/results/<run>.json` rewrites this page from a run (after editing `bench/FINDINGS.md`, say). ' +
      'Options are listed at the top of `bench/run.ts`.',
  );
  lines.push('');
  if (existsSync(findingsPath)) {
    lines.push(readFileSync(findingsPath, 'utf8').trim());
    lines.push('');
  }
  return lines.join('\n');
}

function ratioCell(fa: Figure | undefined, fb: Figure | undefined): string {
  return ok(fa) && ok(fb) && fa.median > 0 && fb.median > 0 ? fmtRatio(fa.median / fb.median) : '';
}

function short(peer: string): string {
  return (
    {
      'errand-redis': 'Errand Redis',
      'errand-sqlite': 'Errand SQLite',
      bullmq: 'BullMQ',
      'bullmq-autopipe': 'BullMQ autopipe',
      'errand-redis-limits': 'Errand Redis limits',
      'errand-sqlite-limits': 'Errand SQLite limits',
      'bullmq-limiter': 'BullMQ limiter',
      'errand-seed': 'seed',
      'errand-seed-sqlite': 'seed SQLite',
      'fastify-bullmq': 'Fastify+BullMQ',
      'fastify-bullmq-sqlite': 'Fastify+BullMQ SQLite',
      celery: 'Celery',
    } as Record<string, string>
  )[peer]!;
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** A horizontal bar chart: one group per figure, one bar per peer, scaled to the group's largest value. */
export function svgChart(r: RunResults): string {
  const W = 980;
  const labelW = 330;
  const barMax = 470;
  const barH = 13;
  const gap = 3;
  const groupGap = 12;
  const parts: string[] = [];
  let y = 70;
  const legendPeers = new Set<string>();
  for (const key of SCENARIO_ORDER) {
    const sc = r.scenarios[key];
    if (!sc) continue;
    parts.push(`<text x="10" y="${y + 4}" font-size="15" font-weight="bold">${esc(sc.title)}</text>`);
    y += 16;
    for (const [metric, byPeer] of Object.entries(sc.metrics)) {
      if (/RSS at|RSS peak|MEMORY USAGE|SQLite file/.test(metric)) continue;
      const entries = PEER_ORDER.filter((p) => byPeer[p]).map((p) => [p, byPeer[p]!] as const);
      const max = Math.max(...entries.map(([, f]) => (ok(f) ? Math.max(Math.abs(f.median), Math.abs(f.max)) : 0)), 1e-9);
      const unit = entries[0]?.[1].unit ?? '';
      const low = lowerIsBetter(metric, unit);
      const top = y;
      entries.forEach(([peer, f], i) => {
        legendPeers.add(peer);
        const by = top + i * (barH + gap);
        const w = ok(f) ? Math.max(1, (Math.abs(f.median) / max) * barMax) : 0;
        parts.push(`<rect x="${labelW}" y="${by}" width="${w.toFixed(1)}" height="${barH}" fill="${COLORS[peer] ?? '#888'}"/>`);
        let end = w;
        if (ok(f) && f.rounds.length > 1) {
          const x1 = labelW + (Math.abs(f.min) / max) * barMax;
          const x2 = labelW + (Math.abs(f.max) / max) * barMax;
          const my = by + barH / 2;
          parts.push(
            `<path d="M${x1.toFixed(1)} ${my}H${x2.toFixed(1)}M${x1.toFixed(1)} ${by + 3}V${by + barH - 3}M${x2.toFixed(1)} ${by + 3}V${by + barH - 3}" stroke="#111" stroke-width="1" fill="none"/>`,
          );
          end = Math.max(end, x2 - labelW);
        }
        const text = ok(f) ? `${fmt(f.median)} ${unit}` : 'n/a';
        parts.push(`<text x="${(labelW + end + 6).toFixed(1)}" y="${by + barH - 2}" font-size="11">${esc(text)}</text>`);
      });
      const h = entries.length * (barH + gap);
      parts.push(`<text x="${labelW - 8}" y="${top + h / 2 + 4}" font-size="12" text-anchor="end">${esc(metric)}${low ? ' ↓' : ''}</text>`);
      y = top + h + groupGap;
    }
    y += 8;
  }
  const legend = [...legendPeers]
    .map((p, i) => {
      const x = 10 + (i % 4) * 240;
      const ly = 34 + Math.floor(i / 4) * 18;
      return `<rect x="${x}" y="${ly - 10}" width="12" height="12" fill="${COLORS[p] ?? '#888'}"/><text x="${x + 18}" y="${ly}" font-size="12">${esc(PEER_LABELS[p] ?? p)}</text>`;
    })
    .join('');
  const title = `Errand benchmarks (${r.mode}), ${r.startedAt.slice(0, 10)}, ${r.machine.cores} cores: median of ${r.sizes.rounds} rounds, line = min–max, ↓ = lower is better`;
  const H = y + 20;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif">`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    `<text x="10" y="18" font-size="14">${esc(title)}</text>`,
    legend,
    ...parts,
    '</svg>',
  ].join('\n');
}
