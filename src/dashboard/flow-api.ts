/**
 * The dashboard's flow-control API (docs/flow-control.md, docs/dashboard.md): the queues that have
 * flow control with their counts, and a page of one queue's keys (backlog, active runs, limits, when
 * each may start again), sorted and paged by the broker (`BrokerInspector.flowKeys`).
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { FlowKeyInfo } from '../broker/types.ts';
import { QUEUE_NAME } from '../core/ids.ts';
import { show } from '../core/show.ts';
import type { Errand } from '../errand.ts';
import { HttpError } from '../web/errors.ts';
import type { FlowKeyJson, FlowKeyList, FlowQueues } from './api-types.ts';
import type { BrokerAccess } from './overview.ts';

const SORTS = ['queued', 'active', 'key'] as const;

/** A key as the page shows it: its rate in starts per period, what holds it back and when it may start. */
export function flowKeyJson(k: FlowKeyInfo, now: number): FlowKeyJson {
  const j: FlowKeyJson = { group: k.group, key: k.key, queued: k.queued, active: k.active, concurrency: k.concurrency, nextAt: null };
  if (k.rate) {
    // interval = period / limit: shown per second when that is whole, else per minute, else per interval.
    const perSecond = 1000 / k.rate.interval;
    const perMinute = 60_000 / k.rate.interval;
    j.rate = Number.isInteger(perSecond)
      ? { limit: perSecond, period: 1000, burst: k.rate.burst }
      : Number.isInteger(perMinute)
        ? { limit: perMinute, period: 60_000, burst: k.rate.burst }
        : { limit: 1, period: k.rate.interval, burst: k.rate.burst };
  }
  if (k.waitUntil !== undefined && k.waitUntil > now) {
    j.held = 'rate';
    j.nextAt = k.waitUntil;
  } else if (k.concurrency > 0 && k.active >= k.concurrency) j.held = 'concurrency';
  else if (k.queued > 0) j.nextAt = now;
  return j;
}

function intParam(v: unknown, name: string, def: number, min: number, max: number): number {
  if (v === undefined || v === '') return def;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < min || n > max)
    throw new HttpError(400, `Invalid query parameter "${name}": an integer from ${min} to ${max}, got ${show(v)}`);
  return n;
}

export function registerFlowApi(
  fastify: FastifyInstance,
  o: { api: string; errand: Errand; access: BrokerAccess; authorize: (request: FastifyRequest, scope: 'read' | 'admin') => unknown },
): void {
  const { api, access, errand } = o;

  fastify.get(`${api}/flow`, async (request): Promise<FlowQueues> => {
    o.authorize(request, 'read');
    return access.call(async (b) => {
      const names = [...new Set([...(await b.listQueues()), ...[...errand.tasks.values()].map((t) => t.queue)])].sort();
      const counts = names.length ? await b.flowCounts(names) : {};
      const queues = names
        .map((name) => {
          const f = counts[name];
          return {
            name,
            queued: f?.queued ?? 0,
            keys: f?.keys ?? 0,
            rateLimitedKeys: f?.rateLimitedKeys ?? 0,
            rateLimitedGroups: f?.rateLimitedGroups ?? 0,
          };
        })
        .filter((q) => q.keys > 0 || q.queued > 0 || [...errand.tasks.values()].some((t) => t.queue === q.name && t.limits));
      return { queues, now: Date.now() };
    });
  });

  fastify.get(`${api}/flow/:queue`, async (request): Promise<FlowKeyList> => {
    o.authorize(request, 'read');
    const { queue } = request.params as { queue: string };
    if (!QUEUE_NAME.test(queue))
      throw new HttpError(400, `Invalid queue name "${queue.slice(0, 100)}": use 1 to 64 letters, digits, "_" or "-"`);
    const q = (request.query ?? {}) as Record<string, unknown>;
    const sort = (q.sort === undefined || q.sort === '' ? 'queued' : q.sort) as FlowKeyList['sort'];
    if (!SORTS.includes(sort)) throw new HttpError(400, `Invalid query parameter "sort": one of ${SORTS.join(', ')}, got ${show(q.sort)}`);
    const offset = intParam(q.offset, 'offset', 0, 0, 1_000_000_000);
    const limit = intParam(q.limit, 'limit', 50, 1, 500);
    const page = await access.call((b) => b.flowKeys(queue, { sort, offset, limit }));
    const now = Date.now();
    return { queue, sort, offset, limit, total: page.total, keys: page.keys.map((k) => flowKeyJson(k, now)), now };
  });
}
