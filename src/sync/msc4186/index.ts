// MSC4186 (simplified sliding sync) as the engine asks it: every request complete in itself (no
// sticky parameters; room subscriptions are those of the request carrying them, as in Synapse),
// lists in recency order with one SYNC op per range, rooms sent as deltas whenever they come
// back into view, and responses computed incrementally.

import type { RoomMetaCache } from '../../cache/room-meta-cache.js';
import type { UserCache } from '../../cache/user-cache.js';
import type { Connection } from '../connections.js';
import type { SyncProtocol, Windows } from '../protocol.js';
import type { SyncRequest, SyncResponse } from '../types.js';
import { computeList, isListable } from './lists.js';
import { msc4186Rooms } from './rooms.js';

/** Recency order, one SYNC op per range, nothing remembered. */
function windows(metas: RoomMetaCache, conn: Connection, user: UserCache, req: SyncRequest): Windows {
  // Only rooms the user left themself can drop out; without any, the order is used as it is
  // (computeList copies what it keeps).
  const candidates = user.selfLeft.size ? user.order.filter((id) => isListable(id, user, conn.stream)) : user.order;
  const lists: SyncResponse['lists'] = Object.create(null);
  const listRooms = new Map<string, string[]>();
  for (const [name, list] of req.lists) {
    const window = computeList(list, candidates, user, metas);
    lists[name] = window.result;
    listRooms.set(name, window.roomIds);
  }
  return { lists, listRooms, memory: {}, changed: false };
}

const NO_EXTRA_ROOMS: [string, never][] = [];

export function createMsc4186(metas: RoomMetaCache): SyncProtocol {
  return {
    name: 'msc4186',
    connectionId: (connId) => connId,
    effectiveRequest: (_conn, req) => ({ req, memory: {} }),
    // rust-sdk sends its whole set every time and ends one by leaving it out (a room left out
    // keeps its connection memory, so a re-subscription gets a delta).
    subscriptions(_held, req) {
      const subs = new Map(req.roomSubscriptions);
      for (const roomId of req.unsubscribeRooms) subs.delete(roomId);
      return [...subs];
    },
    incremental: true,
    windows: async (conn, user, req) => windows(metas, conn, user, req),
    scope: () => ({ extraRooms: () => NO_EXTRA_ROOMS, reentered: () => false }),
    roomRules: async () => msc4186Rooms,
  };
}
