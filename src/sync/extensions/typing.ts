// typing (MSC3961/MSC4508): the full list of typers per joined room in scope, when the room
// comes into scope and whenever it changes. Never for rooms the user is not joined to. A room
// that leaves scope forgets what it was last sent, so when it comes back it is in scope for the
// first time again and gets the current typers.
import type { RoomSent } from '../connections.js';
import { followsActivity } from '../visibility.js';
import { type ExtensionContext, type ExtensionOutput, roomsInScopeSet, roomsToExamine } from './index.js';

export async function typingExtension(ctx: ExtensionContext): Promise<ExtensionOutput | undefined> {
  const req = ctx.request.typing;
  if (!req) return undefined;
  const rooms: Record<string, unknown> = {};
  const positions = new Map<string, Partial<RoomSent>>();
  for (const roomId of roomsToExamine(ctx, req)) {
    if (!followsActivity(ctx.user.rooms.get(roomId))) continue;
    const typing = ctx.typing.get(roomId);
    const serial = typing ? String(typing.serial) : '';
    const last = ctx.roomsSent.get(roomId)?.ty;
    if (last === serial) continue;
    positions.set(roomId, { ty: serial });
    // First time in scope: only worth sending when someone is typing.
    if (last === undefined ? typing?.userIds.length : serial !== last) {
      rooms[roomId] = { type: 'm.typing', content: { user_ids: typing?.userIds ?? [] } };
    }
  }
  // Out of scope (or no longer joined): clear the last-sent serial once, so only rooms that
  // just left cost a write.
  const scope = roomsInScopeSet(ctx, req);
  const clear = (roomId: string, sent: RoomSent | undefined) => {
    if (sent?.ty !== undefined && !(scope.has(roomId) && followsActivity(ctx.user.rooms.get(roomId))))
      positions.set(roomId, { ty: undefined });
  };
  // Incrementally, only rooms that may have left scope since the confirmed response.
  if (ctx.check) for (const roomId of ctx.check) clear(roomId, ctx.roomsSent.get(roomId));
  else for (const [roomId, sent] of ctx.roomsSent) clear(roomId, sent);
  return { data: { rooms }, wakes: Object.keys(rooms).length > 0, rooms: positions };
}
