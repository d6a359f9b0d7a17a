// MSC3575 responses on the wire, as the Go proxy wrote them: the engine's neutral rooms with
// heroes as user_id/displayname/avatar_url (empty strings left out) and recency as `timestamp`.
import type { Hero } from '../sync/heroes.js';
import type { RoomResult, SyncResponse } from '../sync/types.js';

const wireHero = (h: Hero) => ({ user_id: h.userId, displayname: h.displayname || undefined, avatar_url: h.avatarUrl || undefined });

function wireRoom({ heroes, bumpPos: _, bumpTs, ...shared }: RoomResult) {
  return { ...shared, heroes: heroes?.map(wireHero), timestamp: bumpTs };
}

export function msc3575Response(response: SyncResponse): Record<string, unknown> {
  const rooms: Record<string, unknown> = {};
  for (const [roomId, room] of Object.entries(response.rooms)) rooms[roomId] = wireRoom(room);
  return { ...response, rooms };
}
