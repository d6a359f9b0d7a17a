// MSC3575 `sort`: the comparators turned into one sort key per room, and an order per sort kept
// in the protocol's memory of the user. The first request with a sort sorts once; afterwards only rooms whose key
// changed move (see SortedRooms).
import type { RoomMetaCache } from '../../cache/room-meta-cache.js';
import { SortedRooms, type SortKey } from '../../cache/sorted-rooms.js';
import type { UserCache } from '../../cache/user-cache.js';
import type { SortBy } from '../types.js';
import type { Bump } from './bump-cache.js';
import { nameSortKey } from './room-name.js';
import type { UserMemory } from './user-memory.js';

export interface SortContext {
  user: UserCache;
  memory: UserMemory;
  metas: RoomMetaCache;
  /** Latest event of the list's bump_event_types, when it has any. */
  bump: ((roomId: string) => Bump | undefined) | undefined;
}

/** Highlights first, then notified encrypted rooms, then notified unencrypted ones, then the rest. */
function notificationLevel(ctx: SortContext, roomId: string): number {
  const room = ctx.user.rooms.get(roomId);
  if (!room) return 3;
  // An invite counts as a highlight (as the Go proxy sends it).
  if (room.highlightCount > 0 || room.membership === 'invite') return 0;
  if (room.notificationCount > 0) return ctx.metas.get(roomId)?.encrypted ? 1 : 2;
  return 3;
}

/** Recency as a position; with bump types, their latest event, never before the user's membership. */
function recency(ctx: SortContext, roomId: string): number {
  const room = ctx.user.rooms.get(roomId);
  if (!ctx.bump || !room || room.membership !== 'join') return ctx.user.sortKey(roomId);
  return Math.max(ctx.bump(roomId)?.nid ?? 0, room.membershipPos);
}

function component(ctx: SortContext, by: SortBy, roomId: string): number | string {
  switch (by) {
    case 'by_recency':
      return -recency(ctx, roomId);
    case 'by_name':
      return nameSortKey(ctx.memory.names.get(roomId)?.name ?? '');
    case 'by_notification_level':
      return notificationLevel(ctx, roomId);
    case 'by_notification_count':
      return -(ctx.user.rooms.get(roomId)?.notificationCount ?? 0);
    case 'by_highlight_count':
      return -(ctx.user.rooms.get(roomId)?.highlightCount ?? 0);
  }
}

export function sortKeyOf(sort: readonly SortBy[], bumpEventTypes: readonly string[]): string {
  return JSON.stringify([sort, [...bumpEventTypes].sort()]);
}

/** `candidates` (in any order) ordered by `sort`, with keys read from `ctx` now. */
export function sortedRooms(sort: readonly SortBy[], bumpEventTypes: readonly string[], candidates: readonly string[], ctx: SortContext) {
  const spec = sortKeyOf(sort, bumpEventTypes);
  const order = ctx.memory.orders.get(spec) ?? new SortedRooms();
  ctx.memory.orders.set(spec, order);
  order.refresh(candidates, (id): SortKey => sort.map((by) => component(ctx, by, id)));
  return order.order;
}
