// Found by the SIGTERM test (sigterm-service.test.ts): while the HTTP server closes, a request
// arriving on an open keep-alive connection must get the documented 503 (`{"detail": ...}` with
// Retry-After: src/web/errors.ts), not Fastify's raw built-in one.
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { describe, it } from 'node:test';
import { createServer } from '../../src/http/index.ts';
import { createErrand } from '../../src/index.ts';
import { quietLogger } from '../fixtures/brokers.ts';
import { within } from '../helpers.ts';

describe('HTTP server while closing', () => {
  it('answers a request that arrives during close with 503, Retry-After and {"detail": ...}', async () => {
    const errand = createErrand({ broker: 'sqlite::memory:', logger: quietLogger });
    const app = await createServer({ errand, logger: quietLogger, docs: false });
    // In flight while the server closes: the test waits until it started, and it lasts long enough
    // (2 s) for the second request to arrive behind it, on a loaded machine too.
    let started: () => void = () => {};
    const inFlight = new Promise<void>((resolve) => {
      started = resolve;
    });
    app.get('/slow', async () => {
      started();
      await new Promise((r) => setTimeout(r, 2000));
      return { ok: true };
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    const { port } = app.server.address() as { port: number };
    const socket = connect({ port, host: '127.0.0.1' });
    try {
      let raw = '';
      socket.on('data', (c) => {
        raw += c.toString();
      });
      await new Promise((r) => socket.once('connect', r));
      socket.write('GET /slow HTTP/1.1\r\nHost: x\r\n\r\n');
      await within(inFlight, 30_000, 'the slow request to start');
      const closing = app.close();
      // A second request on the same (busy, so still open) connection, during the close.
      socket.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
      await within(closing, 10_000, 'the server to close');
      await within(new Promise((r) => (socket.readableEnded ? r(null) : socket.once('end', r))), 10_000, 'the connection to end');
      const second = raw.slice(raw.indexOf('HTTP/1.1', 1));
      assert.match(second, /^HTTP\/1\.1 503/);
      assert.match(second, /\r\nretry-after: \d+\r\n/i);
      assert.match(second, /"detail":/);
    } finally {
      socket.destroy();
      await app.close();
      await errand.close();
    }
  });
});
