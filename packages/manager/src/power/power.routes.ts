import type { FastifyReply, FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import {
  ActionQuery,
  DryRunBody,
  ErrorBody,
  EvacuateRequest,
  HaSetting,
  Host,
  HostEvacuationPlan,
  HostPower,
  HostPowerSettings,
  IdOrName,
  NightPlan,
  Operation,
  PowerActionParams,
  powerActions,
  type PowerActionName,
  PowerPolicy,
  PowerReport,
  RestorePlan,
  Vm,
  WakePlan,
} from '@drover/api';
import { errors } from '@drover/core';
import type { ManagerApp } from '../http/app-type.js';
import { publicHost, type HostService } from '../hosts/host.service.js';
import type { OperationRecord } from '../store/types.js';
import type { VmService } from '../vms/vm.service.js';
import type { HaService } from './ha.service.js';
import type { MaintenanceService } from './maintenance.service.js';
import type { PowerPolicyService } from './power-policy.service.js';
import type { PowerService } from './power.service.js';

type Answer = { status: number; body: unknown };

export interface PowerRouteDeps {
  power: PowerService;
  maintenance: MaintenanceService;
  policy: PowerPolicyService;
  ha: HaService;
  hosts: HostService;
  vms: VmService;
  idempotent(request: FastifyRequest, reply: FastifyReply, run: (key: string | undefined) => Promise<Answer>): Promise<FastifyReply>;
  operationAnswer(op: OperationRecord, wait: boolean | undefined): Promise<Answer>;
  actor(request: FastifyRequest): string;
}

const errorResponses = { 400: ErrorBody, 401: ErrorBody, 404: ErrorBody, 409: ErrorBody, 412: ErrorBody, 413: ErrorBody, 503: ErrorBody, 504: ErrorBody };
const Ref = Type.Object({ id: IdOrName }, { additionalProperties: false });
const RestoreRequest = Type.Object({ dryRun: Type.Optional(Type.Boolean({ description: 'Only show what would come back' })), concurrency: Type.Optional(Type.Integer({ minimum: 1, maximum: 16 })) }, { additionalProperties: false });

function isOperation(value: unknown): value is OperationRecord {
  return typeof value === 'object' && value !== null && 'kind' in value && 'journal' in value;
}

/**
 * Host power (drivers and actions), maintenance (evacuate, restore) and the
 * power policy (night plan, wake, report). docs/maintenance-and-power.md.
 */
export async function registerPowerRoutes(app: ManagerApp, deps: PowerRouteDeps): Promise<void> {
  const { power, maintenance, policy, ha, hosts, vms, idempotent, operationAnswer, actor } = deps;
  const planOrOperation = async (value: unknown, wait: boolean | undefined): Promise<Answer> => (isOperation(value) ? operationAnswer(value, wait) : { status: 200, body: value });

  // ---------------------------------------------------------------- host power
  app.get('/api/v1/hosts/:id/power', { config: { permission: 'host.read' }, schema: { tags: ['power'], summary: 'Show a host\'s power driver settings (secrets are not returned) and its time powered off; null when it has none', params: Ref, response: { 200: Type.Union([HostPower, Type.Null()]), ...errorResponses } } }, async (request) =>
    power.get(request.params.id),
  );
  app.put('/api/v1/hosts/:id/power', { config: { permission: 'host.power' }, schema: { tags: ['power'], summary: 'Set a host\'s power driver: ipmi, wol (power on only) or command; an IPMI password left out keeps the stored one', params: Ref, body: HostPowerSettings, response: { 200: HostPower, ...errorResponses } } }, async (request) =>
    power.put(request.params.id, request.body),
  );
  app.delete('/api/v1/hosts/:id/power', { config: { permission: 'host.power' }, schema: { tags: ['power'], summary: 'Remove a host\'s power driver settings', params: Ref, response: { 204: Type.Null(), ...errorResponses } } }, async (request, reply) => {
    await power.remove(request.params.id);
    return reply.status(204).send(null);
  });
  app.post('/api/v1/hosts/:id/power/:action', { config: { permission: 'host.power' }, schema: { tags: ['power'], summary: 'Power a host on, off, cycle it, or read its power status through its driver, as the operation host.power (off and cycle are refused while it runs VMs)', params: PowerActionParams, querystring: ActionQuery, body: Type.Object({}, { additionalProperties: false }), response: { 200: Operation, 202: Operation, ...errorResponses } } }, async (request, reply) =>
    idempotent(request, reply, async (key) => {
      const action = request.params.action;
      if (!(powerActions as readonly string[]).includes(action)) throw errors.notFound('power action', action);
      return operationAnswer(await power.action(request.params.id, action as PowerActionName, actor(request), key), request.query.wait);
    }),
  );

  // ---------------------------------------------------------------- maintenance
  app.post('/api/v1/hosts/:id/maintenance', { config: { permission: 'host.write' }, schema: { tags: ['hosts'], summary: 'Put a host into maintenance: it keeps its VMs and takes no new ones', params: Ref, body: Type.Object({}, { additionalProperties: false }), response: { 200: Host, ...errorResponses } } }, async (request) => {
    const host = await maintenance.enterMaintenance(request.params.id);
    return publicHost(host, await hosts.allocated(host.id));
  });
  app.post('/api/v1/hosts/:id/evacuate', { config: { permission: 'host.write' }, schema: { tags: ['hosts'], summary: 'Move a host\'s VMs away by each VM\'s evacuation policy (the host enters maintenance) as the operation host.evacuate; dryRun answers the plan, VMs that cannot move listed with the reason', params: Ref, querystring: ActionQuery, body: EvacuateRequest, response: { 200: Type.Union([HostEvacuationPlan, Operation]), 202: Operation, ...errorResponses } } }, async (request, reply) =>
    idempotent(request, reply, async (key) => planOrOperation(await maintenance.evacuate(request.params.id, request.body, actor(request), key), request.query.wait)),
  );
  app.post('/api/v1/hosts/:id/restore', { config: { permission: 'host.write' }, schema: { tags: ['hosts'], summary: 'Take a host out of maintenance and bring back exactly the VMs its evacuations moved away, as the operation host.restore; dryRun answers the list', params: Ref, querystring: ActionQuery, body: RestoreRequest, response: { 200: Type.Union([RestorePlan, Operation]), 202: Operation, ...errorResponses } } }, async (request, reply) =>
    idempotent(request, reply, async (key) => planOrOperation(await maintenance.restore(request.params.id, request.body, actor(request), key), request.query.wait)),
  );

  // ---------------------------------------------------------------- HA
  app.put('/api/v1/vms/:id/ha', { config: { permission: 'vm.write' }, schema: { tags: ['vms'], summary: 'Mark a VM highly available (restarted on another host after its host is lost and fenced) or not; only for VMs on shared storage', params: Ref, body: HaSetting, response: { 200: Vm, ...errorResponses } } }, async (request) =>
    vms.toPublic(await ha.setHa(request.params.id, request.body.enabled)),
  );

  // ---------------------------------------------------------------- power policy
  app.get('/api/v1/power/policy', { config: { permission: 'power.read' }, schema: { tags: ['power'], summary: 'Show the power policy (null when none is set)', response: { 200: Type.Union([PowerPolicy, Type.Null()]), ...errorResponses } } }, async () => policy.policy());
  app.put('/api/v1/power/policy', { config: { permission: 'power.write' }, schema: { tags: ['power'], summary: 'Set the power policy: the nightly consolidation window in a time zone, spare hosts, reserve, watts per host', body: PowerPolicy, response: { 200: PowerPolicy, ...errorResponses } } }, async (request) =>
    policy.setPolicy(request.body),
  );
  app.get('/api/v1/power/report', { config: { permission: 'power.read' }, schema: { tags: ['power'], summary: 'Hosts powered off by Drover, hours off, estimated energy saved, the last run', response: { 200: PowerReport, ...errorResponses } } }, async () => policy.report());
  app.post('/api/v1/power/night-plan', { config: { permission: 'power.write' }, schema: { tags: ['power'], summary: 'Run the night plan now (pack VMs, power emptied hosts off) as the operation power.night-plan; dryRun answers the plan', querystring: ActionQuery, body: DryRunBody, response: { 200: Type.Union([NightPlan, Operation]), 202: Operation, ...errorResponses } } }, async (request, reply) =>
    idempotent(request, reply, async () => planOrOperation(await policy.runNightPlan(request.body, actor(request)), request.query.wait)),
  );
  app.post('/api/v1/power/wake', { config: { permission: 'power.write' }, schema: { tags: ['power'], summary: 'Wake every host Drover powered off, wait for their agents and rebalance, as the operation power.wake; dryRun answers which hosts', querystring: ActionQuery, body: DryRunBody, response: { 200: Type.Union([WakePlan, Operation]), 202: Operation, ...errorResponses } } }, async (request, reply) =>
    idempotent(request, reply, async () => planOrOperation(await policy.wake(request.body, actor(request)), request.query.wait)),
  );
}
