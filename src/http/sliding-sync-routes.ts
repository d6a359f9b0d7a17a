// POST …/org.matrix.simplified_msc3575/sync: MSC4186 on the wire, the engine underneath.
// A client's first request for a new device waits until that device's initial v2 sync is
// stored; a client that hangs up stops the work (and commits nothing).
import type { FastifyInstance } from 'fastify';
import type { DeviceRegistry } from '../poller/device-registry.js';
import type { SyncEngine } from '../sync/engine.js';
import { toJson } from '../sync/json.js';
import { accessToken } from './access-token.js';
import { disconnectSignal } from './disconnect.js';
import { parseMsc4186 } from './msc4186-schema.js';

export const MSC4186_PATH = '/_matrix/client/unstable/org.matrix.simplified_msc3575/sync';

export interface SlidingSyncDeps {
  registry: DeviceRegistry;
  engine: SyncEngine;
}

export function slidingSyncRoutes(app: FastifyInstance, deps: SlidingSyncDeps) {
  app.post(MSC4186_PATH, async (request, reply) => {
    const token = accessToken(request);
    const { request: syncRequest, txnId } = parseMsc4186(request.query, request.body);
    const signal = disconnectSignal(reply);
    try {
      const device = await deps.registry.authenticate(token, signal);
      await deps.registry.waitForInitialSync(device, signal);
      const response = await deps.engine.sync(device, syncRequest, signal);
      return reply
        .header('content-type', 'application/json; charset=utf-8')
        .send(toJson(txnId === undefined ? response : { ...response, txn_id: txnId }));
    } catch (err) {
      // Nobody is listening any more: nothing to answer, nothing worth logging.
      if (signal.aborted) return reply.code(499).send();
      throw err;
    }
  });
}
