// Heroes: the members a room without a name is shown by. Both protocols take them from here
// (MSC4186 sends them for unnamed rooms, MSC3575 builds its calculated name from them): the
// homeserver's m.heroes when the v2 summary gave some, else members from the stored state, as
// Synapse picks them. One query per kind across all rooms asked for.
import type { UserRoom } from '../cache/user-cache.js';
import type { Pool } from '../store/db.js';
import { currentMembers, fallbackHeroes, type StateRow } from '../store/room-reads.js';

/** The spec asks for at least 5 heroes and the Go proxy names exactly 5 at most. */
export const MAX_HEROES = 5;

/** A member a room is shown by, as its member event says (strings kept as they are, empty ones too). */
export interface Hero {
  userId: string;
  displayname?: string;
  avatarUrl?: string;
  /** join, invite, leave or ban: a room whose heroes all left is "Empty Room (was …)". */
  membership?: string;
}

export function heroFrom(userId: string, content: Record<string, unknown> | undefined): Hero {
  const hero: Hero = { userId };
  if (typeof content?.displayname === 'string') hero.displayname = content.displayname;
  if (typeof content?.avatar_url === 'string') hero.avatarUrl = content.avatar_url;
  if (typeof content?.membership === 'string' && content.membership) hero.membership = content.membership;
  return hero;
}

/** The heroes of `rows`' users, in the order of `ids` (or of the rows, without ids). */
export function heroesFromRows(ids: readonly string[] | undefined, rows: readonly StateRow[]): Hero[] {
  const content = new Map(rows.map((m) => [m.stateKey, (JSON.parse(m.json) as { content?: Record<string, unknown> }).content]));
  return (ids?.length ? ids : rows.map((m) => m.stateKey)).map((u) => heroFrom(u, content.get(u)));
}

/** The homeserver's heroes of a room, without the user themself. */
export function summaryHeroes(room: UserRoom, userId: string): string[] {
  return (room.heroes ?? []).filter((u) => u !== userId).slice(0, MAX_HEROES);
}

/** Current heroes of each of `rooms` (joined rooms: as of now). */
export async function loadHeroes(pool: Pool, userId: string, rooms: readonly UserRoom[]): Promise<Map<string, Hero[]>> {
  const ids = new Map(rooms.map((r) => [r.roomId, summaryHeroes(r, userId)]));
  const rows = new Map<string, StateRow[]>();
  const add = (row: StateRow) => rows.set(row.roomId, [...(rows.get(row.roomId) ?? []), row]);
  const withIds = [...ids].filter(([, heroIds]) => heroIds.length > 0);
  const without = [...ids].filter(([, heroIds]) => heroIds.length === 0).map(([roomId]) => roomId);
  const [named, fallback] = await Promise.all([
    currentMembers(
      pool,
      withIds.flatMap(([roomId, heroIds]) => heroIds.map((u) => ({ roomId, userId: u }))),
    ),
    fallbackHeroes(pool, without, userId, MAX_HEROES),
  ]);
  for (const row of named) add(row);
  for (const row of fallback) add(row);
  return new Map([...ids].map(([roomId, heroIds]) => [roomId, heroesFromRows(heroIds, rows.get(roomId) ?? [])]));
}
