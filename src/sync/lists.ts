// Lists: filter the user's ordered rooms, count them, and cut windows by ranges: for MSC4186
// one SYNC op per range every time, for MSC3575 the ops that turn the client's copy of the
// window into the new one. Every filter works here, including `spaces` and `room_name_like`
// (Synapse 500s on both), and a list without ranges means all of its rooms.
import type { RoomMetaCache } from '../cache/room-meta-cache.js';
import type { UserCache } from '../cache/user-cache.js';
import { type ListView, listOps } from './list-ops.js';
import type { ListFilters, ListRequest, ListResult } from './types.js';

/**
 * `nameOf`: the name room_name_like matches (MSC3575's calculated name); by default the room's
 * own m.room.name.
 */
export function matchesFilters(
  roomId: string,
  f: ListFilters | undefined,
  user: UserCache,
  metas: RoomMetaCache,
  nameOf: (roomId: string) => string | undefined = (id) => metas.get(id)?.name,
): boolean {
  if (!f) return true;
  const room = user.rooms.get(roomId);
  const meta = metas.get(roomId);
  if (!room) return false;
  if (f.isDm !== undefined && user.dmRooms.has(roomId) !== f.isDm) return false;
  if (f.isInvite !== undefined && (room.membership === 'invite') !== f.isInvite) return false;
  if (f.isEncrypted !== undefined && (meta?.encrypted ?? false) !== f.isEncrypted) return false;
  if (f.isTombstoned !== undefined && (meta?.tombstoned ?? false) !== f.isTombstoned) return false;
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
    const name = nameOf(roomId) ?? '';
    if (!name.toLowerCase().includes(f.roomNameLike.toLowerCase())) return false;
  }
  return true;
}

/** Whether a list filters at all (`{}` and absent filters keep every candidate). */
export function hasFilters(f: ListFilters | undefined): boolean {
  if (!f) return false;
  for (const v of Object.values(f)) if (v !== undefined) return true;
  return false;
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

/**
 * MSC3575's candidates: joined and invited rooms, without "old" rooms (tombstoned, and the user
 * has joined the successor), which only appear through include_old_rooms.
 */
export function isListable3575(roomId: string, user: UserCache, metas: RoomMetaCache): boolean {
  const room = user.rooms.get(roomId);
  if (!room || (room.membership !== 'join' && room.membership !== 'invite')) return false;
  const successor = metas.get(roomId)?.successor;
  return !(successor && user.rooms.get(successor)?.membership === 'join');
}

export interface ListWindow {
  result: ListResult;
  /** Room ids inside the list's ranges. */
  roomIds: string[];
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
