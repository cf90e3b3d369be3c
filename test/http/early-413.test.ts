// A body over the limit is answered 413 before it is read; the rest is then read and discarded up to
// a bound (src/web/discard.ts), so that a client still sending reads the 413 and its JSON instead of
// a connection reset; past the bound (bytes, or time) the server closes the connection.
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import type { Errand } from '../../src/errand.ts';
import { createServer } from '../../src/http/index.ts';
import { DISCARD_MAX_BYTES } from '../../src/web/discard.ts';
import { sqliteSetup } from '../fixtures/brokers.ts';
import { waitFor } from '../helpers.ts';
import { defineTasks } from './setup.ts';

const LIMIT = 1024 * 1024;
const DETAIL = `Request body is too large: the limit is ${LIMIT} bytes`;

interface RawResult {
  /** The write error, if the server refused the body's bytes (EPIPE, ECONNRESET). */
  writeError?: string;
  /** Everything read from the server until it closed. */
  response: string;
}

/**
 * A client that sends the whole request (headers and `size` bytes of body, with Content-Length)
 * before it reads anything, as many HTTP clients do; resolves when the connection is closed.
 */
function sendWholeThenRead(port: number, size: number): Promise<RawResult> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    let response = '';
    let writeError: string | undefined;
    socket.on('data', (c: Buffer) => {
      response += c.toString('latin1');
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      writeError ??= err.code ?? err.message;
    });
    socket.on('close', () => resolve({ ...(writeError ? { writeError } : {}), response }));
    socket.pause(); // nothing is read until the body is sent
    socket.write(`POST /tasks/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${size}\r\n\r\n`);
    const chunk = Buffer.alloc(256 * 1024, 0x20);
    let sent = 0;
    const pump = () => {
      while (sent < size && !socket.destroyed) {
        const n = Math.min(chunk.length, size - sent);
        sent += n;
        if (!socket.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return void socket.once('drain', pump);
      }
      socket.resume();
    };
    pump();
  });
}

describe('an early 413 that clients can read', () => {
  let errand: Errand;
  let app: FastifyInstance;
  let port: number;

  before(async () => {
    errand = sqliteSetup('errand-http-413').app();
    defineTasks(errand);
    app = await createServer({ errand, logger: false, bodyLimit: LIMIT });
    await app.listen({ port: 0, host: '127.0.0.1' });
    port = (app.server.address() as { port: number }).port;
  });

  after(async () => {
    await app.close();
    await errand.close();
  });

  it('fetch of a body five times the limit gets the 413 and its JSON (with Content-Length, and streamed)', async () => {
    const body = JSON.stringify({ text: 'x'.repeat(5 * LIMIT) });
    const res = await fetch(`http://127.0.0.1:${port}/tasks/echo`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body,
    });
    assert.equal(res.status, 413);
    assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
    assert.deepEqual(await res.json(), { detail: DETAIL });

    // Without Content-Length (chunked): refused once the limit is passed, while the body still comes.
    const chunk = new Uint8Array(64 * 1024).fill(0x20);
    let sent = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent >= 5 * LIMIT) return controller.close();
        sent += chunk.length;
        controller.enqueue(chunk);
      },
    });
    const streamed = await fetch(`http://127.0.0.1:${port}/tasks/echo`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: stream,
      duplex: 'half',
    } as RequestInit);
    assert.equal(streamed.status, 413);
    assert.deepEqual(await streamed.json(), { detail: DETAIL });
  });

  it('a client that sends its whole body before reading (5 MiB) is not cut off: it reads the 413 and its JSON', async () => {
    const { writeError, response } = await sendWholeThenRead(port, 5 * LIMIT);
    assert.equal(writeError, undefined, 'every byte of the body was taken');
    assert.match(response, /^HTTP\/1\.1 413 /);
    assert.match(response, /\r\nconnection: close\r\n/i);
    assert.deepEqual(JSON.parse(response.slice(response.indexOf('\r\n\r\n') + 4)), { detail: DETAIL });
  });

  it('past the discard bound the server closes the connection: nothing hangs, and the server still answers', async () => {
    const result = await sendWholeThenRead(port, 3 * DISCARD_MAX_BYTES);
    // The connection closed (the promise resolved). The client may or may not have read the 413 before the close.
    assert.ok(result.writeError, 'the rest of the body was refused');

    // A client that stops sending half way and waits: the server closes after its time bound.
    const socket = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    let closed = false;
    let response = '';
    socket.on('data', (c: Buffer) => {
      response += c.toString('latin1');
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      closed = true;
    });
    socket.write(`POST /tasks/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${4 * LIMIT}\r\n\r\n`);
    socket.write(Buffer.alloc(2 * LIMIT, 0x20));
    await waitFor(() => response.includes('\r\n\r\n{'), { message: 'the 413', timeoutMs: 10_000 });
    assert.match(response, /^HTTP\/1\.1 413 /);
    await waitFor(
      async () => {
        const open = await new Promise<number>((resolve, reject) =>
          app.server.getConnections((err, n) => (err ? reject(err) : resolve(n))),
        );
        return open === 0;
      },
      { message: 'the server to close the stalled connection', timeoutMs: 20_000, intervalMs: 50 },
    );
    socket.destroy();
    await waitFor(() => closed, { message: 'the client socket to close' });

    const ok = await fetch(`http://127.0.0.1:${port}/healthz`);
    assert.equal(ok.status, 200);
  });
});
