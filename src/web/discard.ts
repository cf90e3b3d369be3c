/**
 * A body refused before it was read (413, body over the limit): its rest is read and discarded,
 * boundedly, before the connection closes. Closing while the client is still sending makes its
 * operating system answer the bytes still coming with a reset, and the client (Node's `fetch`,
 * Python's `requests`, anything that sends the whole body before reading) then sees a network error
 * instead of the 413. nginx calls the same thing a lingering close.
 */
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';

/** How much of a refused body is read and thrown away at most: bytes, and ms from the answer. */
export const DISCARD_MAX_BYTES = 16 * 1024 * 1024;
export const DISCARD_MAX_MS = 5000;

/**
 * For an answer given before the request's body was read to its end (a 413): the rest of the body
 * is read and discarded from now on, and once the answer is written and the server would close the
 * connection (an answer with `Connection: close`), the server's end is closed (the answer is
 * complete for the client) but the socket is kept reading until the body ends, or `maxBytes` came,
 * or `maxMs` passed since the answer; then it is destroyed. A request whose body was read is left alone.
 */
export function discardRestOfBody(req: IncomingMessage, maxBytes = DISCARD_MAX_BYTES, maxMs = DISCARD_MAX_MS): void {
  const socket = req.socket as Socket & { destroySoon?: () => void };
  if (req.complete || !socket || socket.destroyed || typeof socket.destroySoon !== 'function') return;
  // Node's HTTP server calls destroySoon once an answer with `Connection: close` is written: it ends
  // the connection and destroys the socket when the answer is out, so the bytes still coming are refused.
  const destroySoon = socket.destroySoon;
  let read = 0;
  let answered = false;
  let timer: NodeJS.Timeout | undefined;
  const close = (): void => {
    clearTimeout(timer);
    req.off('data', onData);
    req.off('end', close);
    socket.off('close', close);
    socket.destroySoon = destroySoon;
    socket.destroySoon();
  };
  const onData = (chunk: Buffer): void => {
    read += chunk.length;
    if (answered && read > maxBytes) close();
  };
  // Read by us, the body is not left to Node (which, for an answer given early, stops passing it on).
  req.on('data', onData);
  req.resume();
  socket.destroySoon = () => {
    answered = true;
    if (socket.writable) socket.end();
    if (req.complete || read > maxBytes) return close();
    timer = setTimeout(close, maxMs);
    timer.unref();
    req.once('end', close);
    socket.once('close', close);
  };
}
