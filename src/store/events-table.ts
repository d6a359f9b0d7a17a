// Events, stored once however many pollers see them (deduplicated by event id), as JSON text.
import type { Queryable } from './db.js';

export interface KnownEvent {
  nid: number;
  inTimeline: boolean;
}

export interface NewEvent {
  eventId: string;
  roomId: string;
  type: string;
  stateKey: string | undefined;
  sender: string;
  originServerTs: number;
  inTimeline: boolean;
  prevBatch: string | undefined;
  /** Set on chunk starts: the v2 next_batch that ended the chunk. */
  chunkEndToken: string | undefined;
  gapBefore: boolean;
  json: string;
}

export async function findEvents(db: Queryable, eventIds: string[]): Promise<Map<string, KnownEvent>> {
  const known = new Map<string, KnownEvent>();
  if (eventIds.length === 0) return known;
  const { rows } = await db.query<{ event_id: string; nid: number; in_timeline: boolean }>(
    'SELECT event_id, nid, in_timeline FROM events WHERE event_id = ANY($1::text[])',
    [eventIds],
  );
  for (const r of rows) known.set(r.event_id, { nid: r.nid, inTimeline: r.in_timeline });
  return known;
}

/** Inserts in the given order, so positions follow the homeserver's order. Returns event id -> nid. */
export async function insertEvents(db: Queryable, events: NewEvent[]): Promise<Map<string, number>> {
  const nids = new Map<string, number>();
  if (events.length === 0) return nids;
  const { rows } = await db.query<{ event_id: string; nid: number }>(
    `INSERT INTO events (event_id, room_id, type, state_key, sender, origin_server_ts, in_timeline, prev_batch, gap_before, json, chunk_end_token)
     SELECT e, r, t, sk, s, ts, tl, pb, gap, j, ce
       FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::boolean[], $8::text[], $9::boolean[], $10::text[], $11::text[])
            WITH ORDINALITY AS u(e, r, t, sk, s, ts, tl, pb, gap, j, ce, ord)
      ORDER BY ord
     ON CONFLICT (event_id) DO NOTHING
     RETURNING event_id, nid`,
    [
      events.map((e) => e.eventId),
      events.map((e) => e.roomId),
      events.map((e) => e.type),
      events.map((e) => e.stateKey ?? null),
      events.map((e) => e.sender),
      events.map((e) => e.originServerTs),
      events.map((e) => e.inTimeline),
      events.map((e) => e.prevBatch ?? null),
      events.map((e) => e.gapBefore),
      events.map((e) => e.json),
      events.map((e) => e.chunkEndToken ?? null),
    ],
  );
  for (const r of rows) nids.set(r.event_id, r.nid);
  return nids;
}

/** Events first stored from a state block that later showed up in a timeline. */
export async function markInTimeline(db: Queryable, nids: number[], prevBatch: Map<number, string>): Promise<void> {
  if (nids.length === 0) return;
  await db.query(
    `UPDATE events SET in_timeline = true, prev_batch = COALESCE(prev_batch, u.pb)
       FROM unnest($1::bigint[], $2::text[]) AS u(nid, pb) WHERE events.nid = u.nid`,
    [nids, nids.map((n) => prevBatch.get(n) ?? null)],
  );
}

export async function eventForRedaction(
  db: Queryable,
  eventId: string,
): Promise<{ nid: number; roomId: string; json: string; redacted: boolean } | undefined> {
  const { rows } = await db.query('SELECT nid, room_id AS "roomId", json, redacted FROM events WHERE event_id = $1', [eventId]);
  return rows[0];
}

export async function storeRedacted(db: Queryable, nid: number, json: string): Promise<void> {
  await db.query('UPDATE events SET json = $2, redacted = true WHERE nid = $1', [nid, json]);
}

export async function insertTransactionIds(db: Queryable, rows: { eventId: string; userId: string; deviceId: string; txnId: string }[]) {
  if (rows.length === 0) return;
  await db.query(
    `INSERT INTO transaction_ids (event_id, user_id, device_id, txn_id)
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) ON CONFLICT DO NOTHING`,
    [rows.map((r) => r.eventId), rows.map((r) => r.userId), rows.map((r) => r.deviceId), rows.map((r) => r.txnId)],
  );
}

/**
 * Clears gap markers that another poller's timeline disproves: an event that a chunk shows
 * right after its predecessor has nothing missing before it.
 */
export async function healGaps(db: Queryable, eventIds: string[]): Promise<void> {
  if (eventIds.length === 0) return;
  await db.query('UPDATE events SET gap_before = false WHERE event_id = ANY($1::text[]) AND gap_before', [eventIds]);
}
