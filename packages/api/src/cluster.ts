import { Type, type Static } from 'typebox';

/**
 * Cluster-wide load balancing (manager cluster/, docs/planner.md): the planner's
 * rebalance plan, and the request that shows or runs it.
 */

const Uuid = Type.String({ pattern: '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' });

export const RebalanceRequest = Type.Object(
  {
    dryRun: Type.Optional(Type.Boolean({ description: 'Only compute and return the plan; nothing moves' })),
    threshold: Type.Optional(
      Type.Number({ minimum: 0, maximum: 1, description: 'Move VMs until the most and least loaded online hosts differ by at most this share of a host (0–1); default the configured threshold (0.2)' }),
    ),
    concurrency: Type.Optional(Type.Integer({ minimum: 1, maximum: 16, description: 'Live migrations at once (default the configured one, 2)' })),
  },
  { additionalProperties: false },
);
export type RebalanceRequest = Static<typeof RebalanceRequest>;

export const RebalanceMove = Type.Object({
  vmId: Uuid,
  vmName: Type.String(),
  fromHostId: Uuid,
  fromHostName: Type.String(),
  toHostId: Uuid,
  toHostName: Type.String(),
});
export type RebalanceMove = Static<typeof RebalanceMove>;

export const RebalancePlan = Type.Object({
  threshold: Type.Number({ description: 'The imbalance the plan aims at or under' }),
  imbalanceBefore: Type.Number({ description: 'Load of the most loaded online host − load of the least loaded (load = max of memory and vCPU shares)' }),
  imbalanceAfter: Type.Number({ description: 'The same once every move is done' }),
  moves: Type.Array(RebalanceMove, { description: 'Live migrations, in the order they are started' }),
});
export type RebalancePlan = Static<typeof RebalancePlan>;
