// The sliding sync endpoints, one engine underneath: POST …/org.matrix.simplified_msc3575/sync
// (MSC4186) and POST …/org.matrix.msc3575/sync (MSC3575, also on POST /v3/sync when the body
// is a sliding sync one, as the Go proxy served it). Each protocol has a request adapter (its
// wire body to the engine's request) and a response adapter (the engine's neutral response to
// its wire shape). A client's first request for a new device
// waits until that device's initial v2 sync is stored; a client that hangs up stops the work
// (and commits nothing).
//
// Each request gets a span (user_id, device_id, conn_id) and, once answered, one access log
// line at info level with the Go proxy's compact fields: u user, dev device, p pos in, q pos
// out, c conn_id, t txn_id, l lists (name: count), r rooms sent, d to-device messages sent,
// status, and `duration` as "total(setup+processing)": setup is authentication and waiting for
// the device's initial sync, processing the engine's work without long-poll waiting.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Authenticator } from '../auth/authenticator.js';
import { MatrixError } from '../matrix-error.js';
import type { SyncEngine, SyncTiming } from '../sync/engine.js';
import { toJson } from '../sync/json.js';
import type { SyncResponse } from '../sync/types.js';
import { SLOW_REQUEST_SECS } from '../telemetry/metrics.js';
import type { Telemetry } from '../telemetry/telemetry.js';
import { noopTracer } from '../telemetry/tracing.js';
import { accessToken } from './access-token.js';
import { disconnectSignal } from './disconnect.js';
import { isSlidingSyncBody, parseMsc3575 } from './msc3575-request.js';
import { msc3575Response } from './msc3575-response.js';
import { type ParsedSync, parseMsc4186 } from './msc4186-request.js';
import { msc4186Response } from './msc4186-response.js';
import { rememberDevice } from './request-device.js';

export const MSC4186_PATH = '/_matrix/client/unstable/org.matrix.simplified_msc3575/sync';
export const MSC3575_PATH = '/_matrix/client/unstable/org.matrix.msc3575/sync';
const V3_SYNC_PATH = '/_matrix/client/v3/sync';

/** One protocol's two adapters. */
interface Adapter {
  parse: (query: unknown, body: unknown) => ParsedSync;
  respond: (response: SyncResponse) => Record<string, unknown>;
}

const MSC4186: Adapter = { parse: parseMsc4186, respond: msc4186Response };
const MSC3575: Adapter = { parse: parseMsc3575, respond: msc3575Response };

export interface SlidingSyncDeps {
  auth: Pick<Authenticator, 'authenticate' | 'waitForInitialSync'>;
  engine: SyncEngine;
  telemetry?: Pick<Telemetry, 'metrics' | 'tracer'>;
}

/** What the access log line says about one request; never the token. */
interface Access {
  u?: string;
  dev?: string;
  p?: string;
  q?: string;
  c?: string;
  t?: string;
  l?: Record<string, number>;
  r?: number;
  d?: number;
  setupMs?: number;
  processingMs?: number;
}

const accessOf = new WeakMap<FastifyRequest, Access>();

const ms = (n: number) => `${n.toFixed(1)}ms`;

function logAccess(request: FastifyRequest, reply: FastifyReply, metrics: Telemetry['metrics'] | undefined) {
  const { setupMs, processingMs, ...fields } = accessOf.get(request) ?? {};
  const total = reply.elapsedTime;
  // As the Go proxy counts them: the whole request, long-poll wait included.
  if (total >= SLOW_REQUEST_SECS * 1000) {
    metrics?.apiSlowRequests.inc();
    request.log.warn({ ms: Math.round(total) }, 'slow request');
  }
  const split = setupMs === undefined ? '' : `(${ms(setupMs)}+${processingMs === undefined ? '?' : ms(processingMs)})`;
  request.log.info({ ...fields, status: reply.statusCode, duration: `${ms(total)}${split}`, ms: Math.round(total) }, 'sliding sync');
}

function toDeviceCount(response: SyncResponse): number {
  const toDevice = response.extensions.to_device as { events?: unknown[] } | undefined;
  return toDevice?.events?.length ?? 0;
}

export function slidingSyncRoutes(app: FastifyInstance, deps: SlidingSyncDeps) {
  const tracer = deps.telemetry?.tracer ?? noopTracer;
  const metrics = deps.telemetry?.metrics;
  const serve = (route: string, adapter: Adapter) => async (request: FastifyRequest, reply: FastifyReply) => {
    const access: Access = {};
    accessOf.set(request, access);
    const token = accessToken(request);
    const { request: syncRequest, txnId } = adapter.parse(request.query, request.body);
    access.p = syncRequest.pos;
    access.c = syncRequest.connId || undefined;
    access.t = txnId;
    const initial = String(syncRequest.pos === undefined);
    const signal = disconnectSignal(reply);
    const attributes = { 'http.route': route, conn_id: syncRequest.connId, initial: syncRequest.pos === undefined };
    return tracer.run(
      `POST ${route}`,
      attributes,
      async (span) => {
        try {
          const started = performance.now();
          const device = await deps.auth.authenticate(token, signal);
          rememberDevice(request, device);
          access.u = device.userId;
          access.dev = device.deviceId;
          span.setAttributes({ user_id: device.userId, device_id: device.deviceId });
          await deps.auth.waitForInitialSync(device, signal);
          const setupDone = performance.now();
          access.setupMs = setupDone - started;
          metrics?.apiSetupDuration.observe({ initial }, access.setupMs / 1000);
          const timing: SyncTiming = { waitMs: 0 };
          const response = await deps.engine.sync(device, syncRequest, signal, timing);
          access.processingMs = performance.now() - setupDone - timing.waitMs;
          metrics?.apiProcessDuration.observe({ initial }, access.processingMs / 1000);
          access.q = response.pos;
          access.l = Object.fromEntries(Object.entries(response.lists).map(([name, list]) => [name, list.count]));
          access.r = Object.keys(response.rooms).length;
          access.d = toDeviceCount(response);
          const wire = adapter.respond(response);
          return reply
            .header('content-type', 'application/json; charset=utf-8')
            .send(toJson(txnId === undefined ? wire : { ...wire, txn_id: txnId }));
        } catch (err) {
          // Nobody is listening any more: nothing to answer, nothing worth logging.
          if (signal.aborted) return reply.code(499).send();
          throw err;
        }
      },
      'server',
    );
  };
  const logged = { onResponse: async (request: FastifyRequest, reply: FastifyReply) => logAccess(request, reply, metrics) };
  app.post(MSC4186_PATH, logged, serve(MSC4186_PATH, MSC4186));
  app.post(MSC3575_PATH, logged, serve(MSC3575_PATH, MSC3575));
  const msc3575 = serve(V3_SYNC_PATH, MSC3575);
  // Classic /sync is GET only (and forwarded); a POST is sliding sync or nothing.
  app.post(V3_SYNC_PATH, logged, async (request, reply) => {
    if (!isSlidingSyncBody(request.body)) throw new MatrixError(405, 'M_UNRECOGNIZED', 'Unrecognized request');
    return msc3575(request, reply);
  });
}
