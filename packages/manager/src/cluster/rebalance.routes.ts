import type { FastifyReply, FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import { ActionQuery, ErrorBody, Operation, RebalancePlan, RebalanceRequest } from '@drover/api';
import type { ManagerApp } from '../http/app-type.js';
import type { OperationRecord } from '../store/types.js';
import type { RebalanceService } from './rebalance.service.js';

type Answer = { status: number; body: unknown };

export interface RebalanceRouteDeps {
  rebalance: RebalanceService;
  idempotent(request: FastifyRequest, reply: FastifyReply, run: (key: string | undefined) => Promise<Answer>): Promise<FastifyReply>;
  operationAnswer(op: OperationRecord, wait: boolean | undefined): Promise<Answer>;
  actor(request: FastifyRequest): string;
}

const errorResponses = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 409: ErrorBody, 503: ErrorBody };

/** `POST /api/v1/cluster/rebalance`: the planner's rebalance plan (dryRun) or the operation running it (docs/planner.md). */
export async function registerRebalanceRoutes(app: ManagerApp, { rebalance, idempotent, operationAnswer, actor }: RebalanceRouteDeps): Promise<void> {
  app.post(
    '/api/v1/cluster/rebalance',
    {
      config: { permission: 'cluster.write' },
      schema: {
        tags: ['cluster'],
        summary: 'Spread load over the online hosts by live migration ({dryRun?, threshold?, concurrency?}); dryRun answers the plan, otherwise 202 with the cluster.rebalance operation',
        querystring: ActionQuery,
        body: RebalanceRequest,
        response: { 200: Type.Union([RebalancePlan, Operation]), 202: Operation, ...errorResponses },
      },
    },
    async (request, reply) =>
      idempotent(request, reply, async (key) => {
        const outcome = await rebalance.rebalance(request.body, actor(request), key);
        return 'moves' in outcome ? { status: 200, body: outcome } : operationAnswer(outcome, request.query.wait);
      }),
  );
}
