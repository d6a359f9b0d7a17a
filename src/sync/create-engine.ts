// Builds the serving side from a pool and a bus: the caches fed by the bus and the engine on
// top of them. Call it before any poller runs, so the sequence's current value is a committed
// position.
import type { Bus } from '../bus/bus.js';
import { AccountDataPositions } from '../cache/account-data-positions.js';
import { BumpCache } from '../cache/bump-cache.js';
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
    exactPrevBatch?: EngineDeps['exactPrevBatch'];
    onWait?: EngineDeps['onWait'];
  },
  opts: { maxConnectionsPerDevice: number; maxConnectionsInMemory: number },
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
  });
  const typing = new TypingCache(bus);
  typing.onChange((roomId) => users.roomChanged(roomId));
  const extensions = new Extensions(typing, accountData);
  const bumps = new BumpCache(pool, metas);
  const histories = new VisibilityHistories(pool, metas);
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
    bumps,
    histories,
    timelines,
    states,
    exactPrevBatch: deps.exactPrevBatch,
    onWait: deps.onWait,
  });
  // Bounded memory: users idle with nothing waiting are dropped, and with them the rooms that no
  // cached user holds.
  users.keepWhile((userId) => engine.dispatcher.hasWaiters(userId));
  users.onRoomsDropped((roomIds) => {
    metas.forget(roomIds);
    bumps.forget(roomIds);
    histories.forget(roomIds);
    timelines.forget(roomIds);
    states.forget(roomIds);
  });
  return { engine, connections, users, metas, timelines };
}
