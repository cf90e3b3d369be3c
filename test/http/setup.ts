// Shared set-up for the HTTP tests: the tasks they define, a broker that is always down, a
// watch-counting broker wrapper, and a small server-sent-events reader over fetch. Their Errand apps
// come from the broker fixture (test/fixtures/brokers.ts).
import pino from 'pino';
import { z } from 'zod';
import { connectBroker } from '../../src/broker/connect.ts';
import type { Broker } from '../../src/broker/types.ts';
import { PermanentError } from '../../src/core/errors.ts';
import type { Errand } from '../../src/errand.ts';

export const quiet = pino({ level: 'silent' });

/** The tasks most tests use. */
export function defineTasks(app: Errand) {
  return {
    sendEmail: app.task(
      'send_email',
      {
        input: z.object({ email: z.email(), name: z.string().min(1).max(100) }),
        description: 'Sends the welcome email',
      },
      async ({ email }) => ({ sent: email }),
    ),
    echo: app.task(
      'echo',
      {
        input: z.object({
          text: z.string(),
          n: z.number().int().optional(),
          tags: z.array(z.string()).optional(),
          extra: z.unknown().optional(),
        }),
      },
      async (input) => input,
    ),
    fail: app.task('fail', { input: z.object({}), retries: 0 }, async () => {
      throw new PermanentError('no luck');
    }),
  };
}

/** A broker that is down: every call rejects as a dropped connection would. */
export function downBroker(): Broker {
  const fail = async () => {
    throw Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' });
  };
  return {
    kind: 'redis',
    maxLeaseLosses: 3,
    enqueue: fail,
    reserve: fail,
    settle: fail,
    recordFinished: fail,
    renew: fail,
    release: fail,
    progress: fail,
    getRun: fail,
    cancel: fail,
    retry: fail,
    createWorkflow: fail,
    getWorkflow: fail,
    cancelWorkflow: fail,
    counts: fail,
    prune: fail,
    waitForWork: fail,
    watch: fail,
    onCancel: () => () => {},
    ping: fail,
    close: async () => {},
    upsertSchedule: fail,
    fireSchedule: fail,
    listSchedules: fail,
    dueSchedules: fail,
    getSchedule: fail,
    pauseSchedule: fail,
    deleteSchedule: fail,
  };
}

/** Wraps a broker to count watches in place (started and not yet stopped). */
export async function countingBroker(url: string): Promise<{ broker: Broker; activeWatches: () => number }> {
  const inner = await connectBroker(url, { logger: quiet });
  let active = 0;
  const broker = new Proxy(inner, {
    get(target, prop, receiver) {
      if (prop === 'watch') {
        return async (id: string, listener: () => void) => {
          const stop = await target.watch(id, listener);
          active++;
          let stopped = false;
          return () => {
            if (!stopped) {
              stopped = true;
              active--;
            }
            stop();
          };
        };
      }
      const v = Reflect.get(target, prop, receiver);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
  return { broker, activeWatches: () => active };
}

export interface SseEvent {
  event: string;
  data: string;
}

/** Reads a text/event-stream: events (and comments) as they arrive, until the server closes. */
export async function openEvents(url: string, init: RequestInit = {}) {
  const controller = new AbortController();
  const res = await fetch(url, { ...init, signal: controller.signal, headers: { accept: 'text/event-stream', ...init.headers } });
  const events: SseEvent[] = [];
  const comments: string[] = [];
  let ended = false;
  const done = (async () => {
    if (!res.body) return;
    const decoder = new TextDecoder();
    let buffer = '';
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buffer += decoder.decode(chunk, { stream: true });
        let cut = buffer.indexOf('\n\n');
        while (cut >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          let event = 'message';
          const data: string[] = [];
          let isEvent = false;
          for (const line of block.split('\n')) {
            if (line.startsWith(':')) comments.push(line);
            else if (line.startsWith('event: ')) {
              event = line.slice(7);
              isEvent = true;
            } else if (line.startsWith('data: ')) {
              data.push(line.slice(6));
              isEvent = true;
            }
          }
          if (isEvent) events.push({ event, data: data.join('\n') });
          cut = buffer.indexOf('\n\n');
        }
      }
    } catch {
      // Aborted by the test.
    }
    ended = true;
  })();
  return {
    res,
    events,
    comments,
    done,
    get ended() {
      return ended;
    },
    close: () => controller.abort(),
  };
}
