// receipts (MSC3960): for a room sent from scratch, the receipts on its returned timeline plus
// the user's own; otherwise the changes since the room's receipts were last sent. Private read
// receipts are only ever the user's own. Thread ids are kept.
import { type ReceiptRow, receiptsForEvents, receiptsSince } from '../../store/receipts-table.js';
import type { RoomSent } from '../connections.js';
import { type ExtensionContext, type ExtensionOutput, roomsInScope } from './index.js';

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
  for (const roomId of roomsInScope(ctx, req)) {
    positions.set(roomId, { rc: ctx.upTo });
    const room = ctx.sentRooms[roomId];
    const from = ctx.roomsSent.get(roomId)?.rc;
    let rows: ReceiptRow[];
    if (from === undefined || room?.initial || room?.unstable_expanded_timeline) {
      const eventIds = (room?.timeline ?? []).map((e) => (JSON.parse(e.text) as { event_id: string }).event_id);
      rows = await receiptsForEvents(ctx.pool, roomId, ctx.device.userId, eventIds);
    } else {
      // Only rooms whose receipts moved since we last sent them cost a query.
      if ((ctx.metas.get(roomId)?.receiptPos ?? 0) <= from) continue;
      rows = await receiptsSince(ctx.pool, roomId, ctx.device.userId, from);
    }
    if (rows.length) rooms[roomId] = receiptEvent(rows);
  }
  return { data: { rooms }, wakes: Object.keys(rooms).length > 0, rooms: positions };
}
