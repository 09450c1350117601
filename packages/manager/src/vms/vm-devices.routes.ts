import type { FastifyReply, FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import { ActionQuery, ErrorBody, IdOrName, Operation, VmDiskAdd, VmDiskInfo, VmNicAdd, VmNicInfo } from '@drover/api';
import type { ManagerApp } from '../http/app-type.js';
import type { OperationRecord } from '../store/types.js';
import type { VmService } from './vm.service.js';

type Answer = { status: number; body: unknown };

export interface VmDeviceRouteDeps {
  vms: VmService;
  /** server.ts's Idempotency-Key replay around a request's answer. */
  idempotent(request: FastifyRequest, reply: FastifyReply, run: (key: string | undefined) => Promise<Answer>): Promise<FastifyReply>;
  /** 202 with the operation, or 200 once it ended with `?wait=true`. */
  operationAnswer(op: OperationRecord, wait: boolean | undefined): Promise<Answer>;
  actor(request: FastifyRequest): string;
}

const errorResponses = { 400: ErrorBody, 401: ErrorBody, 404: ErrorBody, 409: ErrorBody, 412: ErrorBody, 413: ErrorBody, 503: ErrorBody };
const Ref = Type.Object({ id: IdOrName }, { additionalProperties: false });
/** A disk by its index in GET .../disks or its volume name (at most 100 characters in a URL, like the storage routes). */
const DiskRef = Type.Object({ id: IdOrName, disk: Type.String({ minLength: 1, maxLength: 100, pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]*$' }) }, { additionalProperties: false });
/** A NIC by its index in GET .../nics or its MAC address. */
const NicRef = Type.Object({ id: IdOrName, nic: Type.String({ minLength: 1, maxLength: 63, pattern: '^[A-Za-z0-9][A-Za-z0-9_.:-]*$' }) }, { additionalProperties: false });
const opResponses = { 200: Operation, 202: Operation, ...errorResponses };

/**
 * Disks and NICs of a VM: listed from its host, added and removed as
 * operations (202, or 200 with `?wait=true`). A running VM gets or loses the
 * device at once (hotplug); a stopped one at its next start.
 */
export async function registerVmDeviceRoutes(app: ManagerApp, { vms, idempotent, operationAnswer, actor }: VmDeviceRouteDeps): Promise<void> {
  const devices = vms.devices;

  app.get('/api/v1/vms/:id/disks', { config: { permission: 'vm.read' }, schema: { tags: ['vms'], summary: "List a VM's disks as its host has them, in the guest's order (empty before its first start)", params: Ref, response: { 200: Type.Array(VmDiskInfo), ...errorResponses } } }, async (request) =>
    devices.listDisks(request.params.id),
  );
  app.post(
    '/api/v1/vms/:id/disks',
    {
      config: { permission: 'vm.write' },
      schema: {
        tags: ['vms'],
        summary: 'Add a disk: an existing volume ({volume, pool?, readOnly?}) or a new empty one ({sizeBytes, name?, pool?}) on the VM\'s host; hot-plugged into a running VM',
        params: Ref,
        querystring: ActionQuery,
        body: VmDiskAdd,
        response: opResponses,
      },
    },
    async (request, reply) => idempotent(request, reply, async (key) => operationAnswer(await devices.addDisk(request.params.id, request.body, actor(request), key), request.query.wait)),
  );
  app.delete(
    '/api/v1/vms/:id/disks/:disk',
    { config: { permission: 'vm.write' }, schema: { tags: ['vms'], summary: 'Remove a disk added through the API (by index or volume name); a running guest must release it. The volume stays', params: DiskRef, querystring: ActionQuery, response: opResponses } },
    async (request, reply) => idempotent(request, reply, async (key) => operationAnswer(await devices.removeDisk(request.params.id, request.params.disk, actor(request), key), request.query.wait)),
  );

  app.get('/api/v1/vms/:id/nics', { config: { permission: 'vm.read' }, schema: { tags: ['vms'], summary: "List a VM's NICs as its host has them (empty before its first start)", params: Ref, response: { 200: Type.Array(VmNicInfo), ...errorResponses } } }, async (request) =>
    devices.listNics(request.params.id),
  );
  app.post(
    '/api/v1/vms/:id/nics',
    { config: { permission: 'vm.write' }, schema: { tags: ['vms'], summary: 'Add a user-mode NIC ({mac?, forwards?}); hot-plugged into a running VM', params: Ref, querystring: ActionQuery, body: VmNicAdd, response: opResponses } },
    async (request, reply) => idempotent(request, reply, async (key) => operationAnswer(await devices.addNic(request.params.id, request.body, actor(request), key), request.query.wait)),
  );
  app.delete(
    '/api/v1/vms/:id/nics/:nic',
    { config: { permission: 'vm.write' }, schema: { tags: ['vms'], summary: 'Remove a NIC added through the API (by index or MAC); a running guest must release it', params: NicRef, querystring: ActionQuery, response: opResponses } },
    async (request, reply) => idempotent(request, reply, async (key) => operationAnswer(await devices.removeNic(request.params.id, request.params.nic, actor(request), key), request.query.wait)),
  );
}
