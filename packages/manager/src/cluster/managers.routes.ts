import { ClusterManagers, ErrorBody } from '@drover/api';
import type { ManagerApp } from '../http/app-type.js';
import type { ClusterCoordinator } from './coordinator.js';

const errorResponses = { 401: ErrorBody, 403: ErrorBody, 503: ErrorBody };

/** `GET /api/v1/cluster/managers`: the managers sharing the store and the leader (docs/scale-out.md). */
export async function registerClusterManagerRoutes(app: ManagerApp, { cluster }: { cluster: ClusterCoordinator }): Promise<void> {
  app.get(
    '/api/v1/cluster/managers',
    {
      config: { permission: 'cluster.read' },
      schema: {
        tags: ['cluster'],
        summary: 'The managers sharing the store, which of them are alive and which one leads (runs the background work)',
        response: { 200: ClusterManagers, ...errorResponses },
      },
    },
    async () => cluster.status(),
  );
}
