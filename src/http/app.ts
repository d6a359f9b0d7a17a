// Builds the Fastify app from its dependencies without listening, so tests can run the whole
// server on port 0 (or through inject) and main.ts stays a thin composition root.
import { randomUUID } from 'node:crypto';
import Fastify, { type FastifyInstance, type FastifyServerOptions, LogController } from 'fastify';
import { notJson } from '../matrix-error.js';
import type { ErrorReporter } from '../telemetry/error-reporting.js';
import type { Logger } from '../telemetry/logger.js';
import { type ClientPageDeps, clientPageRoutes } from './client-page-routes.js';
import { cors } from './cors.js';
import { errorHandler, notFoundHandler } from './error-handler.js';
import { type FrontDoorDeps, frontDoorRoutes } from './front-door-routes.js';
import { healthRoutes, type ReadinessCheck } from './health-routes.js';
import { type SlidingSyncDeps, slidingSyncRoutes } from './sliding-sync-routes.js';

export interface AppDeps {
  logger: Logger;
  ready: ReadinessCheck;
  /** Absent in tests of the bare service. */
  slidingSync?: SlidingSyncDeps;
  /** /versions, /client/server.json and forwarding to the homeserver; absent in tests of the bare service. */
  frontDoor?: FrontDoorDeps;
  /** The /client/ page and its status endpoint; absent in tests of the bare service. */
  clientPage?: ClientPageDeps;
  /** Receives unexpected errors (500s); absent: they are only logged. */
  errors?: ErrorReporter;
}

export interface AppOptions {
  /** Largest request body accepted, in bytes. */
  bodyLimit?: number;
  https?: { cert: Buffer; key: Buffer };
}

export const DEFAULT_BODY_LIMIT = 1024 * 1024;

export function buildApp(deps: AppDeps, opts: AppOptions = {}): FastifyInstance {
  const bodyLimit = opts.bodyLimit ?? DEFAULT_BODY_LIMIT;
  const base: FastifyServerOptions = {
    loggerInstance: deps.logger,
    bodyLimit,
    requestIdHeader: 'x-request-id',
    genReqId: () => randomUUID(),
    // Long-polls hold a request up to the client's timeout; keep-alive sockets outlive them.
    keepAliveTimeout: 75_000,
    // On close, drop idle keep-alive sockets at once; busy ones finish their request first.
    forceCloseConnections: 'idle',
    return503OnClosing: true,
    // Fastify's request log lines carry the full URL, and clients may put `access_token` in the
    // query string; ours below logs the path only.
    logController: new LogController({ disableRequestLogging: true }),
  };
  // Fastify types HTTPS servers apart; routes and hooks are the same, so one type serves both.
  const app = (opts.https ? Fastify({ ...base, https: opts.https } as FastifyServerOptions) : Fastify(base)) as FastifyInstance;
  app.setErrorHandler(errorHandler(bodyLimit, deps.errors));
  // Like Synapse, read any request body as JSON whatever its Content-Type: clients (and curl)
  // do not all send application/json, and a browser's fetch of a string sends text/plain.
  // Fastify's own parsers would win for their types, so they go.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'string' }, (_request, body, done) => {
    try {
      done(null, JSON.parse(body as string));
    } catch {
      done(notJson(body === '' ? 'Request body is empty' : undefined), undefined);
    }
  });
  app.setNotFoundHandler(notFoundHandler);
  cors(app);
  app.addHook('onResponse', async (request, reply) => {
    request.log.debug(
      { method: request.method, path: request.url.split('?')[0], status: reply.statusCode, ms: Math.round(reply.elapsedTime) },
      'request',
    );
  });
  healthRoutes(app, deps.ready);
  if (deps.slidingSync) slidingSyncRoutes(app, deps.slidingSync);
  if (deps.frontDoor) frontDoorRoutes(app, deps.frontDoor);
  if (deps.clientPage) clientPageRoutes(app, deps.clientPage);
  return app;
}
