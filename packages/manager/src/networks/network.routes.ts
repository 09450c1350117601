import type { FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import { errors } from '@drover/core';
import {
  ErrorBody,
  FirewallExplain,
  HostRule,
  HostRuleCreate,
  IdOrName,
  Network,
  NetworkCreate,
  NetworkEdit,
  NicSecurityGroupsPut,
  SecurityGroup,
  SecurityGroupCreate,
  SecurityGroupRuleInput,
  SecurityGroupRulesPut,
  VmNicView,
} from '@drover/api';
import type { ManagerApp } from '../http/app-type.js';
import type { HostRuleRecord, NetworkRecord, SecurityGroupRecord } from '../store/repositories/networks.js';
import type { VmService } from '../vms/vm.service.js';

export interface NetworkRouteDeps {
  vms: VmService;
  actor(request: FastifyRequest): string;
}

const errorResponses = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody, 412: ErrorBody, 413: ErrorBody };
const Ref = Type.Object({ id: IdOrName }, { additionalProperties: false });
// Positions are names in the path (a rule's number, a NIC's index): anything that is not one names nothing (404).
const RuleRef = Type.Object({ id: IdOrName, index: IdOrName }, { additionalProperties: false });
const NicRef = Type.Object({ id: IdOrName, index: IdOrName }, { additionalProperties: false });
const LabQuery = Type.Object({ lab: Type.Optional(Type.String({ maxLength: 63 })) }, { additionalProperties: false });
const Items = <T extends Parameters<typeof Type.Array>[0]>(item: T) => Type.Object({ items: Type.Array(item) });

/** `If-Match: <rev>` (quotes allowed) → the rev a write expects; absent → no check. */
function expectedRev(request: FastifyRequest): number | undefined {
  const ifMatch = request.headers['if-match'];
  if (ifMatch === undefined) return undefined;
  const rev = Number(String(ifMatch).replaceAll('"', ''));
  if (!Number.isInteger(rev) || rev < 1) throw errors.invalid(`If-Match must be a revision number, got "${String(ifMatch)}"`);
  return rev;
}

/** A position in a path: a non-negative integer, or nothing of that name (404). */
function position(value: string, what: string): number {
  if (!/^(0|[1-9][0-9]{0,3})$/.test(value)) throw errors.notFound(what, value);
  return Number(value);
}

function publicGroup(group: SecurityGroupRecord): SecurityGroup {
  return { ...group };
}

/**
 * Networks, security groups, host rules, a VM's NICs on networks and its
 * effective firewall (docs/networks.md). Thin: the logic is in
 * network.service.ts.
 */
export async function registerNetworkRoutes(app: ManagerApp, { vms, actor }: NetworkRouteDeps): Promise<void> {
  const networks = vms.networks;
  const hostRule = async (rule: HostRuleRecord) => ({
    id: rule.id,
    network: rule.networkId ? ((await networks.listNetworks()).find((n: NetworkRecord) => n.id === rule.networkId)?.name ?? rule.networkId) : null,
    protocol: rule.protocol as HostRule['protocol'],
    ports: rule.ports,
    cidr: rule.cidr,
    action: rule.action as HostRule['action'],
    createdAt: rule.createdAt,
  });

  // ---------------------------------------------------------------- networks
  app.get('/api/v1/networks', { config: { permission: 'network.read' }, schema: { tags: ['networks'], summary: 'List the networks (with their NIC count and the hosts they are on now)', querystring: LabQuery, response: { 200: Items(Network), ...errorResponses } } }, async (request) => ({
    items: await networks.publicNetworks(await networks.listNetworks(request.query.lab ? { lab: request.query.lab } : {})),
  }));
  app.post('/api/v1/networks', { config: { permission: 'network.write' }, schema: { tags: ['networks'], summary: 'Create a network (bridged, nat or isolated); an overlapping subnet is a 409', body: NetworkCreate, response: { 201: Network, ...errorResponses } } }, async (request, reply) => {
    const created = await networks.createNetwork(request.body, actor(request));
    return reply.code(201).send(await networks.publicNetwork(created));
  });
  app.get('/api/v1/networks/:id', { config: { permission: 'network.read' }, schema: { tags: ['networks'], summary: 'Show a network', params: Ref, response: { 200: Network, ...errorResponses } } }, async (request) =>
    networks.publicNetwork(await networks.findNetwork(request.params.id)),
  );
  app.patch('/api/v1/networks/:id', { config: { permission: 'network.write' }, schema: { tags: ['networks'], summary: 'Change a network\'s MTU or labels (If-Match: <rev>); its hosts are pushed again', params: Ref, body: NetworkEdit, response: { 200: Network, ...errorResponses } } }, async (request) =>
    networks.publicNetwork(await networks.editNetwork(request.params.id, request.body, expectedRev(request))),
  );
  app.delete('/api/v1/networks/:id', { config: { permission: 'network.write' }, schema: { tags: ['networks'], summary: 'Delete a network no VM NIC is on (409 otherwise; If-Match: <rev>)', params: Ref, response: { 204: Type.Null(), ...errorResponses } } }, async (request, reply) => {
    await networks.deleteNetwork(request.params.id, expectedRev(request));
    return reply.code(204).send(null);
  });

  // ---------------------------------------------------------------- security groups
  app.get('/api/v1/security-groups', { config: { permission: 'network.read' }, schema: { tags: ['networks'], summary: 'List the security groups with their rules', querystring: LabQuery, response: { 200: Items(SecurityGroup), ...errorResponses } } }, async (request) => ({
    items: (await networks.listGroups(request.query.lab ? { lab: request.query.lab } : {})).map(publicGroup),
  }));
  app.post('/api/v1/security-groups', { config: { permission: 'network.write' }, schema: { tags: ['networks'], summary: 'Create a security group (rules checked: ranges, ICMP types, peers, no reference to itself or to an unknown group)', body: SecurityGroupCreate, response: { 201: SecurityGroup, ...errorResponses } } }, async (request, reply) =>
    reply.code(201).send(publicGroup(await networks.createGroup(request.body, actor(request)))),
  );
  app.get('/api/v1/security-groups/:id', { config: { permission: 'network.read' }, schema: { tags: ['networks'], summary: 'Show a security group', params: Ref, response: { 200: SecurityGroup, ...errorResponses } } }, async (request) =>
    publicGroup(await networks.findGroup(request.params.id)),
  );
  app.delete('/api/v1/security-groups/:id', { config: { permission: 'network.write' }, schema: { tags: ['networks'], summary: 'Delete a security group no NIC uses and no rule refers to (409 otherwise; If-Match: <rev>)', params: Ref, response: { 204: Type.Null(), ...errorResponses } } }, async (request, reply) => {
    await networks.deleteGroup(request.params.id, expectedRev(request));
    return reply.code(204).send(null);
  });
  app.put('/api/v1/security-groups/:id/rules', { config: { permission: 'network.write' }, schema: { tags: ['networks'], summary: 'Replace a security group\'s rules (checked whole; versioned by the group\'s rev); the hosts of its members are pushed', params: Ref, body: SecurityGroupRulesPut, response: { 200: SecurityGroup, ...errorResponses } } }, async (request) =>
    publicGroup(await networks.setRules(request.params.id, request.body.rules, expectedRev(request))),
  );
  app.post('/api/v1/security-groups/:id/rules', { config: { permission: 'network.write' }, schema: { tags: ['networks'], summary: 'Add a rule to a security group (versioned by the group\'s rev)', params: Ref, body: SecurityGroupRuleInput, response: { 200: SecurityGroup, ...errorResponses } } }, async (request) =>
    publicGroup(await networks.addRule(request.params.id, request.body, expectedRev(request))),
  );
  app.delete('/api/v1/security-groups/:id/rules/:index', { config: { permission: 'network.write' }, schema: { tags: ['networks'], summary: 'Remove the rule at a position (1-based, as listed; versioned by the group\'s rev)', params: RuleRef, response: { 200: SecurityGroup, ...errorResponses } } }, async (request) =>
    publicGroup(await networks.removeRule(request.params.id, position(request.params.index, 'rule'), expectedRev(request))),
  );

  // ---------------------------------------------------------------- host rules
  app.get('/api/v1/firewall/host-rules', { config: { permission: 'network.read' }, schema: { tags: ['networks'], summary: 'List the host rules (traffic from VM networks to the hosts themselves)', response: { 200: Items(HostRule), ...errorResponses } } }, async () => ({
    items: await Promise.all((await networks.listHostRules()).map(hostRule)),
  }));
  app.post('/api/v1/firewall/host-rules', { config: { permission: 'network.write' }, schema: { tags: ['networks'], summary: 'Add a host rule; every host with VM networks is pushed', body: HostRuleCreate, response: { 201: HostRule, ...errorResponses } } }, async (request, reply) =>
    reply.code(201).send(await hostRule(await networks.addHostRule(request.body))),
  );
  app.delete('/api/v1/firewall/host-rules/:id', { config: { permission: 'network.write' }, schema: { tags: ['networks'], summary: 'Remove a host rule', params: Ref, response: { 204: Type.Null(), ...errorResponses } } }, async (request, reply) => {
    await networks.deleteHostRule(request.params.id);
    return reply.code(204).send(null);
  });

  // ---------------------------------------------------------------- a VM's NICs and firewall
  app.get('/api/v1/vms/:id/networks', { config: { permission: 'network.read' }, schema: { tags: ['networks'], summary: 'A VM\'s NICs on Drover networks (address, MAC, tap, security groups)', params: Ref, response: { 200: Items(VmNicView), ...errorResponses } } }, async (request) => ({
    items: await networks.publicNics((await vms.find(request.params.id)).id),
  }));
  app.put('/api/v1/vms/:id/networks/:index/security-groups', { config: { permission: 'network.write' }, schema: { tags: ['networks'], summary: 'Attach and detach security groups: the NIC gets exactly these (versioned by the NIC\'s rev); its host is pushed at once', params: NicRef, body: NicSecurityGroupsPut, response: { 200: VmNicView, ...errorResponses } } }, async (request) => {
    const vm = await vms.find(request.params.id);
    const index = position(request.params.index, 'NIC');
    await networks.setNicGroups(vm, index, request.body.securityGroups, expectedRev(request));
    return (await networks.publicNics(vm.id)).find((nic) => nic.index === index)!;
  });
  app.get('/api/v1/vms/:id/firewall', { config: { permission: 'network.read' }, schema: { tags: ['networks'], summary: 'The VM\'s effective firewall: per NIC the defaults and the rules of its groups, the host rules, the lines loaded on its host (`drover fw explain`)', params: Ref, response: { 200: FirewallExplain, ...errorResponses } } }, async (request) =>
    networks.explain(await vms.find(request.params.id)),
  );
}
