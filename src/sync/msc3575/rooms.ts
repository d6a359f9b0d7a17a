// MSC3575's room metadata, as the Go proxy sends it: the calculated name, the avatar (a DM's
// other member's when the room has none; null once removed), heroes only on request, counts
// always, and `timestamp`. Invites count as a highlight, so by_notification_level puts them on top.
import { latestEventsOfTypes } from '../../store/room-reads.js';
import type { RoomInBuild, RoomRules } from '../protocol.js';
import type { BuildContext } from '../room-builder.js';
import { nameAndAvatarAsOf } from '../state-as-of.js';
import { viewEnd } from '../visibility.js';
import type { NameMemory } from './user-memory.js';

/** `names`: made current for the rooms being sent (names.ts); `timestamps`: joined rooms' latest bump event. */
export function msc3575Rooms(names: NameMemory, timestamps: ReadonlyMap<string, number>): RoomRules {
  return {
    invite(_ctx, plan, _room, result) {
      result.highlight_count = 1;
      result.bumpTs = timestamps.get(plan.roomId);
      result.name = names.get(plan.roomId)?.name;
    },
    metadata: (ctx, room) => metadata(ctx, room, names, timestamps),
  };
}

async function metadata(
  ctx: BuildContext,
  { plan, room, meta, result, sent, fromScratch }: RoomInBuild,
  names: NameMemory,
  timestamps: ReadonlyMap<string, number>,
): Promise<void> {
  const named = names.get(plan.roomId);
  const dm = ctx.user.dmRooms.has(plan.roomId);
  const heroes = named?.heroes ?? [];
  const name = named?.name;
  if (name !== undefined && (fromScratch || name !== plan.sent?.name)) result.name = name;
  sent.name = name;
  // A room the user left or was banned from: its avatar then, as its name (see names.ts).
  const roomAvatar =
    room.membership === 'join' ? meta?.avatar : (await nameAndAvatarAsOf(ctx.pool, plan.roomId, viewEnd(room, ctx.upTo))).avatar;
  const avatar = roomAvatar ?? (dm && heroes.length === 1 ? heroes[0]?.avatarUrl || undefined : undefined);
  if (fromScratch ? avatar !== undefined : avatar !== plan.sent?.avatar) result.avatar = avatar ?? null;
  sent.avatar = avatar;
  const calculated = room.membership === 'join' ? !meta?.name && !meta?.canonicalAlias : heroes.length > 0;
  if (plan.includeHeroes && calculated && heroes.length && (fromScratch || result.name !== undefined)) result.heroes = heroes;
  if (room.membership === 'join') {
    if (meta?.joinedCount && (fromScratch || meta.joinedCount !== plan.sent?.jc)) result.joined_count = meta.joinedCount;
    if (meta?.invitedCount !== undefined && (fromScratch || meta.invitedCount !== plan.sent?.ic)) result.invited_count = meta.invitedCount;
    sent.jc = meta?.joinedCount;
    sent.ic = meta?.invitedCount;
  }
  result.notification_count = room.notificationCount;
  result.highlight_count = room.highlightCount;
  if (dm) result.is_dm = true;
  sent.dm = dm;
  // The bump timestamps are the room's now; a room the user is out of stops at the leave.
  result.bumpTs =
    room.membership === 'join'
      ? timestamps.get(plan.roomId)
      : (await latestEventsOfTypes(ctx.pool, [plan.roomId], [], viewEnd(room, ctx.upTo)))[0]?.ts;
}
