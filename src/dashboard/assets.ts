/**
 * The dashboard's static assets: where it lives (`basePath`), the built front end read once from
 * `dist/` (with `index.html` rewritten for another base path), and the routes that serve its pages.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { extname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { HttpError } from '../web/errors.ts';
import { show } from '../core/show.ts';

export const DASHBOARD_PATH = '/dashboard';

const BASE_PATH = /^(\/[A-Za-z0-9._~-]+)+$/;

/** Checks a `basePath` option: `/admin/queues`, not `admin`, `/admin/` or `/`. */
export function checkBasePath(basePath: unknown, where = 'dashboard'): string {
  if (typeof basePath !== 'string' || !BASE_PATH.test(basePath) || /(^|\/)\.\.?(\/|$)/.test(basePath)) {
    throw new TypeError(
      `${where}: basePath must be a path such as "/dashboard" or "/admin/queues" (segments of letters, digits, ".", "_", "~", "-"; no trailing slash), got ${show(basePath)}`,
    );
  }
  return basePath;
}

export const DEFAULT_DIST_DIR = fileURLToPath(new URL('./dist', import.meta.url));

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.webp': 'image/webp',
  '.woff2': 'font/woff2',
  '.txt': 'text/plain; charset=utf-8',
  '.webmanifest': 'application/manifest+json',
};

export interface StaticFile {
  body: Buffer;
  type: string;
  etag: string;
  immutable: boolean;
}

/**
 * Every file of the built front end, read once: a fixed set of paths, so no request can reach
 * outside it. The build refers to `/dashboard/...`; index.html is rewritten for another `basePath`
 * (its asset URLs, and the `errand-base` meta tag the front end reads its root from).
 */
export function loadDist(dir: string, basePath: string): Map<string, StaticFile> {
  const files = new Map<string, StaticFile>();
  if (!existsSync(join(dir, 'index.html'))) return files;
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const full = join(d, name);
      if (statSync(full).isDirectory()) walk(full);
      else {
        const rel = relative(dir, full).split(sep).join('/');
        let body = readFileSync(full);
        if (rel === 'index.html' && basePath !== DASHBOARD_PATH) {
          const html = body
            .toString('utf8')
            .replace(/(\s(?:href|src)=")\/dashboard\//g, `$1${basePath}/`)
            .replace(/(<meta name="errand-base" content=")\/dashboard(")/, `$1${basePath}$2`);
          body = Buffer.from(html);
        }
        files.set(rel, {
          body,
          type: CONTENT_TYPES[extname(name).toLowerCase()] ?? 'application/octet-stream',
          etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"`,
          immutable: rel.startsWith('assets/'),
        });
      }
    }
  };
  walk(dir);
  return files;
}

const NOT_BUILT_PAGE = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Errand dashboard not built</title></head>
<body><h1>The dashboard's front end is not built</h1>
<p>Run <code>npm run build:dashboard</code> in the Errand package (<code>npm ci</code> and <code>npm install</code> run it),
then restart the server. The JSON API under <code>/dashboard/api/</code> works without it.</p></body></html>`;

/** The front end's routes: `base` and `base/*` serve the built files, any other path the single-page app. */
export function registerFrontEnd(fastify: FastifyInstance, base: string, files: Map<string, StaticFile>): void {
  const sendFile = (request: FastifyRequest, reply: FastifyReply, file: StaticFile) => {
    reply.header('etag', file.etag);
    reply.header('cache-control', file.immutable ? 'public, max-age=31536000, immutable' : 'no-cache');
    if (request.headers['if-none-match'] === file.etag) return reply.code(304).send();
    return reply.type(file.type).send(file.body);
  };

  const page = async (request: FastifyRequest, reply: FastifyReply) => {
    const path = (request.params as { '*'?: string })['*'] ?? '';
    if (path === 'api' || path.startsWith('api/'))
      throw new HttpError(404, `No dashboard API route ${request.method} ${request.url.split('?')[0]}`);
    const file = files.get(path);
    if (file && path !== 'index.html') return sendFile(request, reply, file);
    // A missing built file is a 404; any other path is a page of the single-page app (its router reads
    // the path; run ids contain dots, so "has an extension" cannot tell files from pages).
    if (path.startsWith('assets/') || path === 'favicon.ico') throw new HttpError(404, `No dashboard file ${path.slice(0, 200)}`);
    const index = files.get('index.html');
    if (!index) return reply.code(503).type('text/html; charset=utf-8').send(NOT_BUILT_PAGE);
    return sendFile(request, reply, index);
  };
  fastify.get(base, page);
  fastify.get(`${base}/*`, page);
}
