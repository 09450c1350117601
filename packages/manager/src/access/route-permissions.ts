import type { FastifyInstance } from 'fastify';
import { errors } from '@drover/core';
import { isRoutePermission } from './permissions.js';
import './fastify-types.js';

interface DeclaredRoute {
  method: string | string[];
  url: string;
  config?: { permission?: string };
  schema?: Record<string, unknown>;
}

/**
 * Makes every route of `app` declare `config.permission`: routes are collected
 * as they are added (onRoute) and checked once all are (onReady), so that a
 * plugin may still set the permission of the routes it adds (the web console's
 * files); the app refuses to become ready, and the manager to start, naming
 * each route without one. The permission is also published in the OpenAPI
 * document as `x-permission`.
 */
export function requireRoutePermissions(app: FastifyInstance): DeclaredRoute[] {
  const declared: DeclaredRoute[] = [];
  app.addHook('onRoute', (route) => {
    const permission = route.config?.permission;
    if (route.schema && permission !== undefined) route.schema = { ...route.schema, 'x-permission': permission } as typeof route.schema;
    declared.push(route as unknown as DeclaredRoute);
  });
  app.addHook('onReady', async () => {
    const missing = declared
      .filter((route) => !isRoutePermission(route.config?.permission))
      .map((route) => `${Array.isArray(route.method) ? route.method.join('|') : route.method} ${route.url} (${JSON.stringify(route.config?.permission ?? null)})`);
    if (missing.length > 0) throw errors.internal(`Every route must declare config.permission ("area.verb", "public" or "authenticated"); these do not: ${missing.join(', ')}`);
  });
  return declared;
}
