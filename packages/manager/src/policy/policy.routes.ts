import type { FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import { ErrorBody, LabelledKind, PolicyExplainQuery, PolicyExplanation, PolicyFormat, PolicyInfo, PolicyLoad, PolicyValidation, SecurityLabelInfo, SecurityLabelRef } from '@drover/api';
import type { ManagerApp } from '../http/app-type.js';
import type { VmService } from '../vms/vm.service.js';

export interface PolicyRouteDeps {
  vms: VmService;
  actor(request: FastifyRequest): string;
}

const errorResponses = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody, 413: ErrorBody };
const LabelAssign = Type.Object(
  {
    kind: LabelledKind,
    object: Type.String({ minLength: 1, maxLength: 300, description: 'Host or image: id or name; volume: <host>/<pool>/<volume>; network: its name' }),
    label: Type.Union([SecurityLabelRef, Type.Null()], { description: 'ACM:<policy>:<label>, or null to remove the label' }),
  },
  { additionalProperties: false },
);

/**
 * The sHype policy (docs/access-control-policy.md): load (Xen ACM XML or the
 * native YAML/JSON), show, export, validate, labels of hosts and resources,
 * and explain. Thin: the logic is in policy.service.ts.
 */
export async function registerPolicyRoutes(app: ManagerApp, { vms, actor }: PolicyRouteDeps): Promise<void> {
  const policy = vms.policy;
  app.get('/api/v1/policy', { config: { permission: 'policy.read' }, schema: { tags: ['policy'], summary: 'Show the active security policy (404 when none is loaded)', response: { 200: PolicyInfo, ...errorResponses } } }, async () => policy.info());

  app.put(
    '/api/v1/policy',
    {
      config: { permission: 'policy.write' },
      schema: {
        tags: ['policy'],
        summary: "Load a security policy (Xen ACM XML or native YAML/JSON) as the active one; everything running is re-checked and a policy it would violate is refused (409) with the list of conflicts",
        body: PolicyLoad,
        response: { 200: PolicyInfo, ...errorResponses },
      },
    },
    async (request) => policy.load(request.body, actor(request)),
  );

  app.post(
    '/api/v1/policy/validate',
    { config: { permission: 'policy.read' }, schema: { tags: ['policy'], summary: 'Check a policy document without loading it: its problems, and what running VMs would violate', body: PolicyLoad, response: { 200: PolicyValidation, ...errorResponses } } },
    async (request) => policy.validate(request.body),
  );

  app.get(
    '/api/v1/policy/export',
    {
      config: { permission: 'policy.read' },
      schema: { tags: ['policy'], summary: 'The active policy as Xen ACM XML or native YAML/JSON (text)', querystring: Type.Object({ format: Type.Optional(PolicyFormat) }, { additionalProperties: false }), response: { 200: Type.String(), ...errorResponses } },
    },
    async (request, reply) => {
      const { text, contentType } = await policy.export(request.query.format ?? 'yaml');
      return reply.type(contentType).send(text);
    },
  );

  app.get('/api/v1/policy/labels', { config: { permission: 'policy.read' }, schema: { tags: ['policy'], summary: 'Security labels of hosts, volumes, images and networks (VM labels are in each VM)', response: { 200: Type.Array(SecurityLabelInfo), ...errorResponses } } }, async () =>
    policy.labels(),
  );

  app.put(
    '/api/v1/policy/labels',
    {
      config: { permission: 'policy.write' },
      schema: { tags: ['policy'], summary: 'Label a host (a VM label; unlabelled hosts carry the bootstrap label), a volume, an image or a network (a resource label), or remove a label', body: LabelAssign, response: { 200: Type.Union([SecurityLabelInfo, Type.Null()]), ...errorResponses } },
    },
    async (request) => policy.setLabel(request.body.kind, request.body.object, request.body.label),
  );

  app.get(
    '/api/v1/policy/explain',
    { config: { permission: 'policy.read' }, schema: { tags: ['policy'], summary: 'Why a VM may or may not start on, migrate to or be restored on a host: the policy rules, then every scheduler filter', querystring: PolicyExplainQuery, response: { 200: PolicyExplanation, ...errorResponses } } },
    async (request) => policy.explain(await vms.find(request.query.vm), request.query.host),
  );
}
