// Talking to the dashboard API: the token (kept in sessionStorage, sent as a bearer header), JSON
// requests, and the overview event stream read with fetch (EventSource cannot send the header).
import type { Overview } from '../api-types.ts';
import { ROOT } from './base.ts';

export const BASE = `${ROOT}/api`;
const TOKEN_KEY = 'errand.dashboard.token';

export class ApiError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
  }
}

export function getToken(): string | null {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

export function setToken(token: string | null): void {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Storage disabled: the token lives as long as the page.
  }
  memoryToken = token;
}

let memoryToken: string | null = null;

function headers(extra: Record<string, string> = {}): Record<string, string> {
  const token = getToken() ?? memoryToken;
  return token ? { ...extra, authorization: `Bearer ${token}` } : extra;
}

/** Called when the server says the token is missing or wrong. */
let onUnauthorized: (message: string) => void = () => {};
export function setUnauthorizedHandler(fn: (message: string) => void): void {
  onUnauthorized = fn;
}

async function request<T>(method: 'GET' | 'POST', path: string, body?: unknown): Promise<T> {
  let res: Response;
  try {
    res = await fetch(BASE + path, {
      method,
      headers: headers(method === 'POST' ? { 'content-type': 'application/json' } : {}),
      body: method === 'POST' ? JSON.stringify(body ?? {}) : null,
      cache: 'no-store',
      credentials: 'omit',
    });
  } catch {
    throw new ApiError(0, 'The dashboard server cannot be reached');
  }
  const text = await res.text();
  let data: unknown;
  try {
    data = text ? JSON.parse(text) : undefined;
  } catch {
    data = undefined;
  }
  if (!res.ok) {
    const detail = (data as { detail?: unknown } | undefined)?.detail;
    const message = typeof detail === 'string' ? detail : `${res.status} ${res.statusText}`;
    if (res.status === 401) onUnauthorized(message);
    throw new ApiError(res.status, message);
  }
  return data as T;
}

export const get = <T>(path: string) => request<T>('GET', path);
export const post = <T>(path: string, body?: unknown) => request<T>('POST', path, body);

export type StreamStatus = 'connecting' | 'live' | 'reconnecting' | 'error';

/**
 * Reads `/stream` while the page is open: calls `onOverview` with each snapshot, reconnects with a
 * growing delay when the connection drops. Returns a function that stops it.
 */
export function openStream(onOverview: (o: Overview) => void, onStatus: (s: StreamStatus, detail?: string) => void): () => void {
  const stop = new AbortController();
  let delay = 1000;
  const run = async () => {
    while (!stop.signal.aborted) {
      onStatus('connecting');
      try {
        const res = await fetch(`${BASE}/stream`, {
          headers: headers({ accept: 'text/event-stream' }),
          signal: stop.signal,
          cache: 'no-store',
        });
        if (res.status === 401) {
          const detail = ((await res.json().catch(() => ({}))) as { detail?: string }).detail ?? 'Not authenticated';
          onStatus('error', detail);
          onUnauthorized(detail);
          return;
        }
        if (!res.ok || !res.body) throw new Error(`${res.status} ${res.statusText}`);
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let end: number;
          while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
            const frame = buffer.slice(0, end);
            buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, '');
            let event = 'message';
            let data = '';
            for (const line of frame.split(/\r?\n/)) {
              if (line.startsWith('event:')) event = line.slice(6).trim();
              else if (line.startsWith('data:')) data += (data ? '\n' : '') + line.slice(5).replace(/^ /, '');
            }
            if (event === 'overview' && data) {
              delay = 1000;
              onStatus('live');
              onOverview(JSON.parse(data) as Overview);
            } else if (event === 'error' && data) {
              onStatus('error', (JSON.parse(data) as { detail?: string }).detail);
            }
          }
        }
      } catch (err) {
        if (stop.signal.aborted) return;
        onStatus('reconnecting', err instanceof Error ? err.message : String(err));
      }
      if (stop.signal.aborted) return;
      onStatus('reconnecting');
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 15_000);
    }
  };
  void run();
  return () => stop.abort();
}
