// MSC4186 responses on the wire: the engine's neutral rooms with Synapse's field names (heroes
// as user_id/displayname/avatar_url, recency as `bump_stamp`).
import type { Hero } from '../sync/heroes.js';
import type { RoomResult, SyncResponse } from '../sync/types.js';

const wireHero = (h: Hero) => ({ user_id: h.userId, displayname: h.displayname, avatar_url: h.avatarUrl });

function wireRoom({ heroes, bumpPos, bumpTs: _, ...shared }: RoomResult) {
  return { ...shared, heroes: heroes?.map(wireHero), bump_stamp: bumpPos };
}

export function msc4186Response(response: SyncResponse): Record<string, unknown> {
  const rooms: Record<string, unknown> = {};
  for (const [roomId, room] of Object.entries(response.rooms)) rooms[roomId] = wireRoom(room);
  return { ...response, rooms };
}
