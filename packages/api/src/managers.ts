import { Type, type Static } from 'typebox';

/**
 * Several managers on one PostgreSQL store (manager cluster/, docs/scale-out.md):
 * the managers sharing the store and which of them leads (runs the background work).
 */

export const ClusterManager = Type.Object({
  id: Type.String({ description: 'Random per manager process start' }),
  name: Type.String({ description: 'The machine name and process id' }),
  url: Type.String({ description: 'Where its API answers' }),
  version: Type.String(),
  pid: Type.Integer(),
  startedAt: Type.String(),
  lastSeenAt: Type.String({ description: 'Refreshed every second or so while it runs' }),
  alive: Type.Boolean({ description: 'Holds its session on the database now (PostgreSQL); on SQLite only the manager that answers' }),
  leader: Type.Boolean({ description: 'Holds the leader lock: runs heartbeats, HA, power policy, feed polling, rebalance and recovery' }),
});
export type ClusterManager = Static<typeof ClusterManager>;

export const ClusterManagers = Type.Object({
  backend: Type.Union([Type.Literal('sqlite'), Type.Literal('postgres')]),
  /** The manager that answered. */
  self: Type.String(),
  leader: Type.Union([
    Type.Object({ managerId: Type.String(), term: Type.Integer({ minimum: 1 }), since: Type.String() }),
    Type.Null(),
  ]),
  managers: Type.Array(ClusterManager),
});
export type ClusterManagers = Static<typeof ClusterManagers>;
