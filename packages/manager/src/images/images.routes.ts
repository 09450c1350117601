import type { IncomingMessage, ServerResponse } from 'node:http';
import type { FastifyInstance, FastifyReply, FastifyRequest, RawServerDefault } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { Logger } from 'pino';
import { Type } from 'typebox';
import { ActionQuery, ErrorBody, Image, ImageImport, Operation } from '@drover/api';
import type { OperationRecord } from '../store/types.js';
import { publicImage, type ImageService } from './image.service.js';

type ManagerApp = FastifyInstance<RawServerDefault, IncomingMessage, ServerResponse, Logger, TypeBoxTypeProvider>;
type Answer = { status: number; body: unknown };

export interface ImageRouteDeps {
  images: ImageService;
  /** The server's helpers, so these changes replay an Idempotency-Key and honour ?wait=true like every other. */
  idempotent: (request: FastifyRequest, reply: FastifyReply, run: (key: string | undefined) => Promise<Answer>) => Promise<FastifyReply>;
  operationAnswer: (op: OperationRecord, wait: boolean | undefined) => Promise<Answer>;
  actor: (request: FastifyRequest) => string;
}

const errorResponses = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody, 413: ErrorBody, 503: ErrorBody };
/** An image in a URL: its id, "name:version", or a name that has one version (at most 100 characters, the router's limit for a path segment). */
const ImageParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 100, pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]*(:[A-Za-z0-9_.+-]+)?$' }) }, { additionalProperties: false });

/**
 * The image library's changes and single reads (the list is `GET /api/v1/images`
 * in server.ts): import from a URL or an allowed path, show, delete. Thin: the
 * ImageService holds the logic; imports and deletes are operations.
 */
export async function registerImageRoutes(app: ManagerApp, deps: ImageRouteDeps): Promise<void> {
  const { images, idempotent, operationAnswer, actor } = deps;
  app.post(
    '/api/v1/images',
    {
      config: { permission: 'image.write' },
      schema: {
        tags: ['images'],
        summary: 'Import a disk image (qcow2 or raw, stored as qcow2) or an ISO from {url} or {path}: downloaded or copied, inspected as untrusted, then registered (an operation)',
        querystring: ActionQuery,
        body: ImageImport,
        response: { 200: Operation, 202: Operation, ...errorResponses },
      },
    },
    async (request, reply) => idempotent(request, reply, async (key) => operationAnswer(await images.submitImport(request.body, actor(request), key), request.query.wait)),
  );
  app.get('/api/v1/images/:id', { config: { permission: 'image.read' }, schema: { tags: ['images'], summary: 'Show an image (by id, name:version, or a name with one version)', params: ImageParams, response: { 200: Image, ...errorResponses } } }, async (request) =>
    publicImage(await images.find(request.params.id)),
  );
  app.delete(
    '/api/v1/images/:id',
    { config: { permission: 'image.write' }, schema: { tags: ['images'], summary: 'Delete an imported image no VM uses, from the library and from every online host (an operation)', params: ImageParams, querystring: ActionQuery, response: { 200: Operation, 202: Operation, ...errorResponses } } },
    async (request, reply) => idempotent(request, reply, async (key) => operationAnswer(await images.submitDelete(request.params.id, actor(request), key), request.query.wait)),
  );
}
