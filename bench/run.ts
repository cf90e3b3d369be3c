/**
 * `npm run bench [-- options]`: Errand side by side with BullMQ and Celery. See docs/benchmarks.md.
 *
 *   --quick              small sizes (under two minutes): checks the harness, gives orders of magnitude
 *   --rounds N           rounds per figure (default 5, quick 3)
 *   --only a,b           scenarios: enqueue, process, latency, service, memory, scale, celery, isolation, flow, schedules, limits
 *   --peers a,b          errand-redis, errand-sqlite, bullmq (the service scenario has its own peers)
 *   --services a,b       errand-seed, errand-seed-sqlite, fastify-bullmq, fastify-bullmq-sqlite, celery (default: all; errand-seed-sqlite not in --quick)
 *   --set k=v,k=v        override sizes (see Sizes in bench/lib/context.ts), e.g. --set rssRuns=300000,rounds=1 (lists: latencyRates=1000:5000)
 *   --docs / --no-docs   write docs/benchmarks.md and the chart (default: yes unless --quick/--only/--peers/--services/--set)
 *   --log-level L        Errand's LOG_LEVEL in the benchmark processes (default warn)
 *   --report FILE        measure nothing: rewrite docs/benchmarks.md and the chart from a results JSON
 *                        (after editing bench/FINDINGS.md, say)
 *
 * Environment: BENCH_CHILD_EXEC_ARGV adds Node flags to every benchmark process (e.g. "--trace-gc",
 * or "--cpu-prof --cpu-prof-dir=/tmp/prof"); BENCH_KEEP_LOGS=1 keeps their logs after a good run.
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { type Ctx, errMessage, FULL, forkPeerChild, makePeers, QUICK, type ScenarioResult, type Sizes } from './lib/context.ts';
import { machine } from './lib/env.ts';
import { getLogDir, installCleanup, liveChildren, setLogDir, stopAll } from './lib/proc.ts';
import { redisServerAvailable, startRedis } from './lib/redis-server.ts';
import { evaluateTargets, markdown, type RunResults, svgChart } from './lib/report.ts';
import { celeryScenario } from './scenarios/celery.ts';
import { enqueueScenario } from './scenarios/enqueue.ts';
import { flowScenario } from './scenarios/flow.ts';
import { isolationScenario } from './scenarios/isolation.ts';
import { latencyScenario } from './scenarios/latency.ts';
import { limitsScenario } from './scenarios/limits.ts';
import { memoryScenario } from './scenarios/memory.ts';
import { processScenario } from './scenarios/process.ts';
import { scaleScenario } from './scenarios/scale.ts';
import { schedulesScenario } from './scenarios/schedules.ts';
import { serviceScenario } from './scenarios/service.ts';

const root = join(dirname(new URL(import.meta.url).pathname), '..');
const SCENARIOS: Record<string, (ctx: Ctx) => Promise<ScenarioResult>> = {
  enqueue: enqueueScenario,
  process: processScenario,
  latency: latencyScenario,
  service: serviceScenario,
  memory: memoryScenario,
  scale: scaleScenario,
  celery: celeryScenario,
  isolation: isolationScenario,
  flow: flowScenario,
  schedules: schedulesScenario,
  limits: limitsScenario,
};

function usage(msg: string): never {
  process.stderr.write(
    `bench: ${msg}\n\nUsage: npm run bench -- [--quick] [--rounds N] [--only ${Object.keys(SCENARIOS).join(',')}] [--peers errand-redis,errand-sqlite,bullmq,bullmq-autopipe] [--services errand-seed,errand-seed-sqlite,fastify-bullmq,fastify-bullmq-sqlite,celery] [--docs|--no-docs] [--log-level warn]\n`,
  );
  process.exit(2);
}

async function main(): Promise<void> {
  let args: ReturnType<typeof parseArgs>['values'];
  try {
    ({ values: args } = parseArgs({
      options: {
        quick: { type: 'boolean', default: false },
        rounds: { type: 'string' },
        only: { type: 'string' },
        peers: { type: 'string' },
        services: { type: 'string' },
        set: { type: 'string' },
        docs: { type: 'boolean' },
        'no-docs': { type: 'boolean' },
        'log-level': { type: 'string', default: 'warn' },
        report: { type: 'string' },
      },
      strict: true,
    }));
  } catch (err) {
    usage(errMessage(err));
  }
  if (typeof args.report === 'string') {
    const results = JSON.parse(readFileSync(args.report, 'utf8')) as RunResults;
    results.targets = evaluateTargets(results.scenarios, results.mode);
    writeDocs(results, args.report);
    return;
  }
  const quick = Boolean(args.quick);
  const sizes: Sizes = { ...(quick ? QUICK : FULL) };
  if (args.rounds !== undefined) {
    const n = Number(args.rounds);
    if (!Number.isInteger(n) || n < 1) usage(`--rounds must be a positive integer, got ${String(args.rounds)}`);
    sizes.rounds = n;
  }
  if (typeof args.set === 'string') {
    for (const pair of args.set.split(',')) {
      const [k, v] = pair.split('=');
      if (!k || v === undefined || !(k in sizes)) usage(`--set: unknown size "${k}" (known: ${Object.keys(sizes).join(', ')})`);
      const key = k as keyof Sizes;
      // A list size stays a list with one value (latencyRates=1000); a single size takes one number.
      const list = Array.isArray(sizes[key]);
      if (!list && v.includes(':')) usage(`--set ${k}: expected one number, got the list ${v}`);
      const value = list ? v.split(':').map(Number) : Number(v);
      if ((Array.isArray(value) ? value : [value]).some((x) => !Number.isFinite(x) || x <= 0))
        usage(`--set ${k}: expected positive number(s), got ${v}`);
      (sizes as unknown as Record<string, number | number[]>)[key] = value;
    }
  }
  const only = typeof args.only === 'string' ? args.only.split(',').map((s) => s.trim()) : null;
  for (const s of only ?? []) if (!SCENARIOS[s]) usage(`unknown scenario "${s}"`);
  const wantedPeers = typeof args.peers === 'string' ? args.peers.split(',').map((s) => s.trim()) : null;
  for (const p of wantedPeers ?? [])
    if (!['errand-redis', 'errand-sqlite', 'bullmq', 'bullmq-autopipe'].includes(p)) usage(`unknown peer "${p}"`);
  const services = typeof args.services === 'string' ? args.services.split(',').map((s) => s.trim()) : null;
  for (const p of services ?? [])
    if (!['errand-seed', 'errand-seed-sqlite', 'fastify-bullmq', 'fastify-bullmq-sqlite', 'celery'].includes(p))
      usage(`unknown service "${p}"`);
  // The page holds the figures of a full run: a --quick or narrowed run writes it only when asked.
  const docs = args['no-docs'] ? false : (args.docs ?? (!quick && !only && !wantedPeers && !services && !args.set));
  const logLevel = String(args['log-level']);

  // Never let a child inherit a broker URL from the caller's shell: every URL is given explicitly.
  delete process.env.REDIS_URL;
  delete process.env.ERRAND_BROKER_URL;
  delete process.env.DATABASE_URL;

  const tmp = mkdtempSync('/tmp/errand-bench-');
  setLogDir(join(tmp, 'logs'));
  installCleanup();
  const log = (msg: string) => process.stdout.write(`[${((performance.now() - t0) / 1000).toFixed(1).padStart(6)} s] ${msg}\n`);
  const t0 = performance.now();
  const startedAt = new Date().toISOString();
  const mach = machine(root);
  log(
    `errand bench, ${quick ? 'quick' : 'full'} mode, ${sizes.rounds} rounds; ${mach.cpu}, ${mach.cores} cores; load ${mach.loadavgAtStart.join(' ')}`,
  );
  log(`child logs: ${getLogDir()}`);

  const skipped: string[] = [];
  const notes: string[] = [];
  if (!redisServerAvailable()) {
    process.stderr.write('bench: redis-server is not installed (apt-get install -y redis-server): nothing can be measured\n');
    process.exit(1);
  }
  const redis = await startRedis();
  mach.versions.redis = redis.version;
  log(`redis-server ${redis.version} on port ${redis.port}`);
  const peers = makePeers(redis, tmp, wantedPeers);
  const ctx: Ctx = {
    root,
    tmp,
    quick,
    sizes,
    redis,
    peers,
    services,
    log,
    child: (name, driver, execArgv) => forkPeerChild(root, name, driver, logLevel, execArgv),
  };
  if (logLevel !== 'warn') notes.push(`Errand processes ran with LOG_LEVEL=${logLevel}.`);
  else
    notes.push(
      'Errand processes run with LOG_LEVEL=warn (the anchors log nothing per job: Celery runs at --loglevel=warning, BullMQ has no per-job log).',
    );

  const scenarios: Record<string, ScenarioResult> = {};
  try {
    for (const [name, run] of Object.entries(SCENARIOS)) {
      if (only && !only.includes(name)) continue;
      log(`scenario ${name}`);
      const ts = performance.now();
      try {
        // A peer measured only where it matters (BullMQ with auto-pipelining: enqueue, latency).
        scenarios[name] = await run({ ...ctx, peers: ctx.peers.filter((p) => !p.scenarios || p.scenarios.includes(name)) });
        scenarios[name].seconds = (performance.now() - ts) / 1000;
      } catch (err) {
        log(`scenario ${name} failed: ${errMessage(err)}`);
        skipped.push(`Scenario ${name} failed: ${errMessage(err)}`);
      }
      const left = liveChildren(redis.child);
      if (left.length) {
        log(`  stopping children left over by ${name}: ${left.join(', ')}`);
        await stopAll(redis.child).catch(() => undefined);
      }
      log(`scenario ${name} done in ${((performance.now() - ts) / 1000).toFixed(1)} s`);
    }
  } finally {
    await redis.stop();
  }

  const results: RunResults = {
    format: 1,
    mode: quick ? 'quick' : 'full',
    argv: process.argv.slice(2),
    machine: mach,
    sizes,
    startedAt,
    seconds: (performance.now() - t0) / 1000,
    scenarios,
    skipped,
    notes,
    targets: evaluateTargets(scenarios, quick ? 'quick' : 'full'),
    loadavgAtEnd: loadavg().map((v) => Math.round(v * 100) / 100),
  };
  const resultsDir = join(root, 'bench/results');
  mkdirSync(resultsDir, { recursive: true });
  const stamp = startedAt.replace(/[:]/g, '-').replace(/\..+/, '');
  // Only complete full runs are kept in the repository (`-full.json`: the page's "before" columns come
  // from the newest one); quick and narrowed runs (`-quick.json`, `-partial.json`) are ignored by git.
  const narrowed = Boolean(only || wantedPeers || services || args.set);
  const jsonPath = join(resultsDir, `${stamp}-${quick ? 'quick' : narrowed ? 'partial' : 'full'}.json`);
  writeFileSync(jsonPath, `${JSON.stringify(results, null, 1)}\n`);
  log(`raw results: ${jsonPath}`);
  if (docs) {
    writeDocs(results, jsonPath);
    log('wrote docs/benchmarks.md and bench/results/benchmarks.svg');
  }
  for (const t of results.targets) log(`  ${t.met === null ? '  ?  ' : t.met ? ' met ' : ' MISS'} ${t.text} [${t.metric}]: ${t.detail}`);
  log(`done in ${results.seconds.toFixed(0)} s`);
  const anyError = skipped.length > 0 || JSON.stringify(scenarios).includes('"error"');
  if (anyError) log(`some figures failed: child logs kept in ${getLogDir()}`);
  else if (process.env.BENCH_KEEP_LOGS) log(`child logs kept in ${getLogDir()} (BENCH_KEEP_LOGS)`);
  else rmSync(tmp, { recursive: true, force: true, maxRetries: 2 });
}

/** The newest full run in bench/results/ before `current` (a results file), for the page's "before" columns. */
function previousFullRun(current: string): RunResults | undefined {
  const dir = join(root, 'bench/results');
  const earlier = readdirSync(dir)
    .filter((f) => f.endsWith('-full.json') && f < basename(current))
    .sort();
  const last = earlier.at(-1);
  return last ? (JSON.parse(readFileSync(join(dir, last), 'utf8')) as RunResults) : undefined;
}

function writeDocs(results: RunResults, resultsFile: string): void {
  mkdirSync(join(root, 'docs'), { recursive: true });
  mkdirSync(join(root, 'bench/results'), { recursive: true });
  writeFileSync(join(root, 'bench/results/benchmarks.svg'), svgChart(results));
  const page = join(root, 'docs/benchmarks.md');
  const previous = previousFullRun(resultsFile);
  writeFileSync(page, markdown(results, '../bench/results/benchmarks.svg', join(root, 'bench/FINDINGS.md'), previous));
}

main().catch(async (err) => {
  process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  await stopAll().catch(() => undefined);
  process.exit(1);
});
