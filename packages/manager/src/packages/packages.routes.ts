import { createReadStream } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest, RawServerDefault } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { Logger } from 'pino';
import { Type } from 'typebox';
import { errors } from '@drover/core';
import { ActionQuery, ErrorBody, Operation, Package, PackageExport, PackageImportQuery, PackageImportUrl, PackageTrustedKey, PackageTrustedKeyCreate, evaMediaType } from '@drover/api';
import type { OperationRecord } from '../store/index.js';
import { publicPackage, publicTrustedKey, type PackageService } from './package.service.js';

type ManagerApp = FastifyInstance<RawServerDefault, IncomingMessage, ServerResponse, Logger, TypeBoxTypeProvider>;
type Answer = { status: number; body: unknown };

export interface PackageRouteDeps {
  packages: PackageService;
  idempotent: (request: FastifyRequest, reply: FastifyReply, run: (key: string | undefined) => Promise<Answer>) => Promise<FastifyReply>;
  operationAnswer: (op: OperationRecord, wait: boolean | undefined) => Promise<Answer>;
  actor: (request: FastifyRequest) => string;
}

const errorResponses = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody, 413: ErrorBody, 503: ErrorBody };
/** A package: its id, "name:version", or a name with one version. */
const Ref = Type.Object({ id: Type.String({ minLength: 1, maxLength: 100, pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]*(:[A-Za-z0-9_.+-]+)?$' }) }, { additionalProperties: false });
const UploadQuery = Type.Object({ ...ActionQuery.properties, ...PackageImportQuery.properties }, { additionalProperties: false });
const KeyRef = Type.Object({ key: Type.String({ minLength: 1, maxLength: 100, description: 'The key id (64 hex digits) or the name' }) }, { additionalProperties: false });

/** Appliance packages (docs/eva-packages.md): thin, the PackageService holds the logic. */
export async function registerPackageRoutes(app: ManagerApp, deps: PackageRouteDeps): Promise<void> {
  const { packages, idempotent, operationAnswer, actor } = deps;
  app.get('/api/v1/packages', { config: { permission: 'package.read' }, schema: { tags: ['packages'], summary: 'List the imported appliance packages', response: { 200: Type.Object({ items: Type.Array(Package) }), ...errorResponses } } }, async () => ({
    items: (await packages.list()).map(publicPackage),
  }));
  app.get('/api/v1/packages/trusted-keys', { config: { permission: 'package.read' }, schema: { tags: ['packages'], summary: 'List the publisher keys trusted for packages (besides the VMcasting keys)', response: { 200: Type.Object({ items: Type.Array(PackageTrustedKey) }), ...errorResponses } } }, async () => ({
    items: (await packages.listTrustedKeys()).map(publicTrustedKey),
  }));
  app.post('/api/v1/packages/trusted-keys', { config: { permission: 'package.write' }, schema: { tags: ['packages'], summary: 'Trust a publisher\'s Ed25519 key for package signatures', body: PackageTrustedKeyCreate, response: { 201: PackageTrustedKey, ...errorResponses } } }, async (request, reply) =>
    reply.status(201).send(publicTrustedKey(await packages.addTrustedKey(request.body.name, request.body.publicKey))),
  );
  app.delete('/api/v1/packages/trusted-keys/:key', { config: { permission: 'package.write' }, schema: { tags: ['packages'], summary: 'Stop trusting a publisher key for packages', params: KeyRef, response: { 204: Type.Null(), ...errorResponses } } }, async (request, reply) => {
    await packages.removeTrustedKey(request.params.key);
    return reply.status(204).send(null);
  });
  app.get('/api/v1/packages/:id', { config: { permission: 'package.read' }, schema: { tags: ['packages'], summary: 'Show a package: its manifest and the library image of each of its files', params: Ref, response: { 200: Package, ...errorResponses } } }, async (request) =>
    publicPackage(await packages.find(request.params.id)),
  );
  app.get('/api/v1/packages/:id/file', { config: { permission: 'package.read' }, schema: { tags: ['packages'], summary: 'Download the package\'s signed .eva file', params: Ref } }, async (request, reply) => {
    const { file, size, name } = await packages.file(request.params.id);
    void reply.header('content-type', evaMediaType).header('content-length', String(size)).header('content-disposition', `attachment; filename="${name}"`);
    return reply.send(createReadStream(file));
  });
  app.delete('/api/v1/packages/:id', { config: { permission: 'package.write' }, schema: { tags: ['packages'], summary: 'Delete a package, its file and its library images (refused while a VM uses one)', params: Ref, response: { 204: Type.Null(), ...errorResponses } } }, async (request, reply) => {
    await packages.remove(request.params.id);
    return reply.status(204).send(null);
  });
  app.post(
    '/api/v1/packages/export',
    {
      config: { permission: 'package.write' },
      schema: { tags: ['packages'], summary: 'Export stopped VMs, or a stopped lab, as a signed .eva package (standalone disks, manifest from their records or the lab\'s manifest); the package is kept here and downloadable (an operation)', querystring: ActionQuery, body: PackageExport, response: { 200: Operation, 202: Operation, ...errorResponses } },
    },
    async (request, reply) => idempotent(request, reply, async (key) => operationAnswer(await packages.submitExport(request.body, actor(request), key), request.query.wait)),
  );
  app.post(
    '/api/v1/packages/import',
    {
      config: { permission: 'package.write' },
      schema: { tags: ['packages'], summary: 'Import an .eva package from {url}: downloaded, extracted into a staging directory, verified, then entered into the library (an operation)', querystring: ActionQuery, body: PackageImportUrl, response: { 200: Operation, 202: Operation, ...errorResponses } },
    },
    async (request, reply) => {
      return idempotent(request, reply, async (key) => operationAnswer(await packages.submitUrl(request.body, actor(request), key), request.query.wait));
    },
  );
  // The upload takes the raw body as a stream (never buffered whole): in its own scope, so only it accepts octet-stream.
  await app.register(async (scope) => {
    const upload = scope as unknown as ManagerApp;
    upload.addContentTypeParser(['application/octet-stream', evaMediaType], { bodyLimit: Number.MAX_SAFE_INTEGER }, (_request, payload, done) => done(null, payload));
    upload.post(
      '/api/v1/packages/import/upload',
      {
        bodyLimit: Number.MAX_SAFE_INTEGER,
        config: { permission: 'package.write' },
        schema: { tags: ['packages'], summary: 'Import an .eva package (or an OVA with ?kind=ova) sent as the request body (application/octet-stream), streamed to disk, then checked like any import (an operation)', querystring: UploadQuery, response: { 200: Operation, 202: Operation, ...errorResponses } },
      },
      async (request, reply) => {
        const body = request.body as Readable | undefined;
        if (!body || typeof (body as Partial<Readable>).pipe !== 'function') throw errors.invalid(`The package must be sent as application/octet-stream or ${evaMediaType}`);
        // Not through `idempotent`: a streamed body cannot be hashed before it is read (an upload is not replayed).
        const answer = await operationAnswer(await packages.submitUpload(body, actor(request), undefined, request.query), request.query.wait);
        return reply.status(answer.status as 200).send(answer.body as never);
      },
    );
  });
}
