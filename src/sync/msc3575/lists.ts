// MSC3575 lists: candidates, and the ops that turn the client's copy of a window into the new
// one (list-ops.ts), with what the connection remembers of each list to compute the next.
import type { RoomMetaCache } from '../../cache/room-meta-cache.js';
import type { UserCache } from '../../cache/user-cache.js';
import type { ListWindow } from '../lists.js';
import type { ListRequest } from '../types.js';
import { type ListView, listOps } from './list-ops.js';

/**
 * MSC3575's candidates: joined and invited rooms, without "old" rooms (tombstoned, and the user
 * has joined the successor), which only appear through include_old_rooms.
 */
export function isListable(roomId: string, user: UserCache, metas: RoomMetaCache): boolean {
  const room = user.rooms.get(roomId);
  if (!room || (room.membership !== 'join' && room.membership !== 'invite')) return false;
  const successor = metas.get(roomId)?.successor;
  return !(successor && user.rooms.get(successor)?.membership === 'join');
}

/** What an MSC3575 connection remembers of a list to compute its next ops. */
export interface ListMemory {
  /** sort and filters: when they change, the client's copy is invalidated. */
  key: string;
  count: number;
  view: ListView;
}

/** The whole list, for MSC3575 lists without ranges and with slow_get_all_rooms. */
const WHOLE_LIST: [number, number][] = [[0, Number.MAX_SAFE_INTEGER]];

/** MSC3575: `ordered` is the list's filtered rooms in its sort order. */
export function computeListOps(
  list: ListRequest,
  ordered: readonly string[],
  prev: ListMemory | undefined,
): ListWindow & { memory: ListMemory; changed: boolean } {
  const key = JSON.stringify([list.sort, list.filters]);
  const reset = prev !== undefined && prev.key !== key;
  const { ops, view } = listOps(prev?.view, list.ranges ?? WHOLE_LIST, ordered, reset);
  const memory = { key, count: ordered.length, view };
  return {
    result: { count: ordered.length, ops },
    roomIds: [...new Set(view.ids.flat())],
    memory,
    changed: ops.length > 0 || prev?.count !== ordered.length,
  };
}
