// Lists: filter the user's recency-ordered rooms, count them, and cut windows by ranges.
// Every MSC4186 filter works here, including `spaces` and `room_name_like` (Synapse 500s on
// both), and a list without ranges means all of its rooms.
import type { RoomMetaCache } from '../cache/room-meta-cache.js';
import type { UserCache } from '../cache/user-cache.js';
import type { ListFilters, ListRequest, ListResult } from './types.js';

export function matchesFilters(roomId: string, f: ListFilters | undefined, user: UserCache, metas: RoomMetaCache): boolean {
  if (!f) return true;
  const room = user.rooms.get(roomId);
  const meta = metas.get(roomId);
  if (!room) return false;
  if (f.isDm !== undefined && user.dmRooms.has(roomId) !== f.isDm) return false;
  if (f.isInvite !== undefined && (room.membership === 'invite') !== f.isInvite) return false;
  if (f.isEncrypted !== undefined && (meta?.encrypted ?? false) !== f.isEncrypted) return false;
  if (f.roomTypes || f.notRoomTypes) {
    // Unknown (e.g. an invite without create state) counts as untyped.
    const type = meta?.roomType ?? null;
    if (f.notRoomTypes?.includes(type)) return false;
    if (f.roomTypes && !f.roomTypes.includes(type)) return false;
  }
  if (f.tags || f.notTags) {
    const tags = user.tags.get(roomId);
    if (f.notTags?.some((t) => tags?.has(t))) return false;
    if (f.tags && !f.tags.some((t) => tags?.has(t))) return false;
  }
  if (f.spaces) {
    const inSpace = f.spaces.some((space) => user.rooms.get(space)?.membership === 'join' && metas.get(space)?.spaceChildren.has(roomId));
    if (!inSpace) return false;
  }
  if (f.roomNameLike !== undefined) {
    const name = meta?.name ?? '';
    if (!name.toLowerCase().includes(f.roomNameLike.toLowerCase())) return false;
  }
  return true;
}

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

export interface ListWindow {
  result: ListResult;
  /** Room ids inside the list's ranges. */
  roomIds: string[];
}

export function computeList(list: ListRequest, candidates: readonly string[], user: UserCache, metas: RoomMetaCache): ListWindow {
  const filtered = candidates.filter((id) => matchesFilters(id, list.filters, user, metas));
  const count = filtered.length;
  if (!list.ranges) {
    return { result: { count, ops: count ? [{ op: 'SYNC', range: [0, count - 1], room_ids: filtered }] : [] }, roomIds: filtered };
  }
  const roomIds = new Set<string>();
  const ops: ListResult['ops'] = [];
  for (const [start, end] of list.ranges) {
    const slice = filtered.slice(start, end + 1);
    for (const id of slice) roomIds.add(id);
    ops.push({ op: 'SYNC', range: [start, end], room_ids: slice });
  }
  return { result: { count, ops }, roomIds: [...roomIds] };
}
