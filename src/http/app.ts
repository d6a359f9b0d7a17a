// Builds the Fastify app from its dependencies without listening, so tests can run the whole
// server on port 0 (or through inject) and main.ts stays a thin composition root.
import { randomUUID } from 'node:crypto';
import Fastify, { type FastifyInstance, type FastifyServerOptions, LogController } from 'fastify';
import { notJson } from '../matrix-error.js';
import type { ErrorReporter } from '../telemetry/error-reporting.js';
import type { Logger } from '../telemetry/logger.js';
import { bodyTimedOut, clientErrorHandler, frameworkErrors } from './client-errors.js';
import { type ClientPageDeps, clientPageRoutes } from './client-page-routes.js';
import { cors } from './cors.js';
import { errorHandler, notFoundHandler } from './error-handler.js';
import { type FrontDoorDeps, frontDoorRoutes } from './front-door-routes.js';
import { healthRoutes, type ReadinessCheck } from './health-routes.js';
import { SYNC_TIMEOUT_CAP_MS } from './input-limits.js';
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
  /** How long the body of a request the proxy answers itself may take to arrive, in ms. */
  bodyTimeoutMs?: number;
  /** The longest a forwarded response may stay silent (SYNCV3_HTTP_TIMEOUT_SECS), in ms. */
  upstreamTimeoutMs?: number;
}

const DEFAULT_BODY_LIMIT = 1024 * 1024;
/** A sliding sync body is a few KiB: even a slow phone sends it in well under this. */
const DEFAULT_BODY_TIMEOUT_MS = 10_000;
/** Request line and headers: a client that cannot send them in this long is not trying. */
const HEADERS_TIMEOUT_MS = 20_000;
/**
 * The whole request, body included, forwarded uploads too (large media over slow links):
 * a backstop, not the limit slow clients meet (that is the body timeout of our own routes).
 */
const REQUEST_TIMEOUT_MS = 1_800_000;
/** Beyond the longest silence a request may legitimately have, before its socket is closed. */
const IDLE_SOCKET_MARGIN_MS = 60_000;

/** Routes whose body is streamed on (forwarded), not read by us, say so in their config. */
export interface RouteConfig {
  streamsBody?: boolean;
}

export function buildApp(deps: AppDeps, opts: AppOptions = {}): FastifyInstance {
  const bodyLimit = opts.bodyLimit ?? DEFAULT_BODY_LIMIT;
  const base: FastifyServerOptions = {
    loggerInstance: deps.logger,
    bodyLimit,
    requestIdHeader: 'x-request-id',
    genReqId: () => randomUUID(),
    // Long-polls hold a request up to the client's timeout; keep-alive sockets outlive them.
    keepAliveTimeout: 75_000,
    // A silent socket is closed, but only after the longest a held long-poll or a forwarded
    // response may legitimately stay silent.
    connectionTimeout: Math.max(SYNC_TIMEOUT_CAP_MS, opts.upstreamTimeoutMs ?? 0) + IDLE_SOCKET_MARGIN_MS,
    requestTimeout: REQUEST_TIMEOUT_MS,
    clientErrorHandler,
    frameworkErrors,
    // On close, drop idle keep-alive sockets at once; busy ones finish their request first.
    forceCloseConnections: 'idle',
    return503OnClosing: true,
    // Fastify's request log lines carry the full URL, and clients may put `access_token` in the
    // query string; ours below logs the path only.
    logController: new LogController({ disableRequestLogging: true }),
  };
  // Fastify types HTTPS servers apart; routes and hooks are the same, so one type serves both.
  const app = (opts.https ? Fastify({ ...base, https: opts.https } as FastifyServerOptions) : Fastify(base)) as FastifyInstance;
  app.server.headersTimeout = HEADERS_TIMEOUT_MS;
  app.setErrorHandler(errorHandler(bodyLimit, deps.errors));
  const bodyTimeoutMs = opts.bodyTimeoutMs ?? DEFAULT_BODY_TIMEOUT_MS;
  app.addHook('onRequest', (request, reply, done) => {
    const streamed = (request.routeOptions.config as RouteConfig | undefined)?.streamsBody === true;
    const { 'content-length': length, 'transfer-encoding': chunked } = request.headers;
    const hasBody = chunked !== undefined || (length !== undefined && length !== '0');
    if (streamed || !hasBody || request.raw.complete) return done();
    const timer = setTimeout(() => bodyTimedOut(reply), bodyTimeoutMs);
    const clear = () => clearTimeout(timer);
    request.raw.once('end', clear).once('close', clear);
    done();
  });
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
