// MSC3575 calculated room names (and the heroes they are made of) for a user's rooms, kept in
// the protocol's memory of the user and recomputed only for rooms whose inputs changed: by_name
// sorts every candidate room by it, so it must be cheap after the first time. Heroes come from
// heroes.ts, loaded for all rooms that need them at once.
import type { RoomMetaCache } from '../../cache/room-meta-cache.js';
import type { UserCache, UserRoom } from '../../cache/user-cache.js';
import type { Pool } from '../../store/db.js';
import { memberEvents, memberSummaryAsOf, stateAsOf } from '../../store/room-reads.js';
import { type Hero, heroesFromRows, heroFrom, loadHeroes, MAX_HEROES, summaryHeroes } from '../heroes.js';
import { viewEnd } from '../visibility.js';
import { calculateRoomName } from './room-name.js';
import type { NameMemory } from './user-memory.js';

interface Stripped {
  type?: string;
  state_key?: string;
  sender?: string;
  content?: Record<string, unknown>;
}

const str = (v: unknown) => (typeof v === 'string' && v ? v : undefined);

/**
 * What a name depends on: when this is unchanged, the remembered name still holds. A room the
 * user left is named as of the leave, so what happened in it since changes nothing.
 */
function stampOf(room: UserRoom, metas: RoomMetaCache): string {
  if (room.membership === 'leave' || room.membership === 'ban') return `${room.membership}|${room.membershipPos}|${room.heroes?.join(',')}`;
  const meta = metas.get(room.roomId);
  return `${room.membership}|${room.membershipPos}|${meta?.statePos ?? 0}|${meta?.joinedCount}|${meta?.invitedCount}|${room.heroes?.join(',')}`;
}

/** An invite's name comes from its stripped state; the inviter is its only hero. */
function inviteName(userId: string, room: UserRoom): { name: string; heroes: Hero[] } {
  const parsed = JSON.parse(room.inviteState ?? '[]') as Stripped[] | { events?: Stripped[] };
  const events = Array.isArray(parsed) ? parsed : (parsed.events ?? []);
  const content = (type: string, key?: string) =>
    events.find((e) => e.type === type && (key === undefined || e.state_key === key))?.content;
  const inviter = events.find((e) => e.type === 'm.room.member' && e.state_key === userId)?.sender;
  const heroes = inviter && inviter !== userId ? [heroFrom(inviter, content('m.room.member', inviter))] : [];
  const name = calculateRoomName({
    name: str(content('m.room.name', '')?.name),
    canonicalAlias: str(content('m.room.canonical_alias', '')?.alias),
    heroes: heroes.map((h) => ({ ...h, membership: 'join' })),
    joinedCount: heroes.length,
    invitedCount: 1,
  });
  return { name, heroes };
}

const NAME_STATE = { all: false, types: [], keys: [], pairTypes: ['m.room.name', 'm.room.canonical_alias'], pairKeys: ['', ''] };

/**
 * A left or banned room's name as it was at the leave (the CVE-2024-53867 class: no state the
 * user could not see leaks through the name): its name, alias or heroes and counts then.
 */
async function nameAsOfLeave(ctx: NameContext, room: UserRoom): Promise<{ name: string; heroes: Hero[] }> {
  const pos = viewEnd(room, Number.MAX_SAFE_INTEGER);
  let named: string | undefined;
  let alias: string | undefined;
  for (const row of await stateAsOf(ctx.pool, room.roomId, pos, NAME_STATE)) {
    const content = (JSON.parse(row.json) as { content?: Record<string, unknown> }).content;
    if (row.type === 'm.room.name') named = str(content?.name)?.trim() ? str(content?.name) : undefined;
    else alias = str(content?.alias);
  }
  if (named || alias) return { name: (named ?? alias) as string, heroes: [] };
  const heroIds = summaryHeroes(room, ctx.user.userId);
  const summary = await memberSummaryAsOf(ctx.pool, room.roomId, pos, ctx.user.userId, MAX_HEROES);
  const members = heroIds.length ? await memberEvents(ctx.pool, room.roomId, heroIds, pos) : summary.heroes;
  const heroes = heroesFromRows(heroIds, members);
  return { name: calculateRoomName({ heroes, joinedCount: summary.joined, invitedCount: summary.invited }), heroes };
}

export interface NameContext {
  pool: Pool;
  user: UserCache;
  metas: RoomMetaCache;
  /** The user's names, as this protocol remembers them. */
  names: NameMemory;
}

/** Makes `ctx.names` current for `roomIds` (metadata must be loaded). */
export async function ensureNames(ctx: NameContext, roomIds: Iterable<string>): Promise<void> {
  const { user, metas, names } = ctx;
  const todo: { room: UserRoom; stamp: string }[] = [];
  for (const id of roomIds) {
    const room = user.rooms.get(id);
    if (!room) continue;
    const stamp = stampOf(room, metas);
    if (names.get(id)?.stamp === stamp) continue;
    if (room.membership === 'invite' || room.membership === 'knock') {
      names.set(id, { stamp, ...inviteName(user.userId, room) });
      continue;
    }
    if (room.membership === 'leave' || room.membership === 'ban') {
      names.set(id, { stamp, ...(await nameAsOfLeave(ctx, room)) });
      continue;
    }
    const meta = metas.get(id);
    if (meta?.name || meta?.canonicalAlias) {
      names.set(id, { stamp, name: meta.name ?? (meta.canonicalAlias as string), heroes: [] });
      continue;
    }
    todo.push({ room, stamp });
  }
  if (todo.length === 0) return;
  const loaded = await loadHeroes(
    ctx.pool,
    user.userId,
    todo.map((t) => t.room),
  );
  for (const t of todo) {
    const heroes = loaded.get(t.room.roomId) ?? [];
    const meta = metas.get(t.room.roomId);
    const name = calculateRoomName({ heroes, joinedCount: meta?.joinedCount ?? 0, invitedCount: meta?.invitedCount ?? 0 });
    names.set(t.room.roomId, { stamp: t.stamp, name, heroes });
  }
}
