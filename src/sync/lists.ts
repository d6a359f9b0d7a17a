// List filters, as both protocols apply them to the user's ordered rooms before cutting windows
// (msc4186/lists.ts, msc3575/lists.ts). Every filter works here, including `spaces` and
// `room_name_like` (Synapse 500s on both).
import type { RoomMetaCache } from '../cache/room-meta-cache.js';
import type { UserCache } from '../cache/user-cache.js';
import type { ListFilters, ListResult } from './types.js';

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

export interface ListWindow {
  result: ListResult;
  /** Room ids inside the list's ranges. */
  roomIds: string[];
}
