// Events, stored once however many pollers see them (deduplicated by event id), as JSON text.
import type { Queryable } from './db.js';
import { boolArray, jsonTextsArray, numberArray, textArray } from './pg-arrays.js';

export interface KnownEvent {
  nid: number;
  inTimeline: boolean;
  /** Whether it is marked as following a gap (undefined: not known). */
  gapBefore?: boolean;
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
  const { rows } = await db.query<{ event_id: string; nid: number; in_timeline: boolean; gap_before: boolean }>(
    'SELECT event_id, nid, in_timeline, gap_before FROM events WHERE event_id = ANY($1::text[])',
    [textArray(eventIds)],
  );
  for (const r of rows) known.set(r.event_id, { nid: r.nid, inTimeline: r.in_timeline, gapBefore: r.gap_before });
  return known;
}

/**
 * Inserts with the positions `at`, `at + 1`, ... in the given order, or with each event's own
 * position when `at` lists them (reserved with `reservePositions`, under the ingest lock), so
 * positions follow the homeserver's order.
 * The caller has already left out known events (`findEvents` under the same lock), so a
 * duplicate event id here is a bug and fails the transaction rather than shifting positions.
 * Returns event id -> nid.
 */
export async function insertEvents(db: Queryable, events: NewEvent[], at: number | readonly number[]): Promise<Map<string, number>> {
  const nids = new Map<string, number>();
  if (events.length === 0) return nids;
  const n = events.length;
  const eventIds = new Array<string>(n);
  const roomIds = new Array<string>(n);
  const types = new Array<string>(n);
  const stateKeys = new Array<string | null>(n);
  const senders = new Array<string>(n);
  const ts = new Array<number>(n);
  const inTimeline = new Array<boolean>(n);
  const prevBatch = new Array<string | null>(n);
  const gap = new Array<boolean>(n);
  const json = new Array<string>(n);
  const chunkEnd = new Array<string | null>(n);
  const nidOf = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    const e = events[i] as NewEvent;
    nidOf[i] = typeof at === 'number' ? at + i : (at[i] as number);
    eventIds[i] = e.eventId;
    roomIds[i] = e.roomId;
    types[i] = e.type;
    stateKeys[i] = e.stateKey ?? null;
    senders[i] = e.sender;
    ts[i] = e.originServerTs;
    inTimeline[i] = e.inTimeline;
    prevBatch[i] = e.prevBatch ?? null;
    gap[i] = e.gapBefore;
    json[i] = e.json;
    chunkEnd[i] = e.chunkEndToken ?? null;
    nids.set(e.eventId, nidOf[i] as number);
  }
  await db.query(
    `INSERT INTO events (nid, event_id, room_id, type, state_key, sender, origin_server_ts, in_timeline, prev_batch, gap_before, json, chunk_end_token)
     SELECT nid, e, r, t, sk, s, ts, tl, pb, gap, j::text, ce
       FROM ROWS FROM (unnest($1::bigint[]), unnest($2::text[]), unnest($3::text[]), unnest($4::text[]), unnest($5::text[]),
                       unnest($6::text[]), unnest($7::bigint[]), unnest($8::boolean[]), unnest($9::text[]), unnest($10::boolean[]),
                       json_array_elements($11::json), unnest($12::text[]))
            AS u(nid, e, r, t, sk, s, ts, tl, pb, gap, j, ce)`,
    [
      numberArray(nidOf),
      textArray(eventIds),
      textArray(roomIds),
      textArray(types),
      textArray(stateKeys),
      textArray(senders),
      numberArray(ts),
      boolArray(inTimeline),
      textArray(prevBatch),
      boolArray(gap),
      jsonTextsArray(json),
      textArray(chunkEnd),
    ],
  );
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

export interface RedactionTarget {
  nid: number;
  eventId: string;
  roomId: string;
  json: string;
  redacted: boolean;
}

/** The stored events that redactions name, by event id (those never seen are absent). */
export async function eventsForRedaction(db: Queryable, eventIds: string[]): Promise<Map<string, RedactionTarget>> {
  const out = new Map<string, RedactionTarget>();
  if (eventIds.length === 0) return out;
  const { rows } = await db.query<RedactionTarget>(
    'SELECT nid, event_id AS "eventId", room_id AS "roomId", json, redacted FROM events WHERE event_id = ANY($1::text[])',
    [textArray(eventIds)],
  );
  for (const r of rows) out.set(r.eventId, r);
  return out;
}

/** Replaces stored events by their redacted form, all in one statement. */
export async function storeRedacted(db: Queryable, redacted: { nid: number; json: string }[]): Promise<void> {
  if (redacted.length === 0) return;
  await db.query(
    `UPDATE events SET json = u.j::text, redacted = true
       FROM ROWS FROM (unnest($1::bigint[]), json_array_elements($2::json)) AS u(nid, j) WHERE events.nid = u.nid`,
    [redacted.map((r) => r.nid), jsonTextsArray(redacted.map((r) => r.json))],
  );
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
  await db.query('UPDATE events SET gap_before = false WHERE event_id = ANY($1::text[]) AND gap_before', [textArray(eventIds)]);
}

/**
 * Marks the holes a late poller proved: per room, the first timeline event after `afterNid`
 * has events missing before it (they were stored out of the timeline).
 */
export async function markGapsAfter(db: Queryable, holes: { roomId: string; afterNid: number }[]): Promise<void> {
  if (holes.length === 0) return;
  await db.query(
    `UPDATE events SET gap_before = true WHERE nid IN (
       SELECT (SELECT nid FROM events e WHERE e.room_id = h.room_id AND e.in_timeline AND e.nid > h.after ORDER BY nid LIMIT 1)
         FROM unnest($1::text[], $2::bigint[]) AS h(room_id, after)) AND NOT gap_before`,
    [textArray(holes.map((h) => h.roomId)), holes.map((h) => h.afterNid)],
  );
}

/**
 * Clears gap markers that a poller disproves across responses: it saw the stored event just
 * before the marked one last (its anchor), and now shows the marked one next, so nothing is
 * missing between them.
 */
export async function healGapsAfterAnchors(db: Queryable, proofs: { eventId: string; anchor: number }[]): Promise<void> {
  if (proofs.length === 0) return;
  await db.query(
    `UPDATE events e SET gap_before = false FROM unnest($1::text[], $2::bigint[]) AS p(event_id, anchor)
      WHERE e.event_id = p.event_id AND e.gap_before
        AND p.anchor = (SELECT max(b.nid) FROM events b WHERE b.room_id = e.room_id AND b.in_timeline AND b.nid < e.nid)`,
    [textArray(proofs.map((p) => p.eventId)), proofs.map((p) => p.anchor)],
  );
}

/**
 * Records an exact pagination token from just before a stored timeline event (asked of the
 * homeserver when no v2 chunk started at it), unless the event has one already.
 */
export async function setPrevBatch(db: Queryable, nid: number, token: string): Promise<void> {
  await db.query('UPDATE events SET prev_batch = $2 WHERE nid = $1 AND prev_batch IS NULL', [nid, token]);
}
