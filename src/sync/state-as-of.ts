// A room the user left or was banned from shows its name and avatar as they were then, not any
// change since (no state the user could not see leaks through them).
import type { Pool } from '../store/db.js';
import { type StateSelector, stateAsOf } from '../store/room-reads.js';

const NAME_AND_AVATAR: StateSelector = { all: false, types: [], keys: [], pairTypes: ['m.room.name', 'm.room.avatar'], pairKeys: ['', ''] };

/** The room's name and avatar as of stream position `pos`. */
export async function nameAndAvatarAsOf(pool: Pool, roomId: string, pos: number): Promise<{ name?: string; avatar?: string }> {
  const out: { name?: string; avatar?: string } = {};
  for (const row of await stateAsOf(pool, roomId, pos, NAME_AND_AVATAR)) {
    const content = (JSON.parse(row.json) as { content?: Record<string, unknown> }).content ?? {};
    if (row.type === 'm.room.name' && typeof content.name === 'string' && content.name.trim()) out.name = content.name;
    if (row.type === 'm.room.avatar' && typeof content.url === 'string' && content.url) out.avatar = content.url;
  }
  return out;
}
