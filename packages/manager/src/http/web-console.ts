import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyRequest } from 'fastify';
import type { ManagerApp } from './app-type.js';
import fastifyStatic from '@fastify/static';

/** Where `vite build` puts the web console in this repository (packages/web/dist). */
export function defaultWebRoot(): string | undefined {
  const here = path.dirname(fileURLToPath(import.meta.url));
  // src/http or dist/http → packages/manager → packages/web/dist
  const root = path.resolve(here, '../../../web/dist');
  return existsSync(path.join(root, 'index.html')) ? root : undefined;
}

/**
 * Serves the web console's files at `/`. Paths under /api/ are never files;
 * any other GET that names no file gets index.html, so a page of the
 * single-page app (/vms/web1) can be reloaded or bookmarked. Hashed assets are
 * cached for a year, index.html never.
 */
export async function registerWebConsole(app: ManagerApp, root: string): Promise<void> {
  await app.register(async (files) => {
    // The console's files are public (the API behind them is not): said here, as every route must say who may call it.
    files.addHook('onRoute', (route) => {
      route.config = { ...(route.config ?? {}), permission: 'public' };
    });
    await registerFiles(files as unknown as ManagerApp, root);
  });
}

async function registerFiles(app: ManagerApp, root: string): Promise<void> {
  await app.register(fastifyStatic, {
    root,
    prefix: '/',
    index: ['index.html'],
    serveDotFiles: false,
    cacheControl: false, // set per file below
    setHeaders: (res, file) => {
      const immutable = file.includes(`${path.sep}assets${path.sep}`);
      res.setHeader('cache-control', immutable ? 'public, max-age=31536000, immutable' : 'no-cache');
      res.setHeader('x-content-type-options', 'nosniff');
      if (file.endsWith('.html')) {
        res.setHeader('content-security-policy', "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'");
        res.setHeader('referrer-policy', 'same-origin');
      }
    },
  });
}

/** A browser asking for a page of the single-page app (not an API path, not a file): it gets index.html. */
export function isConsolePage(request: FastifyRequest): boolean {
  const url = request.url.split('?')[0]!;
  if (request.method !== 'GET' || url.startsWith('/api/') || url === '/metrics' || path.extname(url) !== '') return false;
  return String(request.headers.accept ?? '').includes('text/html');
}
