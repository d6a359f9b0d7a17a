// account_data (MSC3959): global account data (all of it on a connection's first response,
// the changed types afterwards) and room account data for rooms in scope: all of it for a room
// never sent on this connection, otherwise changes since the room was last sent, so a room
// that changed while out of scope gets them when it comes back.
import { accountDataSince, roomAccountData } from '../../store/account-data-table.js';
import type { RoomSent } from '../connections.js';
import { RawJson } from '../json.js';
import { type ExtensionContext, type ExtensionOutput, roomsToExamine } from './index.js';

export async function accountDataExtension(ctx: ExtensionContext): Promise<ExtensionOutput | undefined> {
  const req = ctx.request.accountData;
  if (!req) return undefined;
  const globalSince = ctx.positions.accountData ?? 0;
  const scope = roomsToExamine(ctx, req);
  // A room never sent is due only if it has room account data at all (the user cache knows).
  const due = scope.filter((id) => (ctx.user.rooms.get(id)?.accountDataPos ?? 0) > (ctx.roomsSent.get(id)?.ad ?? 0));
  // Global account data known unchanged since it was last delivered costs no query.
  const globalUnchanged = globalSince > 0 && ctx.accountData?.unchangedSince(ctx.device.userId, globalSince) === true;
  // Independent reads: one round trip, not two.
  const [globalRows, rows] = await Promise.all([
    globalUnchanged ? [] : accountDataSince(ctx.pool, ctx.device.userId, globalSince),
    roomAccountData(ctx.pool, ctx.device.userId, due),
  ]);
  const global = globalRows.filter((r) => r.roomId === '');
  const rooms: Record<string, RawJson[]> = {};
  for (const row of rows) {
    const from = ctx.roomsSent.get(row.roomId)?.ad ?? 0;
    if (row.pos <= from) continue;
    rooms[row.roomId] = [...(rooms[row.roomId] ?? []), new RawJson(row.json)];
  }
  // Only rooms we looked at move on; the others keep their position, so writes scale with changes.
  const roomPositions = new Map<string, Partial<RoomSent>>(due.map((id) => [id, { ad: ctx.upTo }]));
  return {
    data: { global: global.map((r) => new RawJson(r.json)), rooms },
    wakes: global.length > 0 || Object.keys(rooms).length > 0,
    positions: { accountData: ctx.upTo },
    rooms: roomPositions,
  };
}
