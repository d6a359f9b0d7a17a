// receipts (MSC3960): for a room sent from scratch, the receipts on its returned timeline plus
// the user's own; otherwise the changes since the room's receipts were last sent. Private read
// receipts are only ever the user's own. Thread ids are kept.
import { type ReceiptRow, receiptsForEvents, receiptsSinceEach } from '../../store/receipts-table.js';
import type { RoomSent } from '../connections.js';
import { followsActivity, viewEnd } from '../visibility.js';
import { type ExtensionContext, type ExtensionOutput, roomsToExamine } from './index.js';

function receiptEvent(rows: ReceiptRow[]) {
  const content: Record<string, Record<string, Record<string, unknown>>> = {};
  for (const r of rows) {
    const byType = content[r.eventId] ?? {};
    const byUser = byType[r.receiptType] ?? {};
    byUser[r.userId] = JSON.parse(r.data);
    byType[r.receiptType] = byUser;
    content[r.eventId] = byType;
  }
  return { type: 'm.receipt', content };
}

export async function receiptsExtension(ctx: ExtensionContext): Promise<ExtensionOutput | undefined> {
  const req = ctx.request.receipts;
  if (!req) return undefined;
  const rooms: Record<string, unknown> = {};
  const positions = new Map<string, Partial<RoomSent>>();
  const scratch: string[] = [];
  const timelineEvents: string[] = [];
  const deltas: { roomId: string; from: number }[] = [];
  // A Map: looking room ids up in the response object would intern every id of a big window.
  const sentNow = new Map(Object.entries(await ctx.sentRooms));
  for (const roomId of roomsToExamine(ctx, req)) {
    const room = sentNow.size ? sentNow.get(roomId) : undefined;
    const from = ctx.roomsSent.get(roomId)?.rc;
    if (from === undefined || room?.initial || room?.unstable_expanded_timeline) {
      // A room with no receipt at all (its metadata says so) has none to send: no query.
      if (ctx.metas.get(roomId)?.receiptPos !== 0) {
        scratch.push(roomId);
        for (const e of room?.timeline ?? []) timelineEvents.push((JSON.parse(e.text) as { event_id: string }).event_id);
      }
    } else if ((ctx.metas.get(roomId)?.receiptPos ?? 0) > from && followsActivity(ctx.user.rooms.get(roomId))) {
      // Only rooms whose receipts moved since we last sent them cost a query; a room the user
      // is no longer in gets none of its members' later receipts.
      deltas.push({ roomId, from });
    } else {
      continue;
    }
    // Positions move only for rooms looked at, so a quiet window costs no writes.
    positions.set(roomId, { rc: ctx.upTo });
  }
  const byRoom = new Map<string, ReceiptRow[]>();
  const collect = (rows: ReceiptRow[]) => {
    for (const r of rows) byRoom.set(r.roomId, [...(byRoom.get(r.roomId) ?? []), r]);
  };
  // A room the user is out of gets only receipts from before they left, as its timeline.
  const visible = (r: ReceiptRow) => {
    const room = ctx.user.rooms.get(r.roomId);
    return followsActivity(room) || (room !== undefined && r.pos <= viewEnd(room, ctx.upTo));
  };
  collect((await receiptsForEvents(ctx.pool, scratch, ctx.device.userId, timelineEvents)).filter(visible));
  collect(await receiptsSinceEach(ctx.pool, deltas, ctx.device.userId));
  for (const [roomId, rows] of byRoom) rooms[roomId] = receiptEvent(rows);
  return { data: { rooms }, wakes: Object.keys(rooms).length > 0, rooms: positions };
}
