// The latest receipt per (room, type, user, thread). Private read receipts (m.read.private)
// are stored like the others; readers must serve them only to their own user.
import type { Queryable } from './db.js';
import { columns, textArray } from './pg-arrays.js';

export interface ReceiptRow {
  roomId: string;
  receiptType: string;
  userId: string;
  threadId: string;
  eventId: string;
  data: string;
  pos: number;
}

export async function upsertReceipts(db: Queryable, rows: ReceiptRow[]): Promise<void> {
  if (rows.length === 0) return;
  await db.query(
    `INSERT INTO receipts (room_id, receipt_type, user_id, thread_id, event_id, data, pos)
     SELECT DISTINCT ON (r, rt, u, th) r, rt, u, th, e, d, p
       FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[])
            WITH ORDINALITY AS x(r, rt, u, th, e, d, p, ord)
      ORDER BY r, rt, u, th, ord DESC
     ON CONFLICT (room_id, receipt_type, user_id, thread_id) DO UPDATE SET event_id = excluded.event_id, data = excluded.data, pos = excluded.pos
       WHERE receipts.event_id IS DISTINCT FROM excluded.event_id OR receipts.data IS DISTINCT FROM excluded.data`,
    columns(rows, { roomId: 'text', receiptType: 'text', userId: 'text', threadId: 'text', eventId: 'text', data: 'text', pos: 'number' }),
  );
}

/** Receipts of a room newer than `since` that `viewer` may see. */
export async function receiptsSince(db: Queryable, roomId: string, viewer: string, since: number): Promise<ReceiptRow[]> {
  return receiptsSinceEach(db, [{ roomId, from: since }], viewer);
}

/** Receipts of each room newer than its own `from` that `viewer` may see, in one query. */
export async function receiptsSinceEach(db: Queryable, rooms: { roomId: string; from: number }[], viewer: string): Promise<ReceiptRow[]> {
  if (rooms.length === 0) return [];
  const { rows } = await db.query<ReceiptRow>(
    `SELECT r.room_id AS "roomId", r.receipt_type AS "receiptType", r.user_id AS "userId", r.thread_id AS "threadId",
            r.event_id AS "eventId", r.data, r.pos
       FROM unnest($1::text[], $2::bigint[]) AS q(room_id, since)
       JOIN receipts r ON r.room_id = q.room_id AND r.pos > q.since
      WHERE r.receipt_type <> 'm.read.private' OR r.user_id = $3
      ORDER BY r.pos`,
    [textArray(rooms.map((r) => r.roomId)), rooms.map((r) => r.from), viewer],
  );
  return rows;
}

/** Receipts in the given rooms on the given events, plus all of the viewer's own (public and private). */
export async function receiptsForEvents(db: Queryable, roomIds: string[], viewer: string, eventIds: string[]): Promise<ReceiptRow[]> {
  if (roomIds.length === 0) return [];
  const { rows } = await db.query<ReceiptRow>(
    `SELECT room_id AS "roomId", receipt_type AS "receiptType", user_id AS "userId", thread_id AS "threadId",
            event_id AS "eventId", data, pos
       FROM receipts WHERE room_id = ANY($1::text[]) AND (event_id = ANY($3::text[]) OR user_id = $2)
        AND (receipt_type <> 'm.read.private' OR user_id = $2)
      ORDER BY pos`,
    [roomIds, viewer, eventIds],
  );
  return rows;
}
