import type { Readable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { ErrorBody, GuestPackageOffer, GuestPackageState } from '@drover/api';
import { errors } from '@drover/core';
import { maxGuestPackageBytes, type GuestPackageStore } from './guest-packages.js';

const VmParams = Type.Object({ vm: Type.String({ minLength: 1, maxLength: 128, pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]*$' }) });
const ShaParams = Type.Object({ sha256: Type.String({ pattern: '^[0-9a-f]{64}$' }) });
const errorResponses = { 400: ErrorBody, 401: ErrorBody, 404: ErrorBody, 409: ErrorBody, 413: ErrorBody };

/**
 * Package updates for guests, pushed by the manager (agents never call the
 * manager): archives into the host's cache (checked against their sha256),
 * then each VM's offer; the metadata service serves both to that VM only and
 * takes its report, which the manager reads back here.
 */
export async function guestPackageRoutes(scope: FastifyInstance, store: GuestPackageStore): Promise<void> {
  const app = scope.withTypeProvider<TypeBoxTypeProvider>();
  app.addContentTypeParser('application/octet-stream', (_request, payload, done) => done(null, payload));
  app.get('/v1/package-cache/:sha256', { schema: { params: ShaParams, response: { 200: Type.Object({ sha256: Type.String(), present: Type.Boolean() }), ...errorResponses } } }, async (request) => ({
    sha256: request.params.sha256,
    present: store.hasArchive(request.params.sha256),
  }));
  app.put('/v1/package-cache/:sha256', { bodyLimit: maxGuestPackageBytes, schema: { params: ShaParams, response: { 201: Type.Object({ sha256: Type.String(), sizeBytes: Type.Integer() }), ...errorResponses } } }, async (request, reply) => {
    const body = request.body as Readable | undefined;
    if (!body || typeof (body as Partial<Readable>).pipe !== 'function') throw errors.invalid('The package archive must be sent as application/octet-stream');
    return reply.status(201).send(await store.putArchive(request.params.sha256, body));
  });
  app.put('/v1/vms/:vm/package-offer', { schema: { params: VmParams, body: GuestPackageOffer, response: { 200: GuestPackageOffer, ...errorResponses } } }, async (request) =>
    store.putOffer(request.params.vm, request.body),
  );
  app.delete('/v1/vms/:vm/package-offer', { schema: { params: VmParams, response: { 204: Type.Null(), ...errorResponses } } }, async (request, reply) => {
    await store.deleteOffer(request.params.vm);
    return reply.status(204).send(null);
  });
  app.get('/v1/vms/:vm/packages', { schema: { params: VmParams, response: { 200: GuestPackageState, ...errorResponses } } }, async (request) => store.state(request.params.vm));
}
