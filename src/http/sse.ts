/**
 * `GET /runs/{id}/events`: server-sent events on one run.
 *
 * The stream sends `event: state` with the run JSON at once, then again each time the run's state,
 * attempt or progress changes (the broker's `watch` says "may have changed"; the run is re-read and
 * sent only when something visible changed). When the run finishes it sends `event: end` and closes.
 * A comment line goes out every `heartbeatMs` so that proxies keep the connection open. If the run
 * disappears or the broker fails mid-stream, `event: error` is sent and the stream closes.
 */
import type { ServerResponse } from 'node:http';
import type { FastifyReply } from 'fastify';
import { FINISHED_STATES, type RunRecord } from '../broker/types.ts';

export interface RunStreamOptions {
  reply: FastifyReply;
  /** The run as read once the watch was in place. */
  first: RunRecord;
  /** Re-reads the run (null when it no longer exists). */
  read: () => Promise<RunRecord | null>;
  /** Stops the broker watch. */
  unwatch: () => void;
  toJson: (rec: RunRecord) => unknown;
  heartbeatMs: number;
  /** Open streams, so that the server can end them when it closes. */
  registry: Set<RunStream>;
  onError: (err: unknown) => void;
}

const changeKey = (r: RunRecord) => `${r.state}\u0000${r.attempts}\u0000${r.progress ?? ''}`;

/** One open event stream. Created after the watch is in place; takes over the reply. */
export class RunStream {
  readonly #o: RunStreamOptions;
  readonly #res: ServerResponse;
  readonly #heartbeat: NodeJS.Timeout;
  #lastKey: string | undefined;
  #closed = false;
  #checking = false;
  #again = false;

  constructor(options: RunStreamOptions) {
    this.#o = options;
    const { reply } = options;
    reply.hijack();
    this.#res = reply.raw;
    const headers: Record<string, string | number | string[]> = {};
    for (const [k, v] of Object.entries(reply.getHeaders())) if (v !== undefined) headers[k] = v as string | number | string[];
    this.#res.writeHead(200, {
      ...headers,
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    this.#res.on('close', () => this.close());
    this.#heartbeat = setInterval(() => this.#write(': heartbeat\n\n'), options.heartbeatMs);
    this.#heartbeat.unref();
    options.registry.add(this);
    this.#write('retry: 3000\n\n');
    this.#publish(options.first);
    // A change may have landed between the watch starting and the first read: look again.
    if (!this.#closed) this.changed();
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** The broker says the run may have changed: re-read it (one read at a time, coalescing calls). */
  changed(): void {
    if (this.#closed) return;
    if (this.#checking) {
      this.#again = true;
      return;
    }
    this.#checking = true;
    void (async () => {
      try {
        do {
          this.#again = false;
          const rec = await this.#o.read();
          if (this.#closed) return;
          if (!rec) {
            this.#send('error', { detail: 'The run no longer exists (its retention passed)' });
            this.close();
            return;
          }
          this.#publish(rec);
        } while (this.#again && !this.#closed);
      } catch (err) {
        this.#o.onError(err);
        this.#send('error', { detail: 'The task broker is unavailable; reconnect to resume' });
        this.close();
      } finally {
        this.#checking = false;
      }
    })();
  }

  #publish(rec: RunRecord): void {
    const key = changeKey(rec);
    if (key !== this.#lastKey) {
      this.#lastKey = key;
      this.#send('state', this.#o.toJson(rec));
    }
    if (FINISHED_STATES.has(rec.state)) {
      this.#send('end', { id: rec.id, state: rec.state });
      this.close();
    }
  }

  #send(event: string, data: unknown): void {
    this.#write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  }

  #write(text: string): void {
    if (this.#closed || this.#res.writableEnded || this.#res.destroyed) return;
    this.#res.write(text);
  }

  /** Ends the stream and stops watching. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#heartbeat);
    this.#o.registry.delete(this);
    try {
      this.#o.unwatch();
    } catch (err) {
      this.#o.onError(err);
    }
    if (!this.#res.writableEnded) this.#res.end();
  }
}
