// MSC4186 room metadata, as Synapse sends it: the room's own name and avatar, heroes for every
// unnamed joined room, counts, the DM flag and `bump_stamp`; all of them from scratch,
// otherwise only what changed. Invites and knocks show their room's name and avatar from the
// stripped state.
import type { UserRoom } from '../../cache/user-cache.js';
import { loadHeroes } from '../heroes.js';
import type { RoomInBuild, RoomRules } from '../protocol.js';
import type { BuildContext, RoomPlan } from '../room-builder.js';
import { nameAndAvatarAsOf } from '../state-as-of.js';
import type { RoomResult } from '../types.js';
import { viewEnd } from '../visibility.js';
import { strippedNameAndAvatar } from './stripped-state.js';

function invite(_ctx: BuildContext, _plan: RoomPlan, room: UserRoom, result: RoomResult): void {
  result.bumpPos = room.membershipPos;
  // As Synapse: the invite shows with its room's name and avatar (no heroes: Synapse has no
  // member summary for a room the user is not in).
  const { name, avatar } = strippedNameAndAvatar(room.inviteState);
  if (name !== undefined) result.name = name;
  if (avatar !== undefined) result.avatar = avatar;
}

async function metadata(ctx: BuildContext, { plan, room, meta, result, sent, fromScratch }: RoomInBuild): Promise<void> {
  const changed = <T>(now: T | undefined, before: T | undefined) => (fromScratch ? now !== undefined : now !== undefined && now !== before);
  const joined = room.membership === 'join';
  const { name, avatar } = joined
    ? { name: meta?.name, avatar: meta?.avatar }
    : await nameAndAvatarAsOf(ctx.pool, plan.roomId, viewEnd(room, ctx.upTo));
  if (changed(name, plan.sent?.name)) result.name = name;
  if (changed(avatar, plan.sent?.avatar)) result.avatar = avatar;
  sent.name = name;
  sent.avatar = avatar;
  if (joined) {
    if (changed(meta?.joinedCount, plan.sent?.jc)) result.joined_count = meta?.joinedCount;
    if (changed(meta?.invitedCount, plan.sent?.ic)) result.invited_count = meta?.invitedCount;
    sent.jc = meta?.joinedCount;
    sent.ic = meta?.invitedCount;
    if (!meta?.name && (fromScratch || result.joined_count !== undefined || result.invited_count !== undefined)) {
      const heroes = (await loadHeroes(ctx.pool, ctx.userId, [room])).get(plan.roomId) ?? [];
      if (heroes.length) result.heroes = heroes;
    }
  }
  // Real counts from the homeserver's v2 unread_notifications (Synapse's own endpoint sends 0),
  // sent from scratch and whenever they change (a read elsewhere clears them with no new event).
  if (fromScratch || room.notificationCount !== plan.sent?.nc || room.highlightCount !== plan.sent?.hc) {
    result.notification_count = room.notificationCount;
    result.highlight_count = room.highlightCount;
  }
  const dm = ctx.user.dmRooms.has(plan.roomId);
  if (dm) result.is_dm = true;
  sent.dm = dm;
  result.bumpPos = joined ? meta?.bumpNid || meta?.latestNid || room.membershipPos : room.membershipPos;
}

export const msc4186Rooms: RoomRules = { invite, metadata };
