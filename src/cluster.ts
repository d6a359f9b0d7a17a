// Wiring of SYNCV3_CLUSTER's bus: the cluster bus over PostgreSQL NOTIFY/LISTEN (store/), and
// the catch-up that turns "what was stored after P" into the bus messages a listener that
// dropped may have missed.

import type { Envelope } from './bus/bus.js';
import { type ClusterBus, createClusterBus } from './bus/cluster-bus.js';
import type { Lifecycle } from './lifecycle.js';
import { type ChangesSince, changesSince, listen, notify, notifyInTransaction } from './store/bus-channel.js';
import type { Pool, Queryable } from './store/db.js';
import type { Logger } from './telemetry/logger.js';
import type { Telemetry } from './telemetry/telemetry.js';

/** The messages an ingest would have sent for these changes (the position first). */
export function catchUpMessages(after: number, c: ChangesSince): Envelope[] {
  const pos = c.pos;
  const out: Envelope[] = [{ topic: 'stream.advanced', message: { pos } }];
  // A rewrite in place (a redaction, a gap healed) missed while the listener was down would leave
  // this process's in-memory copies of the room stale: every room that changed drops them.
  if (c.rooms.length) out.push({ topic: 'room.rewritten', message: { roomIds: c.rooms.map((r) => r.roomId) } });
  for (const r of c.rooms) {
    out.push({
      topic: 'room.changed',
      message: {
        roomId: r.roomId,
        pos,
        newEvents: r.latestNid > after ? 1 : 0,
        statePos: r.statePos > after ? r.statePos : undefined,
        latestNid: r.latestNid,
        bump: r.bumpNid ? { nid: r.bumpNid, ts: r.bumpTs } : undefined,
      },
    });
  }
  for (const roomId of c.receiptRooms) out.push({ topic: 'room.receipts', message: { roomId, pos } });
  for (const u of c.userRooms) out.push({ topic: 'user.rooms_changed', message: { userId: u.userId, roomIds: u.roomIds, pos } });
  for (const a of c.accountData) out.push({ topic: 'user.account_data', message: { userId: a.userId, types: a.types, pos } });
  for (const d of c.devices) out.push({ topic: 'device.data', message: { ...d, pos } });
  return out;
}

/** The cluster bus, listening before it is returned (so nothing committed from now on is missed). */
export async function startClusterBus(
  processId: string,
  pool: Pool,
  logger: Logger,
  telemetry: Pick<Telemetry, 'metrics' | 'errors'>,
  lifecycle: Lifecycle,
): Promise<ClusterBus> {
  const bus = createClusterBus(
    processId,
    {
      notifyInTransaction: (tx, payloads) => notifyInTransaction(tx as Queryable, payloads),
      notify: (payloads) => notify(pool, payloads),
      changesSince: async (after) => {
        const changes = await changesSince(pool, after);
        return { pos: changes.pos, messages: catchUpMessages(after, changes).slice(1) };
      },
    },
    logger,
    telemetry,
  );
  const listener = await listen(
    pool,
    logger,
    (payload) => bus.received(payload),
    () => bus.catchUp(),
  );
  lifecycle.onStop('bus listener', () => listener.close());
  return bus;
}
