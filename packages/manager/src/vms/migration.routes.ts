import type { FastifyReply, FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import { ActionQuery, ErrorBody, IdOrName, MigrateRequest, Operation } from '@drover/api';
import type { ManagerApp } from '../http/app-type.js';
import type { OperationRecord } from '../store/types.js';
import type { VmService } from './vm.service.js';

type Answer = { status: number; body: unknown };

export interface MigrationRouteDeps {
  vms: VmService;
  /** server.ts's Idempotency-Key replay around a request's answer. */
  idempotent(request: FastifyRequest, reply: FastifyReply, run: (key: string | undefined) => Promise<Answer>): Promise<FastifyReply>;
  /** 202 with the operation, or 200 once it ended with `?wait=true`. */
  operationAnswer(op: OperationRecord, wait: boolean | undefined): Promise<Answer>;
  actor(request: FastifyRequest): string;
}

const errorResponses = { 400: ErrorBody, 401: ErrorBody, 404: ErrorBody, 409: ErrorBody, 412: ErrorBody, 413: ErrorBody, 503: ErrorBody };
const Ref = Type.Object({ id: IdOrName }, { additionalProperties: false });

/**
 * `POST /api/v1/vms/:id/migrate`: live migration to another host, as the
 * operation `vm.migrate` (docs/migration.md). Every check runs before the 202:
 * same host, destination not online, no capacity there, CPU model not offered,
 * local disks without `storage`, post-copy without userfaultfd, VM busy.
 * Cancel with `POST /api/v1/operations/:id/cancel` until the switchover.
 */
export async function registerMigrationRoutes(app: ManagerApp, { vms, idempotent, operationAnswer, actor }: MigrationRouteDeps): Promise<void> {
  app.post(
    '/api/v1/vms/:id/migrate',
    {
      config: { permission: 'vm.migrate' },
      schema: {
        tags: ['vms'],
        summary: 'Move a running VM to another host without stopping it ({to, storage?, downtimeMs?, bandwidth?, postcopy?, timeoutMs?}); 202 with the vm.migrate operation',
        params: Ref,
        querystring: ActionQuery,
        body: MigrateRequest,
        response: { 200: Operation, 202: Operation, ...errorResponses },
      },
    },
    async (request, reply) => idempotent(request, reply, async (key) => operationAnswer(await vms.migrations.migrate(request.params.id, request.body, actor(request), key), request.query.wait)),
  );
}
