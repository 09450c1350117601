import type { IncomingMessage, ServerResponse } from 'node:http';
import type { FastifyInstance, FastifyReply, FastifyRequest, RawServerDefault } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { Logger } from 'pino';
import { Type } from 'typebox';
import { ActionQuery, ErrorBody, IdOrName, Lab, LabClone, LabCreate, LabExample, LabSnapshot, Operation, type VmCreate } from '@drover/api';
import type { OperationRecord } from '../store/index.js';
import type { AccessService } from '../access/access.service.js';
import type { VmService } from '../vms/vm.service.js';
import type { LabService, LabVmCreator } from './lab.service.js';

type ManagerApp = FastifyInstance<RawServerDefault, IncomingMessage, ServerResponse, Logger, TypeBoxTypeProvider>;
type Answer = { status: number; body: unknown };

export interface LabRouteDeps {
  labs: LabService;
  vms: VmService;
  access: AccessService;
  idempotent: (request: FastifyRequest, reply: FastifyReply, run: (key: string | undefined) => Promise<Answer>) => Promise<FastifyReply>;
  operationAnswer: (op: OperationRecord, wait: boolean | undefined) => Promise<Answer>;
  actor: (request: FastifyRequest) => string;
}

const errorResponses = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody, 503: ErrorBody };
const Ref = Type.Object({ id: IdOrName }, { additionalProperties: false });
const EmptyBody = Type.Object({}, { additionalProperties: false });
const tags = ['labs'];

/**
 * Labs under /api/v1/labs: list, deploy (create), show, destroy (delete) and
 * the actions on a whole lab, each answered with its one operation (202, or
 * 200 once it ended with ?wait=true). Thin: LabService holds the logic.
 */
export async function registerLabRoutes(app: ManagerApp, deps: LabRouteDeps): Promise<void> {
  const { labs, vms, access, idempotent, operationAnswer, actor } = deps;
  // The lab's VMs are created as POST /api/v1/vms would: the caller's project, its quota.
  const creator = (request: FastifyRequest, project: string | undefined): LabVmCreator => {
    const who = actor(request);
    return (create: VmCreate) => {
      const { project: _ignored, ...rest } = create;
      return access.createInProject(request.access, project, (admit) => vms.create(rest, who, (spec) => admit({ ...spec, diskGiB: 0 })));
    };
  };

  app.get('/api/v1/lab-examples', { config: { permission: 'lab.read' }, schema: { tags, summary: 'The labs shipped with Drover (deploy one with {"example": NAME})', response: { 200: Type.Object({ items: Type.Array(LabExample) }), ...errorResponses } } }, async () => ({
    items: labs.examples(),
  }));
  // A caller without a global grant (a lab-user: own labs only; a project role: that project's labs) sees only the labs
  // it reaches; GET/DELETE/POST /api/v1/labs/:id… of another lab answer 404 (http/server.ts, as for VMs).
  app.get('/api/v1/labs', { config: { permission: 'lab.read' }, schema: { tags, summary: 'List labs (those the caller reaches)', response: { 200: Type.Object({ items: Type.Array(Lab) }), ...errorResponses } } }, async (request) => ({
    items: await Promise.all((await labs.list()).filter((lab) => !request.access || access.reaches(request.access, access.scopedLab(lab))).map((lab) => labs.toPublic(lab))),
  }));
  app.post('/api/v1/labs', { config: { permission: 'lab.write' }, schema: { tags, summary: 'Deploy a lab from a package, a shipped example or a manifest: one operation (networks, groups, VMs, start in dependency order with health checks)', querystring: ActionQuery, body: LabCreate, response: { 200: Operation, 202: Operation, ...errorResponses } } }, async (request, reply) =>
    idempotent(request, reply, async (key) => operationAnswer(await labs.deploy(request.body, actor(request), creator(request, request.body.project), key), request.query.wait)),
  );
  app.get('/api/v1/labs/:id', { config: { permission: 'lab.read' }, schema: { tags, summary: 'Show a lab with its networks and VMs', params: Ref, response: { 200: Lab, ...errorResponses } } }, async (request) =>
    labs.toPublic(await labs.find(request.params.id)),
  );
  app.delete('/api/v1/labs/:id', { config: { permission: 'lab.write' }, schema: { tags, summary: 'Destroy a lab: its VMs (forced off), disks, networks and security groups', params: Ref, querystring: ActionQuery, response: { 200: Operation, 202: Operation, ...errorResponses } } }, async (request, reply) =>
    idempotent(request, reply, async (key) => operationAnswer(await labs.destroy(request.params.id, actor(request), key), request.query.wait)),
  );
  for (const action of ['start', 'stop', 'reset'] as const) {
    const summary = {
      start: 'Start a lab\'s VMs in dependency order, each after the ones it depends on passed their health checks',
      stop: 'Stop a lab\'s VMs in reverse dependency order',
      reset: 'Reset a lab to its state at deploy: VMs off, disks back to their initial snapshot, started again in order',
    }[action];
    app.post(`/api/v1/labs/:id/${action}`, { config: { permission: 'lab.write' }, schema: { tags, summary, params: Ref, querystring: ActionQuery, body: EmptyBody, response: { 200: Operation, 202: Operation, ...errorResponses } } }, async (request, reply) =>
      idempotent(request, reply, async (key) => operationAnswer(await labs.action(request.params.id, action, {}, actor(request), key), request.query.wait)),
    );
  }
  app.post('/api/v1/labs/:id/snapshot', { config: { permission: 'lab.write' }, schema: { tags, summary: 'Snapshot every VM of a lab under one name', params: Ref, querystring: ActionQuery, body: LabSnapshot, response: { 200: Operation, 202: Operation, ...errorResponses } } }, async (request, reply) =>
    idempotent(request, reply, async (key) => operationAnswer(await labs.action(request.params.id, 'snapshot', { name: request.body.name }, actor(request), key), request.query.wait)),
  );
  app.post('/api/v1/labs/:id/clone', { config: { permission: 'lab.write' }, schema: { tags, summary: 'Deploy a second copy of a lab, with its own networks and addresses, beside it (the operation deploys the new lab)', params: Ref, querystring: ActionQuery, body: LabClone, response: { 200: Operation, 202: Operation, ...errorResponses } } }, async (request, reply) =>
    idempotent(request, reply, async (key) => {
      const source = await labs.find(request.params.id);
      return operationAnswer(await labs.clone(source.id, request.body, actor(request), creator(request, source.project ?? undefined), key), request.query.wait);
    }),
  );
}
