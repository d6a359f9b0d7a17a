// MSC4186 lists: the user's rooms in recency order, filtered, counted, and cut into windows by
// ranges, one SYNC op per range every time (nothing is remembered). A list without ranges means
// all of its rooms.
import type { RoomMetaCache } from '../../cache/room-meta-cache.js';
import type { UserCache } from '../../cache/user-cache.js';
import { hasFilters, type ListWindow, matchesFilters } from '../lists.js';
import type { ListRequest, ListResult } from '../types.js';

/**
 * Rooms that may appear in lists: joined, invited, knocked, kicked and banned (until
 * forgotten), and rooms the user left themself only in the response covering the leave.
 */
export function isListable(roomId: string, user: UserCache, fromStream: number): boolean {
  const room = user.rooms.get(roomId);
  if (!room) return false;
  if (room.membership === 'leave' && !room.kicked) return fromStream > 0 && room.membershipPos > fromStream;
  return true;
}

/**
 * `candidates` may be a live order (mutated as rooms move): what is returned never aliases it.
 * Without filters nothing is copied but the windows themselves.
 */
export function computeList(list: ListRequest, candidates: readonly string[], user: UserCache, metas: RoomMetaCache): ListWindow {
  const filtered = hasFilters(list.filters) ? candidates.filter((id) => matchesFilters(id, list.filters, user, metas)) : candidates;
  const count = filtered.length;
  if (!list.ranges) {
    const all = filtered === candidates ? [...candidates] : (filtered as string[]);
    return { result: { count, ops: count ? [{ op: 'SYNC', range: [0, count - 1], room_ids: all }] : [] }, roomIds: all };
  }
  const ops: ListResult['ops'] = [];
  const slices: string[][] = [];
  for (const [start, end] of list.ranges) {
    const slice = filtered.slice(start, end + 1);
    slices.push(slice);
    ops.push({ op: 'SYNC', range: [start, end], room_ids: slice });
  }
  // One range (the usual case) holds each room once; several may overlap.
  if (slices.length === 1) return { result: { count, ops }, roomIds: slices[0] as string[] };
  const roomIds = new Set<string>();
  for (const slice of slices) for (const id of slice) roomIds.add(id);
  return { result: { count, ops }, roomIds: [...roomIds] };
}
