/**
 * EXPERIMENT, not the product: a prototype of flow control by start-time fair queuing (virtual-time
 * tags) on Redis, measured against the product's flow control, to inform a design decision. It
 * changes nothing in the broker: it builds its own enqueue, reserve and settle scripts and registers
 * them in place of the product's on the connections of the prototype's brokers only.
 *
 * The prototype (bench/tools/wfq-proto/): each admitted run of every key is in ONE sorted set of the
 * queue, scored by its tag max(V, F_key) + 1/weight (V: the tag of the last run dispatched, F_key
 * the tag of the key's latest admitted run; equal tags in rid order). Reserve pops the lowest tags
 * (ZPOPMIN), reads their keys' states with one HMGET, checks each key's limit and GCRA rate, leases
 * (the product's reserveLease), writes the states with one HSET. A key is admitted only as far as
 * it has free slots; the rest wait in its own list and come back with fresh tags when a slot frees
 * (settle) or its rate wait ends, so a key at its limit costs reserve nothing. The scripts are the
 * product's (same run hashes, leases, outcomes, stats) with flow.lua's flowPush, flowFreeMany,
 * flowFree, flowUnqueue replaced (wfq.lua), reserve's step 3a replaced (reserve-3a.lua) and
 * enqueue's flow part replaced (enqueue-flow.lua). One group is enough for the figures: groups keep
 * their active count but group limits, group rates, weights beyond the tag step, back-off and the
 * housekeeping count are not handled; cancel, expiry and runs put back at the front are written
 * but not checked.
 *
 * First it checks the prototype is fair and exact on small cases (assertions); then, as
 * flow-cost.ts, `runs` runs enqueued (1,000 per call) and leased `batch` at a time by reserve calls
 * carrying the outcomes of an earlier batch, on a redis-server of its own, the `--modes` alternated
 * within each round: off (product, no limits), on (product, per-key limits that never bind: 1,000
 * active, 1,000,000 starts/s per key), wfq (prototype, same limits), wfq-off (prototype scripts,
 * runs without limits: its plain path, for a like-for-like floor); ablations (see Mode below):
 * on-conc, wfq-conc (concurrency only), on-key, wfq-key (keys, no limits), wfq-order (tag order
 * alone, no key state: not a correct flow control), wfq-credit (a variant: a slot is taken when a
 * run is admitted, so reserve touches no key state; concurrency limits only). Redis CPU per run
 * (INFO cpu) of reserve+settle, and of enqueue, medians over the rounds, and each variant's CPU
 * over another's in the same round. `--profile true`: reserve with TIME checkpoints (where the
 * time of reserve+settle goes: see profiled()).
 *
 *   node bench/tools/wfq-proto.ts [--runs 20000] [--keys 1000] [--batch 25] [--depth 2] [--rounds 5]
 *                                 [--checks true] [--modes off,on,wfq,wfq-off] [--profile false]
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { connectBroker } from '../../src/broker/connect.ts';
import { expandScript, LUA_LIBRARIES, parseLibraries, scriptSource } from '../../src/broker/redis/scripts.ts';
import { runErrorsLua } from '../../src/broker/shared/run-errors.ts';
import type { Broker, FlowSpec, NewRun, Settlement } from '../../src/broker/types.ts';
import { enqueueRuns, leaseAll, ulidish } from '../lib/hot-path.ts';
import { startRedis } from '../lib/redis-server.ts';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '20000' },
    keys: { type: 'string', default: '1000' },
    batch: { type: 'string', default: '25' },
    depth: { type: 'string', default: '2' },
    rounds: { type: 'string', default: '5' },
    checks: { type: 'string', default: 'true' },
    modes: { type: 'string', default: 'off,on,wfq,wfq-off' },
    profile: { type: 'string', default: 'false' },
  },
});
const runs = Number(values.runs);
const keys = Number(values.keys);
const batch = Number(values.batch);
const depth = Number(values.depth);
const rounds = Number(values.rounds);

// --- The prototype's scripts: the product's, with flow control replaced. ---

const PRODUCT = new URL('../../src/broker/redis/lua/', import.meta.url);
const PROTO = new URL('./wfq-proto/', import.meta.url);
const productText = (f: string) => readFileSync(new URL(f, PRODUCT), 'utf8').replace(/^--!run-errors$/m, () => runErrorsLua());
const protoText = (f: string) => readFileSync(new URL(f, PROTO), 'utf8');

/** `text` with `from` replaced by `to`; throws when `from` is not there exactly once (the product moved). */
function swap(text: string, from: string | RegExp, to: string): string {
  const n = typeof from === 'string' ? text.split(from).length - 1 : (text.match(new RegExp(from, 'gm')) ?? []).length;
  if (n !== 1) throw new Error(`wfq-proto: expected one ${String(from)} in the product's Lua, found ${n}`);
  return text.replace(from, () => to);
}

/** A library's text without top-level definition `name` (its lines up to the next definition). */
function dropUnit(text: string, name: string): string {
  const lines = text.split('\n');
  const start = lines.findIndex((l) => new RegExp(`^local (?:function )?${name}\\b`).test(l));
  if (start < 0) throw new Error(`wfq-proto: flow.lua has no ${name}`);
  let end = lines.findIndex((l, i) => i > start && /^local /.test(l));
  if (end < 0) end = lines.length;
  lines.splice(start, end - start);
  return lines.join('\n');
}

/** `order`: the wfq-order ablation; `credit`: the wfq-credit variant (see wfq.lua's WFQ_CREDIT). */
function protoScripts(variant: 'full' | 'order' | 'credit' = 'full'): Map<string, string> {
  const orderOnly = variant !== 'full';
  let flow = productText('flow.lua');
  for (const name of ['flowPush', 'flowFreeMany', 'flowUnqueue', 'flowFree']) flow = dropUnit(flow, name);
  const texts: Record<string, string> = {};
  for (const f of LUA_LIBRARIES) {
    if (f === 'flow.lua') {
      texts[f] = flow;
      texts['wfq.lua'] =
        variant === 'order'
          ? swap(
              protoText('wfq.lua'),
              'local function flowFreeMany(base, freed, now)\n',
              'local function flowFreeMany(base, freed, now)\n  if true then\n    return false\n  end\n',
            )
          : protoText('wfq.lua');
      if (variant === 'credit') texts['wfq.lua'] = swap(texts['wfq.lua']!, 'local WFQ_CREDIT = false', 'local WFQ_CREDIT = true');
    } else if (f === 'outcomes.lua') {
      texts[f] = swap(productText(f), 'flowFreeMany(base, freed)', 'flowFreeMany(base, freed, now)');
    } else texts[f] = productText(f);
  }
  const libs = parseLibraries(texts);

  let reserve = productText('reserve.lua');
  const a = reserve.indexOf('\n-- 3a. ');
  const b = reserve.indexOf('\n-- 3b. ');
  if (a < 0 || b < a) throw new Error("wfq-proto: reserve.lua's steps 3a and 3b not found");
  const step3a = protoText('reserve-3a.lua');
  reserve = `${reserve.slice(0, a + 1)}${orderOnly ? swap(step3a, 'local WFQ_ORDER_ONLY = false', 'local WFQ_ORDER_ONLY = true') : step3a}${reserve.slice(b + 1)}`;
  reserve = swap(
    reserve,
    '--!include flow.lua: KEY_STATE, flowKeyMany, flowKeepTat, flowGcra, flowSetTat',
    '--!include flow.lua: flowKeyMany, flowKeepTat, flowGcra\n--!include wfq.lua: WFQ_STATE, wfqNum, wfqWake',
  );
  reserve = swap(reserve, ' reserveFlowWake, reserveFlowPlan, reserveFlowMeta,', '');

  let enqueue = productText('enqueue.lua');
  const e1 = enqueue.indexOf('\n-- Runs under flow control: per group');
  const e2 = enqueue.indexOf('\nif created > 0 then');
  if (e1 < 0 || e2 < e1) throw new Error("wfq-proto: enqueue.lua's flow part not found");
  enqueue = `${enqueue.slice(0, e1 + 1)}${protoText('enqueue-flow.lua')}${enqueue.slice(e2 + 1)}`;
  enqueue = swap(
    enqueue,
    /^--!include flow\.lua: .*$/m,
    '--!include flow.lua: flowKeyMany\n--!include wfq.lua: WFQ_CREDIT, wfqUnpack, wfqNew, wfqPack, wfqNum',
  );

  const out = new Map<string, string>();
  out.set('errand_reserve', expandScript('wfq reserve.lua', reserve, libs).lua);
  out.set('errand_enqueue', expandScript('wfq enqueue.lua', enqueue, libs).lua);
  out.set('errand_settle', expandScript('wfq settle.lua', productText('settle.lua'), libs).lua);
  return out;
}

// The prototype's scripts replace the product's on the clients created while `override` is set
// (the broker registers its scripts when it is created: see defineScripts).
let override: Map<string, string> | undefined;
const define = Redis.prototype.defineCommand;
Redis.prototype.defineCommand = function (this: Redis, name: string, def: { lua: string; numberOfKeys?: number; readOnly?: boolean }) {
  const lua = override?.get(name);
  return define.call(this, name, lua ? { ...def, lua } : def);
};
const proto = protoScripts();
const protoOrderOnly = protoScripts('order');
const protoCredit = protoScripts('credit');

/**
 * A reserve script's text with `TIME` checkpoints: the microseconds spent in the outcomes sent
 * along (s), in flowFreeMany within them (f), in step 3a (a: runs under flow control) and 3b (b: the
 * others), added to hash base..'prof' at the end of each call (a few TIME calls per call of 25 runs).
 */
function profiled(lua: string): string {
  const at = (text: string, marker: string, insert: string, after = false) => {
    const i = text.indexOf(marker);
    if (i < 0 || text.indexOf(marker, i + 1) >= 0) throw new Error(`wfq-proto: profile marker ${marker} not found once`);
    const j = after ? i + marker.length : i;
    return text.slice(0, j) + insert + text.slice(j);
  };
  let t = `local function profNow()\n  local t = redis.call('TIME')\n  return t[1] * 1000000 + t[2]\nend\nlocal PROF = { s = 0, f = 0, a = 0, b = 0 }\n${lua}`;
  const i = t.indexOf('local function flowFreeMany(');
  if (i < 0 || t.indexOf('local function flowFreeMany(', i + 1) >= 0) throw new Error('wfq-proto: flowFreeMany not found once');
  const next = t.indexOf('\nlocal ', i + 10);
  t = `${t.slice(0, i)}${t.slice(i, next).replace('local function flowFreeMany(', 'local function flowFreeMany0(')}\nlocal function flowFreeMany(...)\n  local t0 = profNow()\n  local r = flowFreeMany0(...)\n  PROF.f = PROF.f + profNow() - t0\n  return r\nend${t.slice(next)}`;
  t = at(t, '  wakeUp = settleItems(', '  local profS = profNow()\n');
  t = at(t, 'KEYS[2], KEYS[1], 11, #ARGV, out, acc)\n', '  PROF.s = PROF.s + profNow() - profS\n', true);
  t = at(t, '\n-- 3a. ', '\nlocal profA = profNow()');
  t = at(t, '\n-- 3b. ', '\nPROF.a = PROF.a + profNow() - profA\nlocal profB = profNow()');
  t = at(t, '\n-- Runs still queued:', '\nPROF.b = PROF.b + profNow() - profB');
  const r = t.lastIndexOf('\nreturn out');
  t = `${t.slice(0, r)}\nfor f, v in pairs(PROF) do\n  rcall('HINCRBY', base .. 'prof', f, fmt('%d', v))\nend${t.slice(r)}`;
  return t;
}

async function connect(url: string, prototype: boolean | 'order' | 'credit', profile = false): Promise<Broker> {
  override = prototype === 'order' ? protoOrderOnly : prototype === 'credit' ? protoCredit : prototype ? proto : undefined;
  if (profile)
    override = new Map([...(override ?? []), ['errand_reserve', profiled(override?.get('errand_reserve') ?? scriptSource('reserve'))]]);
  try {
    return await connectBroker(url);
  } finally {
    override = undefined;
  }
}

// --- Checks: the prototype is fair and exact on small cases. ---

const redis = await startRedis();
const BASE = 'errand:{bench}:';

function flowRun(rid: string, key: string, spec: Omit<FlowSpec, 'group' | 'key'>, now: number): NewRun {
  return {
    id: `bench.${rid}`,
    task: 'bench_noop',
    queue: 'bench',
    input: '{}',
    priority: 0,
    runAt: now,
    flow: { group: 'bench_noop', key, ...spec },
  };
}

async function enqueueAll(broker: Broker, list: NewRun[], now: number): Promise<void> {
  for (let i = 0; i < list.length; i += 1000) await broker.enqueue(list.slice(i, i + 1000), now);
}

/**
 * Reserves `max` at a time, each call settling what the previous one leased, until a call leases
 * nothing; the runs leased in order, and the most of each key held at once (leased, not settled).
 */
async function drain(broker: Broker, keyOf: (id: string) => string, max: number, now = Date.now()) {
  const order: string[] = [];
  const held = new Map<string, number>();
  const most = new Map<string, number>();
  let settle: Settlement[] = [];
  for (;;) {
    const res = await broker.reserve({ workerId: 'w1', queues: ['bench'], max, leaseMs: 30_000, now, settle });
    assert.ok(
      (res.settled ?? []).every((s) => s === 'ok'),
      'every outcome applied',
    );
    for (const s of settle) held.set(keyOf(s.id), held.get(keyOf(s.id))! - 1);
    for (const r of res.runs) {
      const k = keyOf(r.id);
      held.set(k, (held.get(k) ?? 0) + 1);
      most.set(k, Math.max(most.get(k) ?? 0, held.get(k)!));
      order.push(r.id);
    }
    settle = res.runs.map((r) => ({ id: r.id, attempt: r.attempt, outcome: 'succeeded', result: null, retentionMs: 0 }));
    if (res.runs.length === 0) return { order, most, nextAt: res.nextAt };
  }
}

async function checks(): Promise<void> {
  const now = Date.now();
  // 1. Key A: 10,000 runs at concurrency 2, then one run of a quiet key B: B is served within the
  // first 2 runs, A never holds more than 2, every run once, A's in order. For both builds.
  for (const build of [true, 'credit'] as const) {
    await redis.flush();
    const broker = await connect(redis.url, build);
    try {
      const a = Array.from({ length: 10_000 }, (_, j) => flowRun(ulidish(now, j), 'A', { concurrency: 2 }, now));
      await enqueueAll(broker, a, now);
      await enqueueAll(broker, [flowRun(ulidish(now, 50_000), 'B', { concurrency: 2 }, now)], now);
      assert.equal(await redis.client.zcard(`${BASE}fA`), 3, 'admitted: 2 of A, 1 of B');
      const keyOf = (id: string) => (id === `bench.${ulidish(now, 50_000)}` ? 'B' : 'A');
      const { order, most } = await drain(broker, keyOf, 25, now);
      assert.equal(order.length, 10_001);
      assert.equal(new Set(order).size, 10_001);
      const b = order.indexOf(`bench.${ulidish(now, 50_000)}`);
      assert.ok(b >= 0 && b < 2, `the quiet key's run is dispatch ${b + 1}`);
      assert.equal(most.get('A'), 2, 'A at concurrency 2');
      const aOrder = order.filter((id) => keyOf(id) === 'A');
      assert.deepEqual(
        aOrder,
        a.map((r) => r.id),
        "A's runs in FIFO order",
      );
      assert.equal(await redis.client.hlen(`${BASE}fy|bench_noop`), 0, 'every key state forgotten');
      assert.equal(await redis.client.zcard(`${BASE}fA`), 0, 'nothing left admitted');
      assert.equal(await redis.client.hget(`${BASE}fG|bench_noop`, 'a'), '0', "the group's active count back to 0");
      console.log(
        `check 1${build === 'credit' ? ' (wfq-credit)' : ''}: 1 key x 10,000 runs (concurrency 2) + 1 quiet key: quiet run dispatch ${b + 1}, A held at most ${most.get('A')}, 10,001 runs once each, FIFO: ok`,
      );
    } finally {
      await broker.close();
    }
  }
  // 2. Key A: 10,000 runs without a limit, 100 dispatched, then one run of quiet key B: B is among
  // the next 2 dispatched.
  {
    await redis.flush();
    const broker = await connect(redis.url, true);
    try {
      const a = Array.from({ length: 10_000 }, (_, j) => flowRun(ulidish(now, j), 'A', {}, now));
      await enqueueAll(broker, a, now);
      let settle: Settlement[] = [];
      for (let i = 0; i < 4; i++) {
        const res = await broker.reserve({ workerId: 'w1', queues: ['bench'], max: 25, leaseMs: 30_000, now, settle });
        settle = res.runs.map((r) => ({ id: r.id, attempt: r.attempt, outcome: 'succeeded', result: null, retentionMs: 0 }));
      }
      const bId = `bench.${ulidish(now, 50_000)}`;
      await enqueueAll(broker, [flowRun(ulidish(now, 50_000), 'B', {}, now)], now);
      const next = await broker.reserve({ workerId: 'w1', queues: ['bench'], max: 2, leaseMs: 30_000, now, settle });
      const at = next.runs.findIndex((r) => r.id === bId);
      assert.ok(at >= 0, 'the quiet run is among the next 2 dispatched');
      const rest = await drain(broker, (id) => (id === bId ? 'B' : 'A'), 25, now);
      assert.equal(100 + next.runs.length + rest.order.length, 10_001);
      console.log(
        `check 2: 1 key x 10,000 runs (no limit), 100 dispatched, then a quiet run: dispatched ${at + 1} of the next 2; all once: ok`,
      );
    } finally {
      await broker.close();
    }
  }
  // 3. Rate: key R (10 runs, 3 starts then one per hour) and key S (5 runs, no limit): R starts 3,
  // S 5; R's other 7 parked, nothing left admitted; an hour later exactly one more, R's 4th.
  {
    await redis.flush();
    const broker = await connect(redis.url, true);
    try {
      const r = Array.from({ length: 10 }, (_, j) => flowRun(ulidish(now, j), 'R', { rate: { interval: 3_600_000, burst: 3 } }, now));
      const s = Array.from({ length: 5 }, (_, j) => flowRun(ulidish(now, 100 + j), 'S', {}, now));
      await enqueueAll(broker, [...r, ...s], now);
      const keyOf = (id: string) => (r.some((x) => x.id === id) ? 'R' : 'S');
      const first = await drain(broker, keyOf, 25, now);
      assert.deepEqual(
        first.order.filter((id) => keyOf(id) === 'R'),
        r.slice(0, 3).map((x) => x.id),
      );
      assert.equal(first.order.filter((id) => keyOf(id) === 'S').length, 5);
      assert.equal(await redis.client.zcard(`${BASE}fA`), 0, 'nothing admitted');
      assert.equal(await redis.client.llen(`${BASE}fp|bench_noop|R`), 7, "R's 7 parked");
      assert.ok(first.nextAt !== null && first.nextAt >= now + 3_600_000 - 1, `nextAt ${first.nextAt}`);
      const later = await drain(broker, keyOf, 25, now + 3_600_000);
      assert.deepEqual(later.order, [r[3]!.id]);
      console.log("check 3: rate 3 then 1/h: 3 started, 7 parked (none admitted), nextAt in an hour; an hour later R's 4th alone: ok");
    } finally {
      await broker.close();
    }
  }
}

// --- Costs. ---

/**
 * off, on, wfq, wfq-off as in the header; ablations: `<on|wfq>-conc` keys with a concurrency
 * limit only (no rate: no GCRA), `<on|wfq>-key` keys without any limit (the fair queue's own
 * cost), `wfq-order` keys without limits served in tag order with no key state read or written by
 * reserve or settle (the cost of the order alone; not a correct flow control), `wfq-credit` the
 * prototype with slots taken at admission (wfq.lua's WFQ_CREDIT), keys with a concurrency limit only.
 */
type Mode = string;
const MODES = values.modes.split(',') as Mode[];
const isProto = (m: Mode) => m.startsWith('wfq');
const isLimited = (m: Mode) => m !== 'off' && m !== 'wfq-off';
const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
const flowOf = (mode: Mode, j: number): FlowSpec => {
  const key = { group: 'bench_noop', key: String(j % keys) };
  if (mode.endsWith('-key') || mode === 'wfq-order') return key;
  if (mode.endsWith('-conc') || mode === 'wfq-credit') return { ...key, concurrency: 1_000 };
  return { ...key, concurrency: 1_000, rate: { interval: 0.001, burst: 1_000_000 } };
};

const figures = Object.fromEntries(
  MODES.map((m) => [
    m,
    { cpu: [] as number[], enq: [] as number[], commands: {} as Record<string, number>, usec: [] as Record<string, number>[] },
  ]),
) as Record<Mode, { cpu: number[]; enq: number[]; commands: Record<string, number>; usec: Record<string, number>[] }>;
const load = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');

try {
  if (values.checks === 'true') await checks();
  console.log(`redis ${redis.version}; ${runs} runs, ${keys} keys, batch ${batch}, depth ${depth}; load ${load()}`);
  for (let r = 0; r < rounds; r++) {
    for (const mode of r % 2 ? [...MODES].reverse() : MODES) {
      await redis.flush();
      const profile = values.profile === 'true';
      const build = mode === 'wfq-order' ? 'order' : mode === 'wfq-credit' ? 'credit' : isProto(mode);
      const broker = await connect(redis.url, build, profile);
      try {
        const limited = isLimited(mode);
        const e0 = await redis.cpuUs();
        await enqueueRuns(broker, runs, limited ? (j) => ({ flow: flowOf(mode, j) }) : undefined);
        const e1 = await redis.cpuUs();
        await redis.client.config('RESETSTAT');
        const cpu0 = await redis.cpuUs();
        const done = await leaseAll(broker, { batch, depth, result: null, retentionMs: 0 });
        if (done !== runs) throw new Error(`${mode}: ${done} runs settled of ${runs}`);
        const cpu = ((await redis.cpuUs()) - cpu0) / done;
        const stats = await redis.commandStats();
        figures[mode]!.cpu.push(cpu);
        figures[mode]!.enq.push((e1 - e0) / runs);
        const calls: Record<string, number> = {};
        const usec: Record<string, number> = {};
        for (const [c, v] of Object.entries(stats))
          if (c !== 'info' && c !== 'config') {
            calls[c] = v.calls / done;
            usec[c] = v.usec / done;
          }
        figures[mode]!.commands = calls;
        figures[mode]!.usec.push(usec);
        if (profile) {
          const prof = await redis.client.hgetall(`${BASE}prof`);
          const per = (f: string) => (Number(prof[f] ?? 0) / done).toFixed(2);
          console.log(
            `  profile ${mode} (wall us per run, TIME checkpoints): outcomes ${per('s')} (of which flowFreeMany ${per('f')}), step 3a ${per('a')}, step 3b ${per('b')}`,
          );
        }
        console.log(
          `round ${r + 1} ${mode}: reserve+settle ${cpu.toFixed(2)} us/run, enqueue ${((e1 - e0) / runs).toFixed(2)} us/run; load ${load()}`,
        );
      } finally {
        await broker.close();
      }
    }
  }
  const range = (xs: number[]) => `${Math.min(...xs).toFixed(1)} to ${Math.max(...xs).toFixed(1)}`;
  for (const mode of MODES) {
    const f = figures[mode]!;
    console.log(
      `${mode}: Redis CPU reserve+settle median ${median(f.cpu).toFixed(2)} us/run (${range(f.cpu)}); enqueue median ${median(f.enq).toFixed(2)} us/run (${range(f.enq)})`,
    );
    console.log(
      `  commands per run: ${Object.entries(f.commands)
        .filter(([, v]) => v >= 0.01)
        .sort((x, y) => y[1] - x[1])
        .map(([c, v]) => `${c} ${v.toFixed(2)}`)
        .join(', ')}`,
    );
    // Time inside the scripts (evalsha includes the commands they call): the rest is Lua. Medians
    // over the rounds, per command.
    const u: Record<string, number> = {};
    for (const c of Object.keys(f.usec.at(-1) ?? {})) u[c] = median(f.usec.map((x) => x[c] ?? 0));
    const inCommands = Object.entries(u)
      .filter(([c]) => c !== 'evalsha')
      .reduce((t, [, v]) => t + v, 0);
    console.log(
      `  wall time in Redis, medians, us per run: EVALSHA ${(u.evalsha ?? 0).toFixed(2)}, of which commands ${inCommands.toFixed(2)} (${Object.entries(
        u,
      )
        .filter(([c, v]) => c !== 'evalsha' && v >= 0.05)
        .sort((x, y) => y[1] - x[1])
        .map(([c, v]) => `${c} ${v.toFixed(2)}`)
        .join(', ')}), Lua ${((u.evalsha ?? 0) - inCommands).toFixed(2)}`,
    );
  }
  const m = (x: Mode) => median(figures[x]!.cpu);
  if (['off', 'on', 'wfq', 'wfq-off'].every((x) => MODES.includes(x)))
    console.log(
      `ratio (throughput, CPU off / CPU with limits): product ${(m('off') / m('on')).toFixed(2)}x, prototype vs off ${(m('off') / m('wfq')).toFixed(2)}x, prototype vs its own plain path ${(m('wfq-off') / m('wfq')).toFixed(2)}x`,
    );
  // CPU of a variant over another's in the same round (the load moves less within a round than
  // across rounds): every round's, and their median.
  const ratios = (x: Mode, y: Mode) => figures[x]!.cpu.map((v, i) => v / figures[y]!.cpu[i]!);
  const pairs: [Mode, Mode][] = [
    ['on', 'off'],
    ['wfq', 'off'],
    ['wfq', 'on'],
    ['wfq', 'wfq-off'],
    ['wfq-order', 'wfq-off'],
    ['wfq-key', 'on-key'],
    ['wfq-conc', 'on-conc'],
    ['wfq-credit', 'on-conc'],
    ['wfq-credit', 'off'],
    ['wfq-credit', 'wfq-off'],
  ];
  for (const [x, y] of pairs)
    if (MODES.includes(x) && MODES.includes(y)) {
      const r = ratios(x, y);
      console.log(
        `CPU ${x}/${y} same round: median ${median(r).toFixed(2)} (${r.map((v) => v.toFixed(2)).join(' ')}), as throughput ${(1 / median(r)).toFixed(2)}x`,
      );
    }
} finally {
  await redis.stop();
}
