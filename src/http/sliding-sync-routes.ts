// POST …/org.matrix.simplified_msc3575/sync: MSC4186 on the wire, the engine underneath.
// A client's first request for a new device waits until that device's initial v2 sync is
// stored; a client that hangs up stops the work (and commits nothing).
//
// Each request gets a span (user_id, device_id, conn_id) and, once answered, one access log
// line at info level with the Go proxy's compact fields: u user, dev device, p pos in, q pos
// out, c conn_id, t txn_id, l lists (name: count), r rooms sent, d to-device messages sent,
// status, and `duration` as "total(setup+processing)": setup is authentication and waiting for
// the device's initial sync, processing the engine's work without long-poll waiting.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { DeviceRegistry } from '../poller/device-registry.js';
import type { SyncEngine, SyncTiming } from '../sync/engine.js';
import { toJson } from '../sync/json.js';
import type { SyncResponse } from '../sync/types.js';
import type { Telemetry } from '../telemetry/telemetry.js';
import { noopTracer } from '../telemetry/tracing.js';
import { accessToken } from './access-token.js';
import { disconnectSignal } from './disconnect.js';
import { parseMsc4186 } from './msc4186-schema.js';

export const MSC4186_PATH = '/_matrix/client/unstable/org.matrix.simplified_msc3575/sync';

export interface SlidingSyncDeps {
  registry: DeviceRegistry;
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

function logAccess(request: FastifyRequest, reply: FastifyReply) {
  const { setupMs, processingMs, ...fields } = accessOf.get(request) ?? {};
  const total = reply.elapsedTime;
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
  app.post(MSC4186_PATH, { onResponse: async (request, reply) => logAccess(request, reply) }, async (request, reply) => {
    const access: Access = {};
    accessOf.set(request, access);
    const token = accessToken(request);
    const { request: syncRequest, txnId } = parseMsc4186(request.query, request.body);
    access.p = syncRequest.pos;
    access.c = syncRequest.connId || undefined;
    access.t = txnId;
    const initial = String(syncRequest.pos === undefined);
    const signal = disconnectSignal(reply);
    const attributes = { 'http.route': MSC4186_PATH, conn_id: syncRequest.connId, initial: syncRequest.pos === undefined };
    return tracer.run(
      `POST ${MSC4186_PATH}`,
      attributes,
      async (span) => {
        try {
          const started = performance.now();
          const device = await deps.registry.authenticate(token, signal);
          access.u = device.userId;
          access.dev = device.deviceId;
          span.setAttributes({ user_id: device.userId, device_id: device.deviceId });
          await deps.registry.waitForInitialSync(device, signal);
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
          return reply
            .header('content-type', 'application/json; charset=utf-8')
            .send(toJson(txnId === undefined ? response : { ...response, txn_id: txnId }));
        } catch (err) {
          // Nobody is listening any more: nothing to answer, nothing worth logging.
          if (signal.aborted) return reply.code(499).send();
          throw err;
        }
      },
      'server',
    );
  });
}
