// Builds the serving side from a pool and a bus: the caches fed by the bus and the engine on
// top of them. Call it before any poller runs, so the sequence's current value is a committed
// position.
import type { Bus } from '../bus/bus.js';
import { AccountDataPositions } from '../cache/account-data-positions.js';
import { RoomMetaCache } from '../cache/room-meta-cache.js';
import { RoomStates } from '../cache/room-states.js';
import { RoomTimelines } from '../cache/room-timelines.js';
import { StreamTracker } from '../cache/stream-tracker.js';
import { TypingCache } from '../cache/typing-cache.js';
import { UserCaches } from '../cache/user-cache.js';
import { VisibilityHistories } from '../cache/visibility-histories.js';
import type { Pool } from '../store/db.js';
import { currentStreamPos } from '../store/room-reads.js';
import type { Logger } from '../telemetry/logger.js';
import type { Metrics } from '../telemetry/metrics.js';
import { ConnectionManager } from './connections.js';
import { type EngineDeps, SyncEngine } from './engine.js';
import { Extensions } from './extensions/index.js';
import { createMsc3575 } from './msc3575/index.js';
import { createMsc4186 } from './msc4186/index.js';

export interface SyncService {
  engine: SyncEngine;
  connections: ConnectionManager;
  users: UserCaches;
  metas: RoomMetaCache;
  timelines: RoomTimelines;
}

export async function createSyncService(
  deps: {
    pool: Pool;
    bus: Bus;
    logger: Logger;
    metrics?: Pick<Metrics, 'connsExpiredIdle' | 'connsDestroyed'>;
    prevBatches?: EngineDeps['prevBatches'];
    history?: EngineDeps['history'];
    onWait?: EngineDeps['onWait'];
  },
  opts: { maxConnectionsPerDevice: number; maxConnectionsInMemory: number; sharedConnections?: boolean },
): Promise<SyncService> {
  const { pool, bus, logger } = deps;
  const committed = await currentStreamPos(pool);
  const stream = new StreamTracker(bus, committed);
  const accountData = new AccountDataPositions(bus, committed);
  const metas = new RoomMetaCache(pool, bus);
  const users = new UserCaches(pool, bus, metas);
  const counters = deps.metrics && { expiredIdle: deps.metrics.connsExpiredIdle, destroyed: deps.metrics.connsDestroyed };
  const connections = new ConnectionManager(pool, {
    maxPerDevice: opts.maxConnectionsPerDevice,
    maxInMemory: opts.maxConnectionsInMemory,
    counters,
    shared: opts.sharedConnections,
  });
  const typing = new TypingCache(bus);
  typing.onChange((roomId) => users.roomChanged(roomId));
  const extensions = new Extensions(typing, accountData);
  const msc3575 = createMsc3575(pool, metas);
  const histories = new VisibilityHistories(pool, bus, metas);
  const timelines = new RoomTimelines(pool, bus);
  const states = new RoomStates(pool, bus, metas);
  const engine = new SyncEngine({
    pool,
    bus,
    logger,
    users,
    metas,
    stream,
    connections,
    extensions,
    protocols: { msc4186: createMsc4186(metas), msc3575 },
    prevBatches: deps.prevBatches,
    history: deps.history,
    histories,
    timelines,
    states,
    onWait: deps.onWait,
  });
  // Bounded memory: users idle with nothing waiting are dropped, and with them the rooms that no
  // cached user holds.
  users.keepWhile((userId) => engine.dispatcher.hasWaiters(userId));
  users.onRoomsDropped((roomIds) => {
    metas.forget(roomIds);
    msc3575.forget(roomIds);
    histories.forget(roomIds);
    timelines.forget(roomIds);
    states.forget(roomIds);
  });
  return { engine, connections, users, metas, timelines };
}
